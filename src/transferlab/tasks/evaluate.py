"""The eval task: `python eval.py ckpt_path=<ckpt or run dir> [dataset=... dataset.root=...] [split=val]`.

Scores a checkpoint honestly on a split: which data (the run's own, or the one named; a dataset whose classes
differ from the checkpoint's is refused, since scoring it would compare labels under a shifted mapping), load,
classify, write the files, print the report. The numbers and figures themselves come from
`transferlab.evaluation` (metrics.py, plots.py), shared with the training dashboards.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab.config import register_resolvers
from transferlab.data.datamodule import FolderDataModule, default_num_workers
from transferlab.data.folders import FolderSplits, Sample
from transferlab.evaluation.metrics import compute_metrics, confident_mistakes
from transferlab.evaluation.plots import plot_confusion_matrix, plot_mistakes, plot_reliability, save_figure
from transferlab.inference import Classifier, Skipped, load_classifier
from transferlab.quality.report import leak_free
from transferlab.record import RunRecord

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "all")


class ClassMismatchError(ValueError):
    """The dataset's class set is not the checkpoint's."""


# --- which data -----------------------------------------------------------------------------------------
def check_classes(dataset_classes: list[str], model_classes: list[str], where: str) -> list[int]:
    """Refuse a dataset whose class set differs; return dataset label -> model label (matched by name)."""
    extra = [c for c in dataset_classes if c not in model_classes]
    missing = [c for c in model_classes if c not in dataset_classes]
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"classes the checkpoint does not know: {extra}")
        if missing:
            parts.append(f"checkpoint classes absent from the dataset: {missing}")
        raise ClassMismatchError(
            f"{where}: the dataset's classes differ from the checkpoint's ({'; '.join(parts)}). "
            f"Checkpoint classes: {model_classes}; dataset classes: {dataset_classes}. Scoring it would compare "
            "labels under a shifted mapping. Point dataset.root at data with exactly the checkpoint's classes."
        )
    return [model_classes.index(c) for c in dataset_classes]


class RunDirError(ValueError):
    """A training run directory's recorded config cannot say which data it trained on."""


# The only fields read from a training run's .hydra/config.yaml, with their types. The file is data: nothing in
# it is instantiated (its `dataset._target_` and `dataset.prepare` are ignored), whoever wrote it.
_RUN_DATA_FIELDS = {"root": str, "val_fraction": (int, float), "split_seed": int, "max_pixels": int,
                    "on_bad_file": str}


def training_run_dir(ckpt: Path) -> Path | None:
    """The training run directory a checkpoint was saved in (`<run>/checkpoints/x.ckpt` or `<run>/x.ckpt`)."""
    return next((d for d in (ckpt.parent.parent, ckpt.parent) if (d / ".hydra" / "config.yaml").is_file()), None)


def training_leaks(ckpt: Path) -> tuple[str, list[str]] | None:
    """The val files the training run's quality check found near-duplicated in its train split (its
    summary.json), with the dataset root they are relative to; None when it found none or did not look."""
    for run_dir in (ckpt.parent.parent, ckpt.parent):  # the run's summary.json, with or without .hydra/
        record = RunRecord.read(run_dir)
        if record is not None:
            return record.leaked_val()
    return None


def training_data(ckpt: Path) -> dict[str, Any]:
    """The data settings of the run that wrote `ckpt` (root resolved from the run's launch directory), as
    validated plain values for `FolderDataModule`."""
    run_dir = training_run_dir(ckpt)
    if run_dir is None:
        raise FileNotFoundError(
            f"{ckpt} is not inside a training run directory (no .hydra/config.yaml beside it), so the data it "
            "was trained on is unknown. Name the data: dataset=folder dataset.root=/path/to/images."
        )
    config_file = run_dir / ".hydra" / "config.yaml"
    try:
        saved = OmegaConf.load(config_file)
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
        cwd = cwd if isinstance(cwd, str) else os.getcwd()
        # The two paths Hydra's runtime filled in at training time; the fields below resolve as they did then.
        OmegaConf.update(saved, "paths.root_dir", cwd, force_add=True)
        OmegaConf.update(saved, "paths.output_dir", str(run_dir), force_add=True)
        register_resolvers()
        values = {key: OmegaConf.select(saved, f"dataset.{key}", default=None) for key in _RUN_DATA_FIELDS}
    except Exception as e:  # YAML or interpolation errors: the file is someone else's, name it
        raise RunDirError(f"{config_file}: cannot read the training data settings ({type(e).__name__}: {e}). "
                          "Name the data: dataset=folder dataset.root=/path/to/images.") from None
    for key, types in _RUN_DATA_FIELDS.items():
        value = values[key]
        if value is None and key != "root":
            values.pop(key)
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise RunDirError(f"{config_file}: dataset.{key}={value!r} is not a valid value. "
                              "Name the data: dataset=folder dataset.root=/path/to/images.")
    root = os.path.expanduser(values["root"])
    values["root"] = os.path.normpath(root if os.path.isabs(root) else os.path.join(cwd, root))
    log.info("Dataset from the training run %s: %s", run_dir, values["root"])
    return values


def split_samples(splits: FolderSplits, split: str) -> list[Sample]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}.")
    return {"val": splits.val, "train": splits.train, "all": splits.train + splits.val}[split]


# --- the run ----------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Everything an evaluation measured, ready to be written or shown."""

    class_names: list[str]
    files: list[str]
    targets: torch.Tensor  # (N,) model class indices
    probs: torch.Tensor  # (N, C) softmax
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: torch.Tensor  # (C, C) rows = true, columns = predicted
    calibration: list[dict[str, float]]  # reliability bins
    skipped: list[Skipped] = field(default_factory=list)  # unreadable when classified
    dataset_skipped: list[str] = field(default_factory=list)  # left out by the dataset's own checks

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=-1)

    def mistakes(self, limit: int) -> list[dict[str, Any]]:
        """The `limit` most confidently wrong predictions (file, true, predicted, prob)."""
        return confident_mistakes(self.probs, self.targets, self.files, self.class_names, limit)


def evaluate_samples(clf: Classifier, samples: list[Sample], label_map: list[int], batch_size: int = 32,
                     num_workers: int = 0, progress: bool = False, top_k: int = 5, n_bins: int = 15) -> Evaluation:
    """Classify `samples` (labels in the dataset's order, mapped to the model's by `label_map`) and score."""
    if not samples:
        raise ValueError("No images to evaluate in this split.")
    files = [s.path for s in samples]
    out = clf.probabilities(files, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            desc="eval")
    if not out.kept:
        raise RuntimeError(f"None of the {len(files)} images could be read; first error: {out.skipped[0].error}")
    targets = torch.tensor([label_map[samples[i].label] for i in out.kept], dtype=torch.long)
    metrics, per_class, confusion, bins = compute_metrics(out.probs, targets, clf.class_names, top_k, n_bins)
    metrics["num_images"] = len(out.kept)
    metrics["num_skipped"] = len(out.skipped)
    return Evaluation(clf.class_names, [files[i] for i in out.kept], targets, out.probs, metrics, per_class,
                      confusion, bins, out.skipped)


# --- tables and report ------------------------------------------------------------------------------------
def _averages(ev: Evaluation) -> list[dict[str, Any]]:
    n = int(ev.metrics["num_images"])
    return [{"class": f"{avg} avg", "precision": ev.metrics[f"precision_{avg}"], "recall": ev.metrics[f"recall_{avg}"],
             "f1": ev.metrics[f"f1_{avg}"], "support": n} for avg in ("macro", "weighted")]


def per_class_markdown(ev: Evaluation) -> str:
    lines = ["| class | precision | recall | f1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in ev.per_class + _averages(ev):
        lines.append(f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
                     f"| {row['support']} |")
    return "\n".join(lines)


def format_report(ev: Evaluation, title: str) -> str:
    m = ev.metrics
    lines = [title, f"  accuracy            {m['accuracy']:.4f}"]
    top = [k for k in m if k.startswith("top")]
    lines += [f"  {k.replace('_', ' '):<19} {m[k]:.4f}" for k in top] or [
        f"  {'top-k accuracy':<19} n/a with {len(ev.class_names)} classes (needs 1 < top_k < classes)"]
    for name in ("precision", "recall", "f1"):
        lines.append(f"  {name:<9} macro {m[f'{name}_macro']:.4f}  weighted {m[f'{name}_weighted']:.4f}")
    lines.append(f"  {f'ECE ({len(ev.calibration)} bins)':<19} {m['ece']:.4f}")
    if "accuracy_leak_free" in m:
        lines.append(f"  {'accuracy leak-free':<19} {m['accuracy_leak_free']:.4f} ({m['leaked_images']} val images "
                     f"with a near-duplicate in train left out, {m['leak_free_images']} scored; the training run's "
                     "quality check)")
    lines += ["", per_class_markdown(ev)]
    if ev.skipped:
        lines += ["", f"Skipped {len(ev.skipped)} unreadable file(s):", *(f"  {s.error}" for s in ev.skipped)]
    if ev.dataset_skipped:
        lines += ["", f"The dataset checks left out {len(ev.dataset_skipped)} bad file(s) (dataset.on_bad_file):",
                  *(f"  {f}" for f in ev.dataset_skipped[:10])]
        if len(ev.dataset_skipped) > 10:
            lines.append(f"  ... ({len(ev.dataset_skipped) - 10} more in metrics.json)")
    return "\n".join(lines)


def write_outputs(ev: Evaluation, out_dir: Path, info: dict[str, Any], mistakes: int = 16) -> list[Path]:
    """metrics.json, per_class.{csv,md}, confusion_matrix.{csv,png}, calibration.png, confident_mistakes.png,
    predictions.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def path(name: str) -> Path:
        written.append(out_dir / name)
        return out_dir / name

    names = ev.class_names
    conf, pred = ev.probs.max(dim=-1)
    path("metrics.json").write_text(json.dumps({
        **info, "classes": names, "metrics": ev.metrics, "per_class": ev.per_class,
        "confusion_matrix": ev.confusion.tolist(), "calibration_bins": ev.calibration,
        "confident_mistakes": ev.mistakes(mistakes),
        "skipped": [{"file": s.source, "error": s.error} for s in ev.skipped],
        "dataset_skipped": ev.dataset_skipped,
    }, indent=2))
    with path("per_class.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "support", "tp", "fp", "fn"],
                                extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
                         for row in ev.per_class + _averages(ev))
    path("per_class.md").write_text(per_class_markdown(ev) + "\n")
    with path("confusion_matrix.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, ev.confusion.tolist(), strict=True))
    with path("predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true", "predicted", "prob", "correct"])
        for i, file in enumerate(ev.files):
            writer.writerow([file, names[int(ev.targets[i])], names[int(pred[i])], round(float(conf[i]), 6),
                             int(pred[i] == ev.targets[i])])
    title = f"Confusion matrix (accuracy {ev.metrics['accuracy']:.4f}, {int(ev.confusion.sum())} images)"
    save_figure(plot_confusion_matrix(ev.confusion, names, title), path("confusion_matrix.png"), dpi=120)
    save_figure(plot_reliability(ev.calibration, ev.metrics["ece"]), path("calibration.png"), dpi=120)
    save_figure(plot_mistakes(ev.mistakes(mistakes)), path("confident_mistakes.png"), dpi=100)
    return written


# --- the task ---------------------------------------------------------------------------------------------
def evaluate_checkpoint(ckpt_path: str, dataset: DictConfig | None = None, split: str = "val",
                        output_dir: str | os.PathLike | None = None, batch_size: int = 32,
                        num_workers: int | str = 0, device: str = "auto", top_k: int = 5, n_bins: int = 15,
                        mistakes: int = 16, progress: bool = True, tta: str = "none") -> Evaluation:
    """Python API of `eval.py`: evaluate a checkpoint on a split and (optionally) write every output."""
    clf = load_classifier(ckpt_path, device=device, tta=tta)
    if dataset is not None:  # the user's own config: its _target_ and prepare step are theirs to run
        datamodule = instantiate(dataset, _convert_="all")  # plain values: data/ never sees a DictConfig
        datamodule.prepare_data()
    else:
        datamodule = FolderDataModule(**training_data(clf.checkpoint))
    splits = datamodule.scan()
    label_map = check_classes(splits.class_names, clf.class_names, f"dataset.root={datamodule.root}")
    samples = split_samples(splits, split)
    workers = default_num_workers() if num_workers == "auto" else int(num_workers)
    start = time.perf_counter()
    ev = evaluate_samples(clf, samples, label_map, batch_size, workers, progress, top_k, n_bins)
    ev.metrics["seconds"] = round(time.perf_counter() - start, 2)
    ev.metrics["tta"] = tta
    ev.dataset_skipped = [str(p) for p in getattr(datamodule, "skipped", [])]  # bad files the scan left out
    leaks = training_leaks(clf.checkpoint) if split == "val" else None
    if leaks is not None and os.path.normpath(leaks[0]) == os.path.normpath(datamodule.root):
        free = leak_free(ev.files, (ev.preds == ev.targets).tolist(), leaks[1], datamodule.root)
        if free is not None and free["leaked"]:  # the same val set the run audited: its leaks are these files
            ev.metrics.update(accuracy_leak_free=free["accuracy"], leaked_images=free["leaked"],
                              leak_free_images=free["images"])
    if output_dir is not None:
        info = {"checkpoint": str(clf.checkpoint), "dataset_root": datamodule.root, "split": split}
        write_outputs(ev, Path(output_dir), info, mistakes)
    return ev


def run(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task: evaluate, print the report, write the files into the eval run's directory."""
    out_dir = Path(cfg.output_dir)
    ev = evaluate_checkpoint(
        cfg.ckpt_path, cfg.get("dataset"), split=cfg.split, output_dir=out_dir, batch_size=cfg.batch_size,
        num_workers=cfg.num_workers, device=cfg.device, top_k=cfg.top_k, n_bins=cfg.calibration_bins,
        mistakes=cfg.mistakes, progress=cfg.progress, tta=cfg.get("tta", "none"),
    )
    info = json.loads((out_dir / "metrics.json").read_text())
    title = (f"Evaluated {info['checkpoint']}\n  on {info['dataset_root']} [{cfg.split}]: "
             f"{ev.metrics['num_images']} images, {len(ev.class_names)} classes, {ev.metrics['seconds']:.1f}s"
             + (f", tta={ev.metrics['tta']}" if ev.metrics["tta"] != "none" else ""))
    print(format_report(ev, title))
    print(f"\nWrote {out_dir}/: " + ", ".join(sorted(p.name for p in out_dir.iterdir() if p.is_file())))
    return ev.metrics
