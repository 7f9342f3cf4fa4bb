"""RunSummary reads the best accuracy the module logs and notes only its epoch, across a resume too."""

from __future__ import annotations

import json
from importlib import metadata

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MaxMetric

from transferlab.callbacks.summary import RunSummary
from transferlab.record import head_fit_lines as _head_fit_lines
from transferlab.record import report_lines

SUMMARY_KEYS = {"status", "val/acc_best", "best_epoch", "val/loss", "epochs", "wall_time_s", "train_images_per_s",
                "train_phase_s", "train_phase_images_per_s", "trainable_params", "total_params", "classes",
                "best_checkpoint", "last_checkpoint", "peak_memory_mb", "device", "precision", "seed", "versions",
                "git", "val_history", "head_fit", "chance_acc", "learned", "phases"}


class Scripted(L.LightningModule):
    """Logs val/acc from a script, one value per epoch, and val/acc_best as TransferClassifier does."""

    def __init__(self, accs: list[float]) -> None:
        super().__init__()
        self.accs = accs
        self.net = torch.nn.Linear(2, 2)
        self.class_names = ["a", "b"]
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)

    def parameter_counts(self) -> tuple[int, int]:
        n = sum(p.numel() for p in self.parameters())
        return n, n

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        acc = torch.tensor(self.accs[self.current_epoch])
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
        self.log("val/acc", acc)
        self.log("val/loss", 1 - acc)
        self.log("val/acc_best", self.val_acc_best.compute() if self.val_acc_best.update_called else acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Fitted:
    """What the training task does after fit: the record from RunSummary, printed and written."""

    def __init__(self, trainer: L.Trainer, model: L.LightningModule, monitor: RunSummary, run_dir) -> None:
        record = monitor.record(trainer, model)
        print("\n".join(report_lines(record)))
        record.write(run_dir)
        self.summary = record.to_dict()


def fit(tmp_path, accs: list[float], epochs: int, ckpt_path: str | None = None, labels=(0, 0, 0, 0)) -> Fitted:
    data = DataLoader(TensorDataset(torch.ones(4, 2), torch.tensor(labels)), batch_size=2)
    summary = RunSummary()
    trainer = L.Trainer(max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1,
                        callbacks=[summary, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    model = Scripted(accs)
    trainer.fit(model, data, data, ckpt_path=ckpt_path)
    return Fitted(trainer, model, summary, tmp_path)


def test_best_epoch_is_where_the_logged_best_was_first_reached(tmp_path):
    summary = fit(tmp_path, [0.5, 0.75, 0.75, 0.6], epochs=4)  # the tie at epoch 2 is no improvement
    assert summary.summary["val/acc_best"] == 0.75 and summary.summary["best_epoch"] == 1
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(written) == SUMMARY_KEYS
    assert written["val/acc_best"] == 0.75 and written["best_epoch"] == 1
    assert [h["epoch"] for h in written["val_history"]] == [0, 1, 2, 3]
    assert [h["val_acc"] for h in written["val_history"]] == pytest.approx([0.5, 0.75, 0.75, 0.6])
    clock = [h["elapsed_s"] for h in written["val_history"]]
    assert clock == sorted(clock) and clock[0] >= 0


def test_resume_keeps_the_best_epoch_and_tells_a_tie_from_an_improvement(tmp_path):
    accs = [0.5, 0.75, 0.6, 0.75, 0.7, 0.9]
    fit(tmp_path, accs, epochs=3)
    last = str(tmp_path / "ckpt" / "last.ckpt")
    resumed = fit(tmp_path, accs, epochs=5, ckpt_path=last)  # epoch 3 only ties the best of epoch 1
    assert resumed.summary["val/acc_best"] == 0.75 and resumed.summary["best_epoch"] == 1
    finished = fit(tmp_path, accs, epochs=6, ckpt_path=last)  # last.ckpt is now epoch 4's
    assert finished.summary["val/acc_best"] == pytest.approx(0.9) and finished.summary["best_epoch"] == 5


def test_resuming_a_finished_run_still_reports_its_best(tmp_path):
    fit(tmp_path, [0.5, 0.75], epochs=2)
    again = fit(tmp_path, [0.5, 0.75], epochs=2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))  # no validation
    assert again.summary["val/acc_best"] == 0.75 and again.summary["best_epoch"] == 1


def test_the_summary_records_seed_versions_and_the_code_commit(tmp_path):
    L.seed_everything(1234)
    summary = RunSummary()
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[summary])
    model = Scripted([0.5])
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2),
                DataLoader(TensorDataset(torch.randn(2, 2)), batch_size=2))
    Fitted(trainer, model, summary, tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["seed"] == 1234
    assert written["versions"]["torch"] == metadata.version("torch")
    assert written["versions"]["lightning"] == L.__version__
    assert written["git"] is None or len(written["git"]["commit"]) == 40
    assert written["device"] == "cpu" and written["precision"] == "32-true"


def test_an_lpft_run_says_when_fine_tuning_never_beat_its_fitted_head():
    report = {"cv_accuracy": 0.9, "inputs": "features", "l2": 0.01, "candidates": {"features": 0.9},
              "val_accuracy": 0.96}
    worse, better = _head_fit_lines(report, 0.95), _head_fit_lines(report, 0.97)
    assert worse[-1].startswith("Fitted head before fine-tuning: val acc 0.9600") and "never beat it" in worse[-1]
    assert "the best checkpoint is this head" not in worse[-1]  # it is only when the head was a candidate
    assert "so the best checkpoint is this head" in _head_fit_lines(report, 0.96, head_is_best=True)[-1]
    assert better[-1] == "Fitted head before fine-tuning: val acc 0.9600"
    tempered = _head_fit_lines({**report, "temperature": 4.5867}, 0.97)
    assert tempered[-1] == "Fitted head before fine-tuning: val acc 0.9600 (fine-tuned from it divided by 4.59)"
    frozen = {k: v for k, v in report.items() if k != "val_accuracy"}  # the fit is the run: nothing to compare
    assert [line.split(":")[0] for line in _head_fit_lines(frozen, 0.96)] == ["Head fit"]


def test_a_run_no_better_than_answering_the_commonest_val_class_says_it_learned_nothing(tmp_path, capsys):
    labels = (0, 0, 0, 1)  # answering class 0 for every image scores 0.75
    stuck = fit(tmp_path / "stuck", [0.5, 0.75], epochs=2, labels=labels).summary
    assert stuck["chance_acc"] == 0.75 and stuck["learned"] is False and stuck["status"] == "ok"
    assert "WARNING: that is no better than answering the most common class for every val image (0.7500)" in \
        capsys.readouterr().out
    learned = fit(tmp_path / "learned", [0.5, 1.0], epochs=2, labels=labels).summary
    assert learned["chance_acc"] == 0.75 and learned["learned"] is True
    assert "WARNING" not in capsys.readouterr().out
    # a resumed run that validates no more keeps the floor it measured
    again = fit(tmp_path / "learned", [0.5, 1.0], epochs=2, labels=labels,
                ckpt_path=str(tmp_path / "learned" / "ckpt" / "last.ckpt")).summary
    assert again["chance_acc"] == 0.75 and again["learned"] is True
