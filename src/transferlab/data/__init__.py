"""Folder scanning, transforms, dataset sources and the LightningDataModule."""

from transferlab.data.folders import DatasetLayoutError, FolderSplits, scan_folder

__all__ = ["DatasetLayoutError", "FolderDataModule", "FolderSplits", "scan_folder"]


def __getattr__(name: str):  # PEP 562: `python -m transferlab.data.doctor` must not pay for importing Lightning
    if name == "FolderDataModule":
        from transferlab.data.datamodule import FolderDataModule

        return FolderDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
