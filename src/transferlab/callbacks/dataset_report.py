"""Record what a run trained on: the dataset doctor's report as JSON next to the run and in TensorBoard."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from transferlab.files import atomic_write_json


class DatasetReportCallback(L.Callback):
    """When the trainer first sets up (to fit, or to validate a head fitted on cached features), write
    `<default_root_dir>/<filename>` and log the report as TensorBoard text.

    Reads the report from the datamodule's `report_dict()` / `report` (FolderDataModule, and
    CachedFeatureDataModule passing its images' through); does nothing for a datamodule without them."""

    def __init__(self, filename: str = "dataset_report.json", tag: str = "dataset/report") -> None:
        self.filename = filename
        self.tag = tag
        self.path: str | None = None
        self._done = False

    @rank_zero_only
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if self._done or datamodule is None or not hasattr(datamodule, "report_dict"):
            return
        self._done = True
        data = datamodule.report_dict()
        if trainer.default_root_dir:
            self.path = os.path.join(trainer.default_root_dir, self.filename)
            atomic_write_json(self.path, data)
        text = _markdown(datamodule.report.format(limit=50), data)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(self.tag, text, global_step=0)


def _markdown(report: str, data: dict[str, Any]) -> str:
    """TensorBoard renders text as Markdown: indent the report so it keeps its layout."""
    skipped = data.get("skipped") or []
    head = (f"**{data['samples']['train']} train / {data['samples']['val']} val images**, "
            f"on_bad_file={data['on_bad_file']}, {len(skipped)} skipped")
    return head + "\n\n" + "\n".join("    " + line for line in report.splitlines())
