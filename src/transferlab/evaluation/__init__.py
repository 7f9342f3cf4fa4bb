"""How a classifier's predictions are scored and shown, shared by the eval task and the training dashboards.

metrics.py: the numbers (torchmetrics); plots.py: the figures (matplotlib). Imports only data/ (never tasks/
or callbacks/), so both the task and the callbacks can build on it.
"""

from transferlab.evaluation.metrics import PerClass, compute_metrics, confident_mistakes, per_class_metrics

__all__ = ["PerClass", "compute_metrics", "confident_mistakes", "per_class_metrics"]
