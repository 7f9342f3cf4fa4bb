"""`SweepReport`, the Hydra callback of conf/train.yaml (`_target_: transferlab.sweep_report.SweepReport`): the
report in the sweep directory after every multirun."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.sweep_report.report import build_report

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """Hydra callback: the comparison report (summary.csv/.md/.png) in the sweep directory after a multirun.

    Also creates the directory of a SQLite Optuna storage (SQLite does not create directories)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            paths = build_report(sweep_dir)
        except Exception:  # the jobs' results are on disk whatever happens here
            log.exception("Could not write the sweep report; rebuild it with: python -m transferlab.sweep_report %s",
                          sweep_dir)
            return
        log.info("Sweep report: %s", ", ".join(str(p) for p in paths.values()))
        print(Path(paths["summary.md"]).read_text())
