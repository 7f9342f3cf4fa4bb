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
from omegaconf import DictConfig, OmegaConf

# Scalars a run logs that the HParams table shows as columns (the module's, the dashboards', RunSummary's).
HPARAM_METRICS = ("val/acc_best", "val/acc", "val/loss", "val/f1_macro", "run/wall_time_s")

# Hyperparameters shown for every run, whatever was overridden.
KEY_HPARAMS = ("strategy.name", "backbone.name", "head.kind", "optimizer.lr", "optimizer.weight_decay",
               "dataset.name", "dataset.batch_size", "dataset.fold", "trainer.max_epochs", "trainer.precision",
               "seed")


# Groups whose option follows another's (train.yaml: `dataset_trainer: ${dataset}`): a column would repeat it.
DERIVED_GROUPS = ("dataset_trainer",)


def run_hparams(cfg: DictConfig, choices: Mapping[str, Any] | None = None,
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The choices that define a run, as scalars TensorBoard can show (ints, floats and bools kept as such)."""
    params: dict[str, Any] = {}
    for group, option in sorted((choices or {}).items()):
        if option is not None and not group.startswith("hydra") and group not in DERIVED_GROUPS:
            params[f"group/{group}"] = str(option)
    for key in KEY_HPARAMS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            params[key] = value if isinstance(value, bool | int | float | str) else str(value)
    overrides = list(overrides)
    params["overrides"] = " ".join(overrides) if overrides else "(none)"
    return params


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
