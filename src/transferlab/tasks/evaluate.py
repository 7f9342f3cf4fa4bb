"""The eval task: `python eval.py ckpt_path=<ckpt or run dir> [dataset=... dataset.root=...] [split=val]`.

Scores a checkpoint honestly on a split: accuracy, top-k, macro/weighted precision, recall and F1, a
per-class table, the confusion matrix, calibration (reliability diagram + ECE) and the most confidently wrong
images. Every number comes from torchmetrics. A dataset whose classes differ from the checkpoint's is refused:
scoring it would silently compare labels under a shifted mapping.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassStatScores,
)

from transferlab.config import register_resolvers
from transferlab.data.datamodule import default_num_workers
from transferlab.data.folders import FolderSplits, Sample
from transferlab.data.images import load_rgb
from transferlab.inference import Classifier, Skipped, load_classifier

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


def training_dataset_config(ckpt: Path) -> DictConfig:
    """The `dataset` node of the run that wrote `ckpt`, resolved as it was (paths from the run's launch dir)."""
    run_dir = next((d for d in (ckpt.parent.parent, ckpt.parent) if (d / ".hydra" / "config.yaml").is_file()), None)
    if run_dir is None:
        raise FileNotFoundError(
            f"{ckpt} is not inside a training run directory (no .hydra/config.yaml beside it), so the data it "
            "was trained on is unknown. Name the data: dataset=folder dataset.root=/path/to/images."
        )
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    cwd = cwd or os.getcwd()
    # The two paths Hydra's runtime filled in at training time; everything else resolves as it did then.
    OmegaConf.update(saved, "paths.root_dir", cwd, force_add=True)
    OmegaConf.update(saved, "paths.output_dir", str(run_dir), force_add=True)
    register_resolvers()
    node = OmegaConf.create(OmegaConf.to_container(saved.dataset, resolve=True))
    root = os.path.expanduser(node.root)
    node.root = os.path.normpath(root if os.path.isabs(root) else os.path.join(cwd, root))
    log.info("Dataset from the training run %s: %s", run_dir, node.root)
    return node


def split_samples(splits: FolderSplits, split: str) -> list[Sample]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}.")
    return {"val": splits.val, "train": splits.train, "all": splits.train + splits.val}[split]


# --- metrics --------------------------------------------------------------------------------------------
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


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int) -> list[dict[str, float]]:
    """Per confidence bin: count, accuracy and mean confidence (the reliability diagram's bars).

    Same equal-width bins as torchmetrics' calibration error, a confidence of exactly 1.0 in the last bin."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        n = int(mask.sum())
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
                     "accuracy": float(correct[mask].mean()) if n else math.nan,
                     "confidence": float(conf[mask].mean()) if n else math.nan})
    return bins


def compute_metrics(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str], top_k: int = 5,
                    n_bins: int = 15) -> tuple[dict[str, float], list[dict[str, Any]], torch.Tensor, list[dict]]:
    """Summary metrics, per-class rows, confusion matrix and reliability bins, all from torchmetrics."""
    c = len(class_names)

    def score(metric) -> torch.Tensor:
        return metric(probs, targets)

    metrics: dict[str, float] = {"accuracy": float(score(MulticlassAccuracy(c, average="micro")))}
    if 1 < top_k < c:
        metrics[f"top{top_k}_accuracy"] = float(score(MulticlassAccuracy(c, top_k=top_k, average="micro")))
    for name, cls in (("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)):
        for average in ("macro", "weighted"):
            metrics[f"{name}_{average}"] = float(score(cls(c, average=average)))
    metrics["ece"] = float(score(MulticlassCalibrationError(c, n_bins=n_bins, norm="l1")))

    precision = score(MulticlassPrecision(c, average="none"))
    recall = score(MulticlassRecall(c, average="none"))
    f1 = score(MulticlassF1Score(c, average="none"))
    stats = score(MulticlassStatScores(c, average="none"))  # per class: tp, fp, tn, fn, support
    per_class = [
        {"class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(stats[i, 4]), "tp": int(stats[i, 0]), "fp": int(stats[i, 1]), "fn": int(stats[i, 3])}
        for i, name in enumerate(class_names)
    ]
    confusion = score(MulticlassConfusionMatrix(c))
    return metrics, per_class, confusion, reliability_bins(probs, targets, n_bins)


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


# --- figures --------------------------------------------------------------------------------------------
def _figure(**kwargs):
    """A matplotlib Figure drawn with Agg and never registered with pyplot: no display needed, no global
    backend switched (safe inside notebooks and training processes)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_confusion(ev: Evaluation, path: Path) -> Path:
    """Counts in each cell, coloured by the row's share (recall per true class)."""
    c = len(ev.class_names)
    cm = ev.confusion.float()
    share = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(20.0, max(4.0, 0.55 * c + 2.5))
    fig = _figure(figsize=(side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(c), ev.class_names, rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center")
    ax.set_yticks(range(c), ev.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (accuracy {ev.metrics['accuracy']:.4f}, {int(cm.sum())} images)")
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=9 if c <= 12 else 6,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_calibration(ev: Evaluation, path: Path) -> Path:
    """Reliability diagram (accuracy vs confidence per bin, gap to the diagonal) over a confidence histogram."""
    bins = ev.calibration
    width = bins[0]["high"] - bins[0]["low"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    fig = _figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = [(c, b["accuracy"], b["confidence"]) for c, b in zip(centres, bins, strict=True) if b["count"]]
    x, acc, conf = ([u[i] for u in used] for i in range(3))
    top.bar(x, acc, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(x, [abs(c - a) for a, c in zip(acc, conf, strict=True)], width=width, fill=False,
            bottom=[min(a, c) for a, c in zip(acc, conf, strict=True)], edgecolor="tab:red", hatch="//",
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"Reliability diagram: ECE {ev.metrics['ece']:.4f} ({len(bins)} bins)")
    bottom.bar(centres, [b["count"] for b in bins], width=width, color="gray", edgecolor="black")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def confident_mistakes(ev: Evaluation, limit: int) -> list[dict[str, Any]]:
    """Wrong predictions, most confident first."""
    conf, pred = ev.probs.max(dim=-1)
    wrong = (pred != ev.targets).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    return [{"file": ev.files[i], "true": ev.class_names[int(ev.targets[i])],
             "predicted": ev.class_names[int(pred[i])], "prob": float(conf[i])} for i in wrong[:limit]]


def plot_mistakes(ev: Evaluation, path: Path, limit: int = 16) -> Path:
    """A grid of the most confidently wrong images, titled true / predicted (probability)."""
    mistakes = confident_mistakes(ev, limit)
    if not mistakes:
        fig = _figure(figsize=(4, 1.5))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "No misclassified images", ha="center", va="center")
        ax.axis("off")
    else:
        cols = min(4, len(mistakes))
        rows = math.ceil(len(mistakes) / cols)
        fig = _figure(figsize=(3 * cols, 3.3 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, m in zip(axes.flat, mistakes, strict=False):
            image = load_rgb(m["file"])
            image.thumbnail((256, 256))
            ax.imshow(image)
            ax.set_title(f"true: {m['true']}\npred: {m['predicted']} ({m['prob']:.2f})", fontsize=9, color="tab:red")
        fig.suptitle("Most confidently wrong")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


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
        "confident_mistakes": confident_mistakes(ev, mistakes),
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
    plot_confusion(ev, path("confusion_matrix.png"))
    plot_calibration(ev, path("calibration.png"))
    plot_mistakes(ev, path("confident_mistakes.png"), mistakes)
    return written


# --- the task ---------------------------------------------------------------------------------------------
def evaluate_checkpoint(ckpt_path: str, dataset: DictConfig | None = None, split: str = "val",
                        output_dir: str | os.PathLike | None = None, batch_size: int = 32,
                        num_workers: int | str = 0, device: str = "auto", top_k: int = 5, n_bins: int = 15,
                        mistakes: int = 16, progress: bool = True) -> Evaluation:
    """Python API of `eval.py`: evaluate a checkpoint on a split and (optionally) write every output."""
    clf = load_classifier(ckpt_path, device=device)
    node = dataset if dataset is not None else training_dataset_config(clf.checkpoint)
    datamodule = instantiate(node)
    datamodule.prepare_data()
    splits = datamodule.scan()
    label_map = check_classes(splits.class_names, clf.class_names, f"dataset.root={datamodule.root}")
    samples = split_samples(splits, split)
    workers = default_num_workers() if num_workers == "auto" else int(num_workers)
    start = time.perf_counter()
    ev = evaluate_samples(clf, samples, label_map, batch_size, workers, progress, top_k, n_bins)
    ev.metrics["seconds"] = round(time.perf_counter() - start, 2)
    ev.dataset_skipped = [str(p) for p in getattr(datamodule, "skipped", [])]  # bad files the scan left out
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
        mistakes=cfg.mistakes, progress=cfg.progress,
    )
    info = json.loads((out_dir / "metrics.json").read_text())
    title = (f"Evaluated {info['checkpoint']}\n  on {info['dataset_root']} [{cfg.split}]: "
             f"{ev.metrics['num_images']} images, {len(ev.class_names)} classes, {ev.metrics['seconds']:.1f}s")
    print(format_report(ev, title))
    print(f"\nWrote {out_dir}/: " + ", ".join(sorted(p.name for p in out_dir.iterdir() if p.is_file())))
    return ev.metrics
