"""The training task: compose config -> build data, model, trainer -> fit -> summarise."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.summary import RunSummary
from transferlab.config import flatten, register_resolvers, resolve_checkpoint, to_plain
from transferlab.data.features import CachedFeatureDataModule
from transferlab.models.classifier import TransferClassifier

log = logging.getLogger(__name__)
register_resolvers()  # before any config that uses ${packaged_weights:...} is resolved

# A frozen backbone is put in eval mode on purpose (BatchNorm statistics must not drift).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group (callbacks, loggers); null entries are switched off."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def build_model(cfg: DictConfig, class_names: list[str], input_overrides: dict | None) -> TransferClassifier:
    return TransferClassifier(
        backbone=to_plain(cfg.backbone),
        head=to_plain(cfg.head),
        strategy=to_plain(cfg.strategy),
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        class_names=class_names,
        input_overrides=input_overrides,
    )


def cached_features(cfg: DictConfig, model: TransferClassifier, datamodule, trainer: L.Trainer):
    """Swap images for cached backbone features when the strategy never trains the backbone."""
    if not model.strategy.backbone_always_frozen(model.stages):
        log.warning("strategy.cache_features ignored: strategy %r trains the backbone.", model.strategy.name)
        return datamodule
    device = trainer.strategy.root_device
    channels_last = bool(cfg.get("channels_last", False))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.backbone.to(device, memory_format=layout)
    data = CachedFeatureDataModule(
        datamodule, model.backbone, to_plain(cfg.backbone), cfg.paths.cache_dir,
        views=model.strategy.feature_views, seed=cfg.seed, channels_last=channels_last,
    )
    data.setup("fit")
    model.backbone.to("cpu", memory_format=torch.contiguous_format)
    model.features_input = True
    return data


def speed_up(model: TransferClassifier, channels_last: bool, compile_backbone: bool) -> None:
    """Apply the speed switches to a model that trains on images (not on cached features)."""
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
        model.channels_last = True
    if compile_backbone:
        model.backbone.compile()  # in place: parameter names, hence checkpoints, stay as they were


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job and return its summary (val/acc_best, checkpoints, timings...)."""
    OmegaConf.resolve(cfg)  # fail now, naming the key, rather than mid-training

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    model = build_model(cfg, datamodule.class_names, datamodule.input_overrides)
    datamodule.set_input_spec(model.input_spec)
    log.info("Input: %s", model.input_spec)

    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not loggers:  # logger=none: LearningRateMonitor has nowhere to write and would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    hparams = flatten(to_plain(cfg))
    hparams["dataset/classes"] = ",".join(datamodule.class_names)
    for logger in trainer.loggers:
        # Declaring val/acc_best here makes TensorBoard's HParams view show each run's best accuracy.
        logger.log_hyperparams(hparams, metrics={"val/acc_best": 0.0})

    fit_data = datamodule
    if model.strategy.cache_features:
        fit_data = cached_features(cfg, model, datamodule, trainer)
    if not model.features_input:
        speed_up(model, channels_last=cfg.get("channels_last", False), compile_backbone=cfg.get("compile", False))
    try:
        trainer.fit(model, datamodule=fit_data, ckpt_path=resolve_checkpoint(cfg.get("ckpt_path")))
    finally:
        model.features_input = False  # the trained model takes images again

    summary_cb = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
    summary = dict(summary_cb.summary) if summary_cb else {}
    summary.setdefault("val/acc_best", float(trainer.callback_metrics.get("val/acc_best", float("nan"))))
    return summary
