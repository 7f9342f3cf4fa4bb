"""TensorBoard's HParams view as a comparison table: the choices that define a run, and the metrics to sort by.

Lightning's `log_hyperparams` would log the whole flattened config (over a hundred keys: callback targets,
paths) and write each declared metric as a fake value at step 0. Here the experiment lists only the run's
choices (config groups chosen, the command-line overrides, and the key hyperparameters) and declares the
metrics by name; their values are the scalars the run really logs (`HPARAM_METRICS`), so
`tensorboard --logdir <sweep dir>` shows every job of a sweep in one sortable table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

# Scalars a run logs that the HParams table shows as columns (the module's, the dashboards', RunSummary's).
HPARAM_METRICS = ("val/acc_best", "val/acc", "val/loss", "val/f1_macro", "run/wall_time_s")


@rank_zero_only  # other ranks' TensorBoard experiment is a no-op stand-in
def log_hparams(loggers: Iterable[Any], params: Mapping[str, Any], metrics: Iterable[str] = HPARAM_METRICS) -> None:
    """Write the HParams experiment and session for each TensorBoard logger; declare `metrics` without values."""
    from torch.utils.tensorboard.summary import hparams

    metric_names = {name: None for name in metrics}  # names only: the values are the run's own scalars
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        experiment, session_start, session_end = hparams(dict(params), metric_names)
        writer = logger.experiment.file_writer
        for summary in (experiment, session_start, session_end):
            writer.add_summary(summary)
        writer.flush()
