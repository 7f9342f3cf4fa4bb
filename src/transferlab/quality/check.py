"""The quality audit of a folder as `train.py` with these settings sees it: the backbone's features from the
feature cache, out-of-sample class probabilities from the head fit `strategy=frozen` runs (its cross-validation's
out-of-fold predictions for training images, the fitted head's for val images), then `audit`.

`audit_features` serves a training run (its `fit_head` phase already has the fit); `deep_check` the doctor's
`--deep` (it runs the same fit itself).
"""

from __future__ import annotations

import os
import time
from typing import Any

from transferlab.config.settings import RunSettings
from transferlab.quality.audit import audit
from transferlab.quality.report import QualityReport


def audit_features(root: str, features: Any, oof_logits, val_logits, source=None) -> QualityReport | None:
    """`features`: a set-up `CachedFeatureDataModule` with one plain view; `oof_logits` (train rows) and
    `val_logits` (val rows) the head fit's out-of-sample logits (None: no label check); `source` the pretrained
    classifier (`SourceHead`; None: outliers by k-NN distance)."""
    import torch

    root = os.path.abspath(root)
    train_x, val_x = features.train_features[0], features.val_features
    names = features.class_names
    paths = [os.path.relpath(p, root) for p in [*features.train_files, *features.val_files]]
    x = torch.cat([train_x, val_x]).float()
    probs = None
    if oof_logits is not None and val_logits is not None:
        probs = torch.cat([oof_logits.float().cpu(), val_logits.float().cpu()]).softmax(1).numpy()
    labels = torch.cat([features.train_labels, features.val_labels]).numpy()
    return audit(root, names, paths, ["train"] * len(train_x) + ["val"] * len(val_x), labels, x.numpy(), probs,
                 None if source is None else source.logits(x).numpy())


def deep_check(settings: RunSettings) -> tuple[QualityReport, Any]:
    """The report and the (scanned) datamodule: features through the cache, then frozen's head fit."""
    import torch

    from transferlab.models.linear_fit import SourceHead, fit_linear_head
    from transferlab.training.features import folder_features

    found = folder_features(settings)
    features = found.features
    start = time.perf_counter()
    classifier = found.backbone.pretrained_classifier
    source = SourceHead(classifier.weight.detach(), classifier.bias.detach()) \
        if isinstance(classifier, torch.nn.Linear) else None
    hf = settings.strategy.head_fit
    fit = fit_linear_head(features.train_features[0], features.train_labels, len(features.class_names), l2=hf.l2,
                          folds=hf.folds, max_iter=hf.max_iter, source=source, source_classes=hf.source_classes,
                          seed=hf.seed)
    with torch.no_grad():
        val_logits = features.val_features.float() @ fit.weight.T + fit.bias
    head_fit_s = time.perf_counter() - start
    report = audit_features(settings.dataset.root, features, fit.oof_logits, val_logits, source)
    report.seconds = {"scan": round(found.scanned_s, 2), "features": round(found.extracted_s, 2),
                      "head_fit": round(head_fit_s, 2), **report.seconds}
    return report, found.datamodule


__all__ = ["audit_features", "deep_check"]
