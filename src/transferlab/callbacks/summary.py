"""RunSummary: the Lightning side of the run record. While the network trains it notes what the record
(`transferlab.record.RunRecord`, summary.json) reports: the epoch of the best val/acc, every validation's
accuracy on the run's clock, training throughput, and what answering the commonest val class scores. The
training task writes the record from it; this callback writes nothing."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from transferlab.provenance import provenance
from transferlab.record import RunRecord


class RunSummary(L.Callback):
    """Note the epoch of the best val/acc, the validation history and the throughput (see the module docstring).

    The best accuracy itself is the module's: it tracks it (a MaxMetric that survives resume) and logs it as
    `val/acc_best`; this callback only reads it and notes the epoch at which it was reached.

    A run whose training loss turns NaN/inf has diverged: it stops at once with an error naming the step, so a
    sweep records the job as failed instead of training on NaN (`+callbacks.summary.stop_on_nonfinite_loss=false`
    lets it run on)."""

    def __init__(self, stop_on_nonfinite_loss: bool = True) -> None:
        self.stop_on_nonfinite_loss = stop_on_nonfinite_loss
        # the epoch whose val/acc first reached the logged val/acc_best; -1: none, or lpft's fitted head
        self.best_epoch = -1
        # The val/acc_best the module had logged when best_epoch was noted: tells an improvement from a tie,
        # including right after a resume (restored with best_epoch), and stands in for val/acc_best when a
        # resumed run validates no more.
        self._noted_best = -math.inf
        self.start = time.perf_counter()  # the run's clock: includes data preparation and feature caching
        self.train_images = 0
        self.train_phase_s = 0.0  # time in training batches, data loading included, validation excluded
        self._tick = 0.0
        # Every validation: epoch, val/acc and the run's clock (continued across a resume): when a run got there
        self.history: list[dict[str, float]] = []
        # The val labels of the latest validation, counted per class: what always answering the most common
        # class scores there (chance_acc) is the floor a run must clear to have learned anything.
        self._val_counts: torch.Tensor | None = None
        self.chance_acc: float | None = None
        self._clock_offset = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_phase_s += now - self._tick  # since the previous batch ended: loading + step
        self._tick = now
        self.train_images += len(batch[-1])
        if self.stop_on_nonfinite_loss:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor):
                diverged = not bool(torch.isfinite(loss.detach()).all())
                if trainer.world_size > 1:  # every rank must stop together, or the others wait forever
                    diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
                if diverged:
                    raise FloatingPointError(
                        f"train/loss is {float(loss.detach().float().mean())} at epoch {trainer.current_epoch}, "
                        f"step {trainer.global_step}: training diverged. Lower optimizer.lr, or set "
                        "+callbacks.summary.stop_on_nonfinite_loss=false to let it run on."
                    )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_counts = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        labels = batch[-1] if isinstance(batch, list | tuple) else None
        if trainer.sanity_checking or not _class_labels(labels):
            return
        counts = torch.bincount(labels.detach().cpu(), minlength=len(pl_module.class_names))
        self._val_counts = counts if self._val_counts is None else self._val_counts + counts

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not *_epoch_end: callback epoch-end hooks run before the module logs val/acc.
        if trainer.sanity_checking:
            return
        if self._val_counts is not None and self._val_counts.sum() > 0:  # this rank's share, under DDP
            self.chance_acc = float(self._val_counts.max() / self._val_counts.sum())
        if trainer.state.fn != TrainerFn.FITTING:  # the fitted head validated alone: noted as a baseline
            return
        acc, best = _logged(trainer, "val/acc"), _logged(trainer, "val/acc_best")
        if acc is not None:
            elapsed = self._clock_offset + time.perf_counter() - self.start
            self.history.append({"epoch": trainer.current_epoch, "val_acc": acc, "elapsed_s": round(elapsed, 2)})
        if acc is not None and best is not None and acc == best and best > self._noted_best:
            self._noted_best, self.best_epoch = best, trainer.current_epoch

    def note_baseline(self, acc: float) -> None:
        """A score the run starts from (the fitted head, `fit_head` phase): epoch -1 in the history, and the best
        until an epoch beats it."""
        elapsed = self._clock_offset + time.perf_counter() - self.start
        self.history.append({"epoch": -1, "val_acc": acc, "elapsed_s": round(elapsed, 2)})
        self._noted_best, self.best_epoch = acc, -1

    def best_acc(self, trainer: L.Trainer) -> float | None:
        """The module's val/acc_best as last logged (None before any validation)."""
        best = _logged(trainer, "val/acc_best")
        if best is None and self._noted_best > -math.inf:
            best = self._noted_best  # resumed after the last validation: nothing logged in this process
        return best

    def state_dict(self) -> dict[str, Any]:
        # the noted value keeps the key older checkpoints hold it under
        return {"best_epoch": self.best_epoch, "best_acc": self._noted_best, "history": self.history,
                "chance_acc": self.chance_acc}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_epoch = state_dict["best_epoch"]
        self._noted_best = state_dict.get("best_acc", -math.inf)
        self.history = list(state_dict.get("history", []))
        self.chance_acc = state_dict.get("chance_acc")
        self._clock_offset = self.history[-1]["elapsed_s"] if self.history else 0.0

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, **fields: Any) -> RunRecord:
        """The run record of a finished run: what this callback measured, what produced the run (seed, versions,
        commit), and `fields` (the task's: phases, extra, a plan without fit's checkpoints)."""
        return RunRecord(**{**self.measured(trainer, pl_module), **provenance(), **fields})

    def measured(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """What the run record takes from this callback and the trainer (`RunRecord` field names)."""
        wall = time.perf_counter() - self.start
        trainable, total = pl_module.parameter_counts()
        best_cb = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
        last_cb = next((c for c in trainer.checkpoint_callbacks if not c.monitor), None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        best = self.best_acc(trainer)
        world = trainer.world_size
        return {
            "val_acc_best": best,
            "chance_acc": self.chance_acc,
            "learned": None if best is None or self.chance_acc is None else best > self.chance_acc + 1e-9,
            "best_epoch": self.best_epoch,
            "val_loss": metrics.get("val/loss"),
            "epochs": trainer.current_epoch,
            "val_history": list(self.history),
            "wall_time_s": round(wall, 2),
            # counted on this rank; every rank trains on as many images (DistributedSampler)
            "train_images_per_s": (round(self.train_images * world / wall, 1)
                                   if wall > 0 and self.train_images else None),
            "train_phase_s": round(self.train_phase_s, 2),
            "train_phase_images_per_s": (round(self.train_images * world / self.train_phase_s, 1)
                                         if self.train_phase_s > 0 else None),
            "trainable_params": trainable,
            "total_params": total,
            "classes": list(pl_module.class_names),
            "best_checkpoint": getattr(best_cb, "best_model_path", None) or None,
            # the unmonitored callback keeps one file, the latest epoch
            "last_checkpoint": getattr(last_cb, "best_model_path", None) or None,
            "peak_memory_mb": _peak_memory_mb(),
            "device": str(trainer.strategy.root_device),
            "precision": str(trainer.precision),  # what ran (a 16-bit request on a CPU is refused at start-up)
            "head_fit": getattr(pl_module, "head_fit_report", None),
        }


def _class_labels(labels: Any) -> bool:
    return (isinstance(labels, torch.Tensor) and labels.ndim == 1 and labels.numel() > 0
            and not labels.is_floating_point() and int(labels.min()) >= 0)


def _logged(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
