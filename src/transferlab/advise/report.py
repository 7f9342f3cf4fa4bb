"""The advice as text (`format_advice`), with the repeated-seed sweep that checks it (`sweep_commands`)."""

from __future__ import annotations

import os
import shlex

from transferlab.advise.measures import Measures
from transferlab.advise.options import strategy_option
from transferlab.advise.recommend import Advice, Recommendation

SWEPT = ("frozen", "partial", "finetune")  # the strategies conf/experiment/strategy_check.yaml compares


def sweep_commands(root: str, overrides: list[str], rec: Recommendation) -> list[str]:
    """The repeated-seed sweep that checks the advice against the alternatives (and its own settings, when they
    are not the option's defaults)."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("strategy", "seed", "dataset.root")
            and not o.startswith(("strategy.", "advise.", "+advise."))]
    data = [o for o in kept if o.startswith("dataset=")] or ["dataset=folder"]
    rest = [o for o in kept if not o.startswith("dataset=")]
    # conf/experiment/strategy_check.yaml: SWEPT x seeds 1,2,3, three epochs each, with the paired report
    base = ["python", "train.py", "-m", "experiment=strategy_check", *data, f"dataset.root={root}", *rest]
    commands = [base + ([f"strategy={','.join([*SWEPT, rec.strategy])}"] if rec.strategy not in SWEPT else [])]
    defaults = strategy_option(rec.strategy)
    if any(defaults.get(k) != v for k, v in rec.settings.items()):
        commands.append(base + [*rec.overrides(), "seed=1,2,3"])
    return [" ".join(shlex.quote(w) for w in c) for c in commands]


def _shown(path: str | None) -> str | None:
    """A path under the working directory relative to it (outputs/cache/...), else as it is."""
    if path and os.path.abspath(path).startswith(os.getcwd() + os.sep):
        return os.path.relpath(path)
    return path


def _probe_lines(m: Measures) -> list[str]:
    inputs = m.probe_inputs or "features"
    if m.probe_source_classes:
        names = ", ".join(m.probe_source_classes[:6]) + (", ..." if len(m.probe_source_classes) > 6 else "")
        inputs += f" ({names})"
    tried = ", ".join(f"{k} {v:.3f}" for k, v in m.probe_candidates.items())
    scored = "balanced accuracy, " if m.probe_balanced else ""
    if m.measured_chance is not None and abs(m.measured_chance - m.chance) > 0.005:
        chance = f"chance {m.probe_chance:.2f} on these {m.probe_images} (pool {m.chance:.2f})"
    else:
        chance = f"chance {m.probe_chance:.2f}"
    return [
        f"Linear probe:  {m.probe_acc:.3f} (strategy=frozen's head fit: {scored}{m.folds}-fold CV on the training "
        f"pool, {m.probe_images} images; inputs {inputs}, l2 {m.probe_l2:g}"
        + (f"; tried {tried}" if len(m.probe_candidates) > 1 else "") + f"); {chance}, normalised {m.probe_norm:.2f}",
        f"Neighbours:    {m.knn_k}-NN {m.knn_acc:.3f} (same folds, cosine); normalised {m.knn_norm:.2f}",
    ]


def format_advice(advice: Advice, root: str, overrides: list[str]) -> str:
    m, t = advice.measures, advice.thresholds
    lines = [
        f"Strategy advisor: {os.path.abspath(root)}",
        f"Backbone:      {m.backbone}, {m.feature_dim} features "
        f"({'loaded from' if m.cache_hit else 'cached in'} {_shown(m.feature_cache)})",
        f"Size:          {m.classes} classes, {m.train_images} training images; per class: median "
        f"{m.per_class_median:g}, min {m.per_class_min}; imbalance {m.imbalance:g}x",
    ]
    if m.probe_acc is not None:
        lines += _probe_lines(m)
    else:
        lines.append("Linear probe:  not measurable (a class has fewer than 2 training images)")
    if m.imagenet_confidence is not None:
        shown = list(m.imagenet_classes.items())
        top = ", ".join(f"{c}: {label} ({share:.0%})" for c, (label, share) in shown[:6])
        more = f", ... ({len(shown) - 6} more)" if len(shown) > 6 else ""
        lines.append(f"ImageNet head: mean confidence {m.imagenet_confidence:.2f}; commonest class: {top}{more}")
    floor = "n/a" if advice.floor is None else f"{advice.floor:.3f}"
    lines += [
        "",
        f"Case:          {advice.case}",
        f"Recommended:   {' '.join(advice.recommendation.overrides())}",
        f"Why:           {advice.reason}",
        f"Floor to beat: {floor} (the CV accuracy of the head strategy=frozen fits, at its chosen l2: slightly "
        "optimistic, as frozen's own report; a strategy that trains more should beat it on val)",
        "Check it:      " + "\n               ".join(sweep_commands(root, overrides, advice.recommendation)),
        f"(measured in {m.seconds.get('total', 0):.0f} s: scan {m.seconds.get('scan', 0):.0f} s, features "
        f"{m.seconds.get('features', 0):.0f} s, probe {m.seconds.get('probe', 0):.0f} s; thresholds: few < "
        f"{t.few_per_class}/class, large >= {t.large_per_class}/class, similar >= {t.similar}, very different < "
        f"{t.very_different}; validation images never used)",
    ]
    return "\n".join(lines)
