"""The run record: `summary.json`, what a run did and how it ended, with one writer.

Every run directory's `summary.json` is a `RunRecord`: a finished run (`status: ok`), a failed one (`failed`,
with the error's first line), an interrupted one (`interrupted`, with the checkpoint and the command that
resumes it) and a repeated job's (`ok`, the mean over its repetitions). Sweeps, Optuna, the sweep report and a
resumed sweep read it back (`RunRecord.read`: data from disk, checked, never instantiated). Writes are atomic.

The JSON keys are the fields below, except `val/acc_best` and `val/loss` (TensorBoard's metric names) and
`extra`, whose keys are merged in at the top level (`lr_find`, `advice`, a repetition's `repeat`).
This module is light: it imports no torch or Lightning.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from transferlab.files import atomic_write_json

SUMMARY_FILE = "summary.json"
STATUSES = ("ok", "failed", "interrupted")
_JSON_NAMES = {"val_acc_best": "val/acc_best", "val_loss": "val/loss", "val_acc_best_std": "val/acc_best_std",
               "val_acc_best_n": "val/acc_best_n"}


@dataclass
class Phase:
    """One phase of the run's plan (`transferlab.training.plan`): `fit_head` or `fit`."""

    name: str
    seconds: float
    epochs: int | None = None  # fit: the epochs it ran (in this process and before a resume)


@dataclass
class RunRecord:
    status: str = "ok"  # ok | failed | interrupted
    val_acc_best: float | None = None  # the best val accuracy (the fitted head's, or the best epoch's)
    chance_acc: float | None = None  # what answering the val set's most common class for every image scores
    learned: bool | None = None  # false: the best val acc is no better than chance_acc
    best_epoch: int | None = None  # -1: the fitted head (fit_head phase), else the fine-tuning epoch
    val_loss: float | None = None  # the last validation's
    epochs: int | None = None  # fine-tuning epochs run (0 when the plan has no fit phase)
    val_history: list[dict[str, float]] = field(default_factory=list)  # [{epoch, val_acc, elapsed_s}]
    phases: list[Phase] = field(default_factory=list)
    wall_time_s: float | None = None
    train_images_per_s: float | None = None  # over the wall time
    train_phase_s: float | None = None  # time in training batches (loading + steps), validation excluded
    train_phase_images_per_s: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    classes: list[str] = field(default_factory=list)
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    precision: str | None = None
    head_fit: dict[str, Any] | None = None  # the fit_head phase's report (strength, CV scores, seconds, ...)
    # the files the run left out (dataset.on_bad_file=skip): {"count", "files"}, found bad by the dataset doctor
    # or when decoded (feature extraction, cache_images, mid-training in the main process)
    skipped: dict[str, Any] | None = None
    error: str | None = None  # failed: `Type: first line`
    # interrupted: the signal, where it stopped, the checkpoint and the command that resumes
    signal: str | None = None
    global_step: int | None = None
    checkpoint: str | None = None
    resume_command: str | None = None
    # a repeated job (`repeat: {seeds, folds}`): the std and n of its repetitions' val_acc_best (their mean)
    val_acc_best_std: float | None = None
    val_acc_best_n: int | None = None
    seed: int | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"summary.json: status {self.status!r}, expected one of {STATUSES}.")

    # --- to and from disk -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object: unset fields that only some statuses have are left out."""
        only_when_set = {"error", "signal", "global_step", "checkpoint", "resume_command", "val_acc_best_std",
                         "val_acc_best_n", "skipped"}
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in only_when_set and value is None):
                continue
            if f.name == "phases":
                value = [asdict(p) for p in value]
            out[_JSON_NAMES.get(f.name, f.name)] = value
        return {**out, **self.extra}

    def write(self, run_dir: str | os.PathLike) -> Path:
        """`<run_dir>/summary.json`, atomically: the one place summary.json is written."""
        return atomic_write_json(Path(run_dir) / SUMMARY_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record from its JSON object (a file's: unknown keys are kept in `extra`; values are not trusted
        beyond their types, which `read` checks for the figures it returns)."""
        names = {_JSON_NAMES.get(f.name, f.name): f.name for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in names:
                values[names[key]] = value
            else:
                extra[key] = value
        phases = values.get("phases") or []
        values["phases"] = [Phase(**p) if isinstance(p, dict) else p for p in phases if isinstance(p, dict)]
        return cls(**values, extra=extra)

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunRecord | None:
        """The record in `run_dir`, or None when there is none or it cannot be read (killed while writing it,
        or not a record): such a run counts as incomplete."""
        path = Path(run_dir) / SUMMARY_FILE
        try:
            data = json.loads(path.read_text())
            record = cls.from_dict(data)
        except (OSError, ValueError, TypeError):
            return None
        if not (record.val_acc_best is None or _is_number(record.val_acc_best)):
            return None
        return record

    # --- the other endings ------------------------------------------------------------------------------
    @classmethod
    def failed(cls, run_dir: str | os.PathLike, error: str, checkpoint: str | None = None,
               resume_command: str | None = None) -> Path:
        """Record a failed run: status failed and the error, keeping what an earlier record there measured; a
        run that saved a checkpoint first also gets it and the command that continues from it."""
        record = cls.read(run_dir) or cls()
        record.status, record.error = "failed", error
        if resume_command is not None:
            record.checkpoint, record.resume_command = checkpoint, resume_command
        return record.write(run_dir)

    def leaked_val(self) -> tuple[str, list[str]] | None:
        """The dataset root and the val files (relative to it) that the run's quality check found near-duplicated
        in train, or None when it found none (or did not look). Read from disk: types checked, else None."""
        quality = self.extra.get("quality")
        if not isinstance(quality, dict):
            return None
        root, leaked = quality.get("root"), quality.get("leaked_val")
        if not (isinstance(root, str) and isinstance(leaked, list) and leaked
                and all(isinstance(p, str) for p in leaked)):
            return None
        return root, leaked

    def leak_free(self) -> dict[str, Any] | None:
        """{accuracy, images, leaked}: the best val accuracy without the leaked val images, when there were any."""
        free = self.extra.get("val_acc_leak_free")
        if not (isinstance(free, dict) and _is_number(free.get("accuracy")) and _is_number(free.get("leaked"))
                and _is_number(free.get("images"))):
            return None
        return free

    def value(self) -> float | None:
        """val_acc_best as a sweeper's objective: None when missing or not finite."""
        v = self.val_acc_best
        return None if v is None or not _is_number(v) or not math.isfinite(v) else float(v)


# --- what a finished run prints ------------------------------------------------------------------------------
def report_lines(record: RunRecord) -> list[str]:
    """The run's last lines: time, best val acc and where it came from, the head fit, sizes, checkpoints."""
    wall = record.wall_time_s or 0.0
    best = "n/a" if record.val_acc_best is None else f"{record.val_acc_best:.4f}"
    lines = [
        "",
        f"Training complete in {wall // 60:.0f}m {wall % 60:.0f}s",
        f"Best val acc: {best} ({_best_epoch_name(record)})",
        *_chance_lines(record),
        *_quality_lines(record.extra),
        *head_fit_lines(record.head_fit, record.val_acc_best, head_is_best=record.best_epoch == -1,
                        fine_tuned=any(p.name == "fit" for p in record.phases)),
    ]
    if record.trainable_params is not None:
        lines.append(f"Trainable params: {record.trainable_params:,} of {record.total_params:,}")
    lines += [f"Best checkpoint: {record.best_checkpoint}", f"Last checkpoint: {record.last_checkpoint}"]
    return lines


def _quality_lines(extra: dict) -> list[str]:
    """The deep quality check's counts, and the val accuracy without the leaked val images when there are any."""
    quality = extra.get("quality")
    if not quality:
        return []
    counts = quality.get("counts", {})
    lines = [f"Quality check: {counts.get('leak', 0)} train/val near-duplicate leaks, {counts.get('duplicate', 0)} "
             f"near-duplicates within a split, {counts.get('label', 0)} suspected label errors, "
             f"{counts.get('outlier', 0)} outliers (summary.json: quality)"]
    free = extra.get("val_acc_leak_free")
    if free:
        lines.append(f"Leak-free val acc: {free['accuracy']:.4f} on {free['images']} images "
                     f"({free['leaked']} val images with a near-duplicate in train left out)")
    return lines


def head_fit_lines(report: dict | None, best: float | None, head_is_best: bool = False,
                   fine_tuned: bool = True) -> list[str]:
    """What the fit_head phase chose: for a solved head, the cross-validated accuracy of each candidate input
    (training images only); for a head trained by minibatch epochs, the epochs its held-out training rows chose;
    for a fit that fine-tuning followed (lpft), the fitted head's own val accuracy, and whether fine-tuning beat it."""
    if not report:
        return []
    lines = []
    if report.get("solver") == "minibatch":
        held = report.get("holdout_accuracy")
        held = "n/a" if held is None else f"{held:.4f}"
        refit = ", then refitted on every training image" if report.get("refit") else ""
        lines.append(f"Head fit: {report.get('epochs')} epochs chosen on held-out training images (accuracy {held})"
                     f"{refit}")
    elif report.get("cv_accuracy") is not None:
        inputs = report.get("inputs", "features")
        if report.get("source_names"):
            inputs += f" (pretrained classes: {', '.join(report['source_names'])})"
        tried = ", ".join(f"{k} {v:.4f}" for k, v in (report.get("candidates") or {}).items())
        scored = "class-balanced accuracy" if report.get("balanced") else "accuracy"
        lines.append(f"Head fit: {inputs}, l2 {report['l2']:g}; cross-validated {scored} on train: {tried}")
    elif report.get("folds") == 0:  # records written before cv_skipped: the only data-driven reason then
        why = report.get("cv_skipped") or "a class has fewer than 2 training images"
        lines.append(f"Head fit: no cross-validation ({why}); l2 {report['l2']:g} used, not chosen")
    before = report.get("val_accuracy")
    if before is not None and fine_tuned:
        kept = ", so the best checkpoint is this head" if head_is_best else ""
        verdict = ("" if best is None or best > before else
                   f" - fine-tuning never beat it{kept} (strategy=frozen fits it alone, in seconds)")
        temperature = report.get("temperature") or 1.0
        tempered = "" if temperature == 1.0 else f" (fine-tuned from it divided by {temperature:.2f})"
        lines.append(f"Fitted head before fine-tuning: val acc {before:.4f}{tempered}{verdict}")
    return lines


def _chance_lines(record: RunRecord) -> list[str]:
    """A run no better than always answering the val set's most common class learned nothing; say so, and why
    that usually happens (a finite loss can still have diverged: the network collapsed onto one class)."""
    if record.learned is not False:
        return []
    return [f"WARNING: that is no better than answering the most common class for every val image "
            f"({record.chance_acc:.4f}): this run learned nothing usable. If train/loss did not fall, lower "
            "optimizer.lr (or let python train.py tune.lr_find=true pick it); if it fell, check that val/ holds "
            "the same classes, labelled the same way, as train/ (python -m transferlab.data.doctor DATASET_ROOT)."]


def _best_epoch_name(record: RunRecord) -> str:
    if record.best_epoch == -1 and record.head_fit is not None:
        fine_tuned = any(p.name == "fit" for p in record.phases)
        return "the fitted head, before fine-tuning" if fine_tuned else "the fitted head"
    return f"epoch {record.best_epoch}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
