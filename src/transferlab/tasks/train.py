"""The training task: compose config -> build data, model, trainer -> fit -> summarise."""

from __future__ import annotations

import logging
import shlex
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.checkpoint_io import AtomicCheckpointIO
from transferlab.callbacks.ema import WarmupEMA
from transferlab.callbacks.head_baseline import FittedHeadBaseline
from transferlab.callbacks.hparams import log_hparams, run_hparams
from transferlab.callbacks.interrupt import GracefulInterrupt, RunInterrupted
from transferlab.callbacks.summary import RunSummary
from transferlab.config import register_resolvers, to_plain
from transferlab.config.checks import ConfigValueError, check_train_config
from transferlab.data.features import CachedFeatureDataModule
from transferlab.models.checkpoint import readable_checkpoint, resolve_checkpoint
from transferlab.models.classifier import TransferClassifier
from transferlab.tasks.advise import auto_strategy

log = logging.getLogger(__name__)
register_resolvers()  # before any config that uses ${launch_dir:} is resolved

# A frozen backbone is put in eval mode on purpose (BatchNorm statistics must not drift).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
# A head fit (strategy.head_fit on a frozen backbone) is solved in its training step: it has no optimizer.
warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group (callbacks, loggers); null entries are switched off."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def backbone_description(cfg: DictConfig) -> dict[str, Any]:
    """The backbone as plain data; `strategy.pretrained: false` is resolved here (random init), once."""
    backbone = dict(to_plain(cfg.backbone))
    if not cfg.strategy.get("pretrained", True):
        backbone["weights"] = None
    return backbone


def class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """`dataset.balance=loss`: n / (classes * count) per class (scikit-learn's "balanced" class weights)."""
    from sklearn.utils.class_weight import compute_class_weight

    present = sorted(set(labels))
    balanced = compute_class_weight("balanced", classes=np.array(present), y=np.array(labels))
    weights = dict(zip(present, balanced, strict=True))
    return [float(weights.get(k, 0.0)) for k in range(num_classes)]


def build_model(cfg: DictConfig, class_names: list[str], input_overrides: dict | None,
                train_labels: Sequence[int] = ()) -> TransferClassifier:
    """The model from the config: its description is plain data, its optimizer and scheduler are built from the
    current config's `_partial_` targets (never from a file), its loss from `recipe` and `dataset.balance`."""
    scheduler, interval = None, "epoch"
    if cfg.get("scheduler"):
        sched_cfg = OmegaConf.to_container(cfg.scheduler, resolve=True)
        interval = sched_cfg.pop("interval", "epoch")
        scheduler = instantiate(sched_cfg)
    recipe = to_plain(cfg.get("recipe")) or {}
    balance = cfg.dataset.get("balance", "none")
    weights = class_weights(train_labels, len(class_names)) if balance != "none" and len(train_labels) else None
    return TransferClassifier(
        backbone=backbone_description(cfg),
        head=to_plain(cfg.head),
        strategy=to_plain(cfg.strategy),
        class_names=class_names,
        input_overrides=input_overrides,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        scheduler_interval=interval,
        channels_last=bool(cfg.get("channels_last", False)),
        compile=bool(cfg.get("compile", False)),
        label_smoothing=recipe.get("label_smoothing", 0.0),
        mix={k: recipe[k] for k in ("mixup_alpha", "cutmix_alpha", "mix_prob") if k in recipe},
        class_weights=weights if balance == "loss" else None,
        head_fit_class_weights=weights,  # a solved head draws no batches: sampler and loss both weigh its rows
    )


def ema_callback(cfg: DictConfig, model: TransferClassifier) -> list[L.Callback]:
    """`recipe.ema_decay`: validate, checkpoint and export an EMA of the weights (not for a solved head)."""
    decay = OmegaConf.select(cfg, "recipe.ema_decay")
    if decay is None:
        return []
    if model.fits_head_only:
        log.info("recipe.ema_decay ignored: strategy=%s solves its head, there are no steps to average.",
                 model.strategy.name)
        return []
    return [WarmupEMA(decay=float(decay), warmup=bool(OmegaConf.select(cfg, "recipe.ema_warmup", default=True)))]


def use_feature_cache(setting: bool | str, model: TransferClassifier) -> bool:
    """`dataset.cache_features`: `auto` caches exactly when the strategy never trains the backbone."""
    frozen = model.strategy.backbone_always_frozen(model.stages)
    if setting == "auto":
        return frozen
    if setting and not frozen:
        log.warning("dataset.cache_features ignored: strategy %r trains the backbone.", model.strategy.name)
    return bool(setting) and frozen


def cached_features(cfg: DictConfig, model: TransferClassifier, datamodule, trainer: L.Trainer):
    """Swap images for cached backbone features (the backbone is a constant function of the image); a head fit
    (`strategy.head_fit`) gets them as one full batch."""
    device = trainer.strategy.root_device
    layout = torch.channels_last if model.channels_last else torch.contiguous_format
    model.backbone.to(device, memory_format=layout)
    data = CachedFeatureDataModule(
        datamodule, model.backbone, backbone_description(cfg), cfg.paths.cache_dir,
        views=int(cfg.dataset.get("feature_views", 0)), seed=cfg.seed, channels_last=model.channels_last,
        full_batch=model.fits_head_only,
    )
    data.setup("fit")
    model.backbone.to("cpu", memory_format=torch.contiguous_format)
    return data


def fit_head_first(cfg: DictConfig, model: TransferClassifier, datamodule, trainer: L.Trainer) -> FittedHeadBaseline:
    """LP-FT's first phase: the head fitted to convergence on cached features, before the backbone trains.
    It takes seconds once the features are cached, so an interruption during it reruns it, and a run resumed
    from any later checkpoint has the fitted head (and its report). Returns the callback that enters the head's
    val score as the one fine-tuning has to beat (its checkpoint is saved when fine-tuning starts)."""
    features = cached_features(cfg, model, datamodule, trainer)
    report = model.fit_head(*features.fit_arrays())
    # What fine-tuning has to beat: the fitted head on the cached val features (the run's first validation
    # comes after a fine-tuning epoch). Kept in the report, so summary.json and checkpoints carry it.
    with torch.no_grad():
        logits = model.forward_head(features.val_features.to(model.device, model.dtype))
    baseline = FittedHeadBaseline(logits, features.val_labels)
    report["val_accuracy"] = baseline.scores["val/acc"]
    tempered = "" if (report.get("temperature") or 1.0) == 1.0 else (
        f"; divided by {report['temperature']:.2f} to logit std {model.strategy.head_fit['max_logit_std']:g}")
    log.info("Head fitted on cached features in %.1f s: l2 %g, cross-validated accuracy %s (%d folds); val "
             "accuracy %.4f before fine-tuning%s", report["seconds"], report["l2"], report["cv_accuracy"],
             report["folds"], report["val_accuracy"], tempered)
    return baseline


def find_lr(cfg: DictConfig, model: TransferClassifier, data, trainer: L.Trainer) -> dict[str, Any]:
    """`tune.lr_find=true`: Lightning's learning-rate finder (an exponential lr sweep over `tune.num_training`
    steps; its suggestion is the steepest fall of the loss) sets optimizer.lr for this run. The Tuner saves the
    model, optimizer and loop state before the sweep and restores them after it; the seed is set again, so the
    training that follows is the run it would have been with that lr from the start."""
    from lightning.pytorch.tuner import Tuner

    settings = cfg.tune
    # The finder stops at max_steps = num_training *or* at trainer.max_epochs, whichever comes first; let a short
    # run's epochs not cut the sweep short (restored below).
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, settings.num_training)
    try:
        result = Tuner(trainer).lr_find(model, datamodule=data, min_lr=settings.min_lr, max_lr=settings.max_lr,
                                        num_training=settings.num_training, update_attr=False)
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggestion = None if result is None else result.suggestion()
    if suggestion is None:
        raise ConfigValueError(
            f"tune.lr_find: no suggestion between tune.min_lr={settings.min_lr} and tune.max_lr={settings.max_lr} "
            "(the loss never fell). Widen the range, raise tune.num_training, or set optimizer.lr yourself.")
    factory = model.optimizer_factory
    model.optimizer_factory = partial(factory.func, *factory.args, **{**factory.keywords, "lr": float(suggestion)})
    L.seed_everything(cfg.seed, workers=True)
    log.info("Learning-rate finder: optimizer.lr=%.3g (was %s)", suggestion, factory.keywords.get("lr"))
    return {"suggested_lr": float(suggestion), "configured_lr": factory.keywords.get("lr"),
            "min_lr": settings.min_lr, "max_lr": settings.max_lr, "steps": len(result.results.get("lr", []))}


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this run from `{ckpt}` (filled in on interruption): a single run in its own
    directory; a sweep job by re-running its sweep in the sweep's directory (finished jobs are skipped,
    unfinished ones resume from their last.ckpt: transferlab.tasks.job)."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.sweep.dir)
        recorded = sweep_dir / "multirun.yaml"  # Hydra's record of the sweep, with its comma-separated overrides
        sweep = OmegaConf.select(OmegaConf.load(recorded), "hydra.overrides.task") if recorded.is_file() else None
        words = ["python", "train.py", "-m", *[o for o in (sweep or []) if not o.startswith("hydra.sweep.dir=")],
                 f"hydra.sweep.dir={sweep_dir}"]
        return " ".join(shlex.quote(w) for w in words)
    overrides: list[str] = []
    if hydra_cfg is not None:
        overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("ckpt_path=", "hydra."))]
    words = ["python", "train.py", *overrides, "ckpt_path={ckpt}", f"hydra.run.dir={cfg.paths.output_dir}"]
    return " ".join(w if w == "ckpt_path={ckpt}" else shlex.quote(w) for w in words)


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Run one training job and return its summary (val/acc_best, checkpoints, timings...)."""
    OmegaConf.resolve(cfg)  # fail now, naming the key, rather than mid-training
    extra_callbacks = [*extra_callbacks, *auto_strategy(cfg)]  # strategy=auto: the advisor's choice (tasks/advise.py)
    check_train_config(cfg)  # and out-of-range values, before any data or model

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    model = build_model(cfg, datamodule.class_names, datamodule.input_overrides,
                        train_labels=getattr(datamodule, "train_labels", ()))
    datamodule.set_input_spec(model.input_spec)
    log.info("Input: %s", model.input_spec)

    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = [*_instantiate_all(cfg.get("callbacks")), *extra_callbacks, *ema_callback(cfg, model)]
    if not loggers or model.fits_head_only:  # no logger, or no optimizer (a head fit): LearningRateMonitor refuses
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()])

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    log_hparams(trainer.loggers, run_hparams(cfg, hydra_cfg.runtime.choices if hydra_cfg else None,
                                             hydra_cfg.overrides.task if hydra_cfg else ()))

    if model.fits_head_only and trainer.world_size > 1:
        raise ConfigValueError(
            f"strategy={model.strategy.name} solves its head in seconds in one process; it does not run under "
            f"{trainer.world_size} processes. Drop trainer.strategy=ddp (or set trainer.devices=1), or set "
            "strategy.head_fit.enabled=false to train the head by SGD epochs.")
    cache = cfg.dataset.get("cache_features", "auto")
    if model.fits_head_only and not use_feature_cache(cache, model):
        raise ConfigValueError(
            f"dataset.cache_features={str(cache).lower()}: strategy={model.strategy.name} fits its head on cached "
            "features. Use dataset.cache_features=auto, or strategy.head_fit.enabled=false to train the head on "
            "images by SGD.")
    if model.fits_head_only and trainer.limit_train_batches != 1.0:
        log.info("trainer.limit_train_batches=%s ignored: a head fit uses every training row (one batch).",
                 trainer.limit_train_batches)
        trainer.limit_train_batches = 1.0
    fit_data = datamodule
    if use_feature_cache(cache, model):
        fit_data = cached_features(cfg, model, datamodule, trainer)
    ckpt_path = cfg.get("ckpt_path")
    resume = readable_checkpoint(resolve_checkpoint(ckpt_path, "last")) if ckpt_path else None
    if model.strategy.fits_head and not model.fits_head_only and resume is None:
        trainer.callbacks.append(fit_head_first(cfg, model, datamodule, trainer))
    interrupt = next((c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)), None)
    if interrupt is not None:
        interrupt.resume_command = resume_command(cfg)
    lr_found = None
    if cfg.get("tune", {}).get("lr_find"):
        if model.fits_head_only or resume is not None:
            log.warning("tune.lr_find skipped: %s.", "the head is solved, not stepped" if model.fits_head_only
                        else "a resumed run keeps its optimizer")
        else:
            lr_found = find_lr(cfg, model, fit_data, trainer)
            for callback in trainer.callbacks:
                if isinstance(callback, RunSummary):
                    callback.extra["lr_find"] = lr_found
    try:
        trainer.fit(model, datamodule=fit_data, ckpt_path=resume)
    except SIGTERMException:  # Lightning's stop request (SIGTERM, or Ctrl-C/SIGUSR1 through GracefulInterrupt)
        if interrupt is None or interrupt.signum is None:
            raise
        checkpoint = interrupt.checkpoint
        raise RunInterrupted(interrupt.signum, checkpoint, interrupt.command(str(checkpoint))) from None

    summary_cb = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
    summary = dict(summary_cb.summary) if summary_cb else {}
    summary.setdefault("val/acc_best", float(trainer.callback_metrics.get("val/acc_best", float("nan"))))
    return summary
