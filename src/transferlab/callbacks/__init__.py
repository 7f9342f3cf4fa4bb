"""Lightning callbacks that make a run report itself: summary, dataset report, TensorBoard dashboards."""

from transferlab.callbacks.dashboards import ValidationDashboards
from transferlab.callbacks.dataset_report import DatasetReportCallback
from transferlab.callbacks.summary import RunSummary

__all__ = ["DatasetReportCallback", "RunSummary", "ValidationDashboards"]
