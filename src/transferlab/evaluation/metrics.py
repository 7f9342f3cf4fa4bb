"""The numbers a classifier is judged by, each computed in exactly one place (all with torchmetrics).

`per_class_metrics` is the one computation of per-class precision/recall/F1/support and the confusion matrix:
the eval task's tables and the training dashboards' per-class scalars both come from it, so they cannot
disagree. `compute_metrics` adds the summary metrics and calibration (reliability bins, ECE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassStatScores,
)

SCORES = ("precision", "recall", "f1")


@dataclass
class PerClass:
    """Per-class scores of one set of predictions. `rows`: one dict per class (class, precision, recall, f1,
    support, tp, fp, fn), in class-index order; `confusion`: (C, C), rows = true, columns = predicted."""

    class_names: list[str]
    rows: list[dict[str, Any]]
    confusion: torch.Tensor

    def values(self, score: str) -> list[float]:
        """One of SCORES for every class, in class-index order."""
        return [row[score] for row in self.rows]

    def macro(self, score: str) -> float:
        """The unweighted mean over classes of one of SCORES."""
        values = self.values(score)
        return sum(values) / len(values) if values else math.nan


def per_class_metrics(preds: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> PerClass:
    """Per-class precision, recall, F1, support (and tp/fp/fn) and the confusion matrix.

    `preds`: (N, C) probabilities or logits (top-1 is taken), or (N,) predicted class indices; `targets`: (N,)
    class indices. A class with no predictions (or no images) scores 0 where the ratio is undefined."""
    c = len(class_names)
    preds, targets = preds.detach().cpu(), targets.detach().cpu().long()
    precision = MulticlassPrecision(c, average="none")(preds, targets)
    recall = MulticlassRecall(c, average="none")(preds, targets)
    f1 = MulticlassF1Score(c, average="none")(preds, targets)
    stats = MulticlassStatScores(c, average="none")(preds, targets)  # per class: tp, fp, tn, fn, support
    rows = [
        {"class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(stats[i, 4]), "tp": int(stats[i, 0]), "fp": int(stats[i, 1]), "fn": int(stats[i, 3])}
        for i, name in enumerate(class_names)
    ]
    return PerClass(list(class_names), rows, MulticlassConfusionMatrix(c)(preds, targets))


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
    per_class = per_class_metrics(probs, targets, class_names)
    return metrics, per_class.rows, per_class.confusion, reliability_bins(probs, targets, n_bins)


def confident_mistakes(probs: torch.Tensor, targets: torch.Tensor, files: list[str], class_names: list[str],
                       limit: int) -> list[dict[str, Any]]:
    """Wrong predictions, most confident first: file, true and predicted class, top-1 probability."""
    conf, pred = probs.max(dim=-1)
    wrong = (pred != targets).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    return [{"file": files[i], "true": class_names[int(targets[i])], "predicted": class_names[int(pred[i])],
             "prob": float(conf[i])} for i in wrong[:limit]]
