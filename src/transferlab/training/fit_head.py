"""The `fit_head` phase: the head trained on the backbone's cached features, before or instead of `fit`.

A linear head is solved (`transferlab.models.linear_fit.fit_linear_head`: L-BFGS, its L2 strength and inputs
chosen by stratified cross-validation on the training features); any other head (mlp, a registered one) or
`strategy.head_fit.solver=minibatch` is trained by minibatch epochs early-stopped on held-out training rows
(`transferlab.models.feature_head`). Validation images are never used to choose anything. Before `fit`
(lpft) the head can be tempered (`head_fit.max_logit_std`). The result is the head's own weights, a report
(kept in checkpoints and summary.json) and its logits on the cached val features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from transferlab.config.schema import HeadFitConfig
from transferlab.models.backbones import source_class_names
from transferlab.models.feature_head import temper, train_head_on_features
from transferlab.models.linear_fit import fit_linear_head

log = logging.getLogger(__name__)


@dataclass
class HeadFitResult:
    report: dict[str, Any]
    val_logits: torch.Tensor
    val_labels: torch.Tensor
    train_loss: float
    train_accuracy: float
    # every training row's logits from the CV fold that held it out (a solved linear head; None otherwise): the
    # out-of-sample predictions the quality check's label audit reads
    oof_logits: torch.Tensor | None = None

    @property
    def val_accuracy(self) -> float:
        return float((self.val_logits.argmax(1) == self.val_labels).float().mean())

    @property
    def val_loss(self) -> float:
        return float(F.cross_entropy(self.val_logits, self.val_labels))


def is_linear(head: nn.Module) -> bool:
    """One nn.Linear and nothing else that has weights (a dropout before it is allowed)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return len(linears) == 1 and sum(1 for _ in head.parameters()) == 2


def solver_for(settings: HeadFitConfig, head: nn.Module) -> str:
    if settings.solver != "auto":
        return settings.solver
    return "lbfgs" if is_linear(head) else "minibatch"


def fit_head(model, features, settings: HeadFitConfig, device: torch.device,
             class_weights: list[float] | None = None, temper_for_fit: bool = False) -> HeadFitResult:
    """Train `model.head` (a `TransferClassifier`'s) in place on `features` (a set-up `CachedFeatureDataModule`)
    and keep the report on the model (`model.head_fit_report`, saved in its checkpoints)."""
    start = time.perf_counter()
    x, y, groups = (t.to(device) for t in features.fit_arrays())
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    head_device = next(model.head.parameters()).device
    model.head.to(device)
    solver = solver_for(settings, model.head)
    oof_logits = None
    if solver == "lbfgs":
        fit = fit_linear_head(x, y, len(model.class_names), l2=settings.l2, folds=settings.folds,
                              max_iter=settings.max_iter, groups=groups, source=model.source_head,
                              source_classes=settings.source_classes, seed=settings.seed, class_weight=weight,
                              class_names=model.class_names)
        fit.load_into(model.head)
        oof_logits = None if fit.oof_logits is None else fit.oof_logits.float().cpu()
        names = None if fit.source_classes is None else source_class_names(fit.source_classes,
                                                                            len(model.source_head.bias))
        report = {"solver": "lbfgs", **fit.report(), "source_names": names}
        if fit.cv_skipped:  # a warning when a grid was given to choose from: its choice did not happen
            used = "the one given" if len(set(settings.l2)) == 1 else "the middle of strategy.head_fit.l2"
            (log.warning if len(set(settings.l2)) > 1 else log.info)(
                "Head fit: cross-validation skipped (%s); l2 %g used (%s), not chosen.", fit.cv_skipped, fit.l2, used)
    else:
        minibatch = train_head_on_features(model.head, x, y, groups, settings.training, seed=settings.seed,
                                           class_weight=weight)
        report = minibatch.report()
    temperature = None
    if temper_for_fit and settings.max_logit_std is not None:  # lpft: a head that will be fine-tuned (schema: why)
        temperature = temper(model.head, x, settings.max_logit_std)
    model.head.eval()
    with torch.no_grad():
        train_logits = model.head(x)
        val_logits = model.head(features.val_features.to(device)).float().cpu()
    train_loss = float(F.cross_entropy(train_logits, y))
    train_accuracy = float((train_logits.argmax(1) == y).float().mean())
    model.head.to(head_device)
    result = HeadFitResult(report, val_logits, features.val_labels.long().cpu(), train_loss, train_accuracy,
                           oof_logits)
    report.update(images=int(groups.unique().numel()), rows=int(len(y)), temperature=temperature,
                  val_accuracy=result.val_accuracy, seconds=round(time.perf_counter() - start, 3))
    model.head_fit_report = report
    log.info("%s", describe(report, settings))
    return result


def describe(report: dict[str, Any], settings: HeadFitConfig) -> str:
    """One log line for the phase."""
    if report["solver"] == "minibatch":
        chosen = f"{report['epochs']} epochs chosen on held-out training rows (held-out accuracy " \
                 f"{report['holdout_accuracy']})"
    elif report.get("cv_skipped"):
        chosen = f"l2 {report['l2']:g}, not cross-validated ({report['cv_skipped']})"
    else:
        chosen = f"l2 {report['l2']:g}, cross-validated accuracy {report['cv_accuracy']} ({report['folds']} folds)"
    tempered = "" if (report.get("temperature") or 1.0) == 1.0 else (
        f"; divided by {report['temperature']:.2f} to logit std {settings.max_logit_std:g}")
    return (f"Head fitted on cached features in {report['seconds']:.1f} s ({report['solver']}): {chosen}; val "
            f"accuracy {report['val_accuracy']:.4f}{tempered}")


def log_head_fit(loggers, result: HeadFitResult) -> None:
    """The phase's figures in TensorBoard at step 0: train loss/accuracy on the fitted rows, the chosen
    strength and its CV accuracy, and the curve the choice was made on (CV accuracy per strength, strongest
    first, or the held-out loss per epoch)."""
    report = result.report
    scalars = {"train/loss": result.train_loss, "train/acc": result.train_accuracy}
    for key in ("l2", "cv_accuracy", "holdout_accuracy", "epochs"):
        if isinstance(report.get(key), int | float):
            scalars[f"head_fit/{key}"] = float(report[key])
    for logger in loggers:
        logger.log_metrics(scalars, step=0)
        for i, (_, acc) in enumerate(sorted((report.get("cv_scores") or {}).items(), key=lambda kv: -float(kv[0]))):
            logger.log_metrics({"head_fit/cv_accuracy_by_strength": acc}, step=i)
        for epoch, loss in enumerate(report.get("holdout_curve") or [], start=1):
            logger.log_metrics({"head_fit/holdout_loss": loss}, step=epoch)
