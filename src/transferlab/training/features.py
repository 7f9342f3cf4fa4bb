"""The backbone's features of a folder, through the feature cache: what the advisor measures and the quality
check audits, from the same cache entry a `strategy=frozen` run of these settings trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from transferlab.config.settings import RunSettings


@dataclass
class FolderFeatures:
    datamodule: Any  # the dataset option's datamodule, prepared and scanned (its report: the doctor's)
    backbone: Any  # models.backbones.Backbone (its pretrained classifier: the advisor's ImageNet head)
    features: Any  # data.features.CachedFeatureDataModule, set up: train_features (1, N, D), val_features (M, D)
    scanned_s: float = 0.0
    extracted_s: float = 0.0


def folder_features(settings: RunSettings) -> FolderFeatures:
    """Scan the data (the doctor runs), build the backbone, and load or compute its plain (un-augmented)
    features of every training and validation image."""
    import time

    from transferlab.data.features import CachedFeatureDataModule
    from transferlab.models.backbones import create_backbone

    start = time.perf_counter()
    datamodule = settings.build_datamodule()  # the dataset option, as the training task builds it
    datamodule.prepare_data()
    datamodule.scan()
    scanned = time.perf_counter()
    description = settings.backbone_description()
    backbone = create_backbone(**description)
    datamodule.set_input_spec(backbone.input_spec.override(**datamodule.input_overrides))
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.module.to(device, memory_format=layout)
    features = CachedFeatureDataModule(datamodule, backbone.module, description, settings.cache_dir,
                                       views=0, seed=settings.seed, channels_last=settings.channels_last,
                                       progress=settings.progress_bar)
    features.setup("fit")
    backbone.module.to("cpu", memory_format=torch.contiguous_format)
    return FolderFeatures(datamodule, backbone, features, scanned - start, time.perf_counter() - scanned)
