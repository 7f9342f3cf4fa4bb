"""How a classifier's predictions are scored and shown, shared by the eval task and the training dashboards.

metrics.py: the numbers (torchmetrics); plots.py: the figures (matplotlib); stats.py: comparing runs on the same
images (numpy, scipy). Imports only data/ (never tasks/ or callbacks/), so both the task and the callbacks can
build on it.

The metrics names below load on first use (PEP 562), so that importing `transferlab.evaluation.stats` (the sweep
report does) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PerClass", "compute_metrics", "confident_mistakes", "per_class_metrics"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from transferlab.evaluation import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
