"""The quality audit inside a training run (`dataset.quality=deep`): near-duplicate leaks, label errors and
outliers found on the features the run computed anyway, printed before any fine-tuning, written to the run
record and TensorBoard; after training, the validation accuracy without the leaked val images."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.quality.check import audit_features
from transferlab.quality.report import WHAT, QualityReport, leak_free

log = logging.getLogger(__name__)
SHOWN = 50  # findings kept in summary.json (all of them: the doctor's --deep --json)


def audit_run(root: str, model, features, head_fit) -> QualityReport | None:
    """The audit of a run's cached features (one plain view); `head_fit` the fit_head phase's result (its
    out-of-fold logits, if the head was solved; else a linear head is fitted here for the label check)."""
    if features is None or features.train_features.shape[0] != 1:
        log.info("Quality check skipped: it needs one plain view of the training features (feature_views=0).")
        return None
    oof = None if head_fit is None else head_fit.oof_logits
    val_logits = None if head_fit is None else head_fit.val_logits
    if oof is None or len(oof) != features.train_features.shape[1]:
        from transferlab.models.linear_fit import fit_linear_head

        fit = fit_linear_head(features.train_features[0], features.train_labels, len(features.class_names),
                              source=model.source_head)
        oof = fit.oof_logits
        with torch.no_grad():
            val_logits = features.val_features.float() @ fit.weight.T + fit.bias
    report = audit_features(root, features, oof, val_logits, model.source_head)
    for kind in ("leak", "duplicate", "label", "outlier"):
        found = report.of(kind)
        if found:
            log.warning("Quality check: %d %s: %s%s", len(found), WHAT[kind],
                        "; ".join(", ".join(f.files) for f in found[:3]), " ..." if len(found) > 3 else "")
    log.info("%s", report.format(limit=10))
    return report


def record_of(report: QualityReport) -> dict[str, Any]:
    d = report.to_dict()
    d["findings"] = d["findings"][:SHOWN]
    d.pop("outlier_ranking", None)
    return d


def log_quality(loggers, report: QualityReport) -> None:
    """The report as TensorBoard text (`quality/report`) and its findings as an image grid (`quality/findings`:
    one row per finding, its images side by side; a leak's val image first)."""
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_text"):
            continue
        experiment.add_text("quality/report", "    " + report.format(limit=20).replace("\n", "\n    "), 0)
        grid = findings_grid(report)
        if grid is not None:
            experiment.add_image("quality/findings", grid, 0)


def findings_grid(report: QualityReport, limit: int = 12, size: int = 96) -> torch.Tensor | None:
    """(3, H, W) uint8: up to `limit` findings, a row each of up to 4 thumbnails."""
    from PIL import Image

    rows = report.findings[:limit]
    if not rows:
        return None
    canvas = Image.new("RGB", (4 * size, len(rows) * size), "white")
    for r, finding in enumerate(rows):
        for c, rel in enumerate(finding.files[:4]):
            try:
                with Image.open(os.path.join(report.root, rel)) as im:
                    im = im.convert("RGB")
                    im.thumbnail((size, size))
                    canvas.paste(im, (c * size, r * size))
            except OSError:
                continue
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def leak_free_accuracy(predictions: Path, leaked: list[str], root: str) -> dict[str, Any] | None:
    """Val accuracy from `val_predictions.csv` without the val images that have a twin in train."""
    if not leaked or not predictions.is_file():
        return None
    with predictions.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return leak_free([r["file"] for r in rows], [r["true"] == r["predicted"] for r in rows], leaked, root)
