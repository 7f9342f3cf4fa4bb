"""The training task: the composed config -> settings -> data, model, plan, trainer -> phases -> run record.

`train(cfg)` turns the composed config into typed settings once (`transferlab.config.settings`), builds the
data and the model from them, decides the plan of phases (`transferlab.training.plan`: `fit_head` and/or
`fit`), configures the trainer and its callbacks once from that plan, runs the phases and writes the run
record (`transferlab.record`: summary.json).
"""

from __future__ import annotations

import logging
import shlex
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.checkpoint_io import AtomicCheckpointIO
from transferlab.callbacks.ema import WarmupEMA
from transferlab.callbacks.head_baseline import FittedHeadBaseline
from transferlab.callbacks.hparams import log_hparams
from transferlab.callbacks.interrupt import GracefulInterrupt
from transferlab.callbacks.summary import RunSummary
from transferlab.config import register_resolvers
from transferlab.config.command import quoted
from transferlab.config.settings import RunSettings
from transferlab.data.features import CachedFeatureDataModule
from transferlab.models.checkpoint import readable_checkpoint, resolve_checkpoint
from transferlab.models.classifier import TransferClassifier
from transferlab.record import Phase, report_lines
from transferlab.training.audit import audit_run, leak_free_accuracy, log_quality, record_of
from transferlab.training.fit import find_lr, fit
from transferlab.training.fit_head import fit_head, log_head_fit
from transferlab.training.plan import FIT, FIT_HEAD, Plan, check_processes, make_plan
from transferlab.training.resume import check_resume, start_from_weights

log = logging.getLogger(__name__)
register_resolvers()  # before any config that uses ${launch_dir:} is resolved

# A frozen backbone is put in eval mode on purpose (BatchNorm statistics must not drift).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """`dataset.balance=loss`: n / (classes * count) per class (scikit-learn's "balanced" class weights)."""
    from sklearn.utils.class_weight import compute_class_weight

    present = sorted(set(labels))
    balanced = compute_class_weight("balanced", classes=np.array(present), y=np.array(labels))
    weights = dict(zip(present, balanced, strict=True))
    return [float(weights.get(k, 0.0)) for k in range(num_classes)]


def build_model(settings: RunSettings, class_names: list[str], input_overrides: dict | None,
                weights: list[float] | None = None) -> TransferClassifier:
    """The model from the settings: its description is plain data, its optimizer and scheduler are built from the
    current config's `_partial_` targets (never from a file), its loss from `recipe` and `dataset.balance`."""
    recipe = settings.recipe
    return TransferClassifier(
        backbone=settings.backbone_description(),
        head=asdict(settings.head),
        strategy=settings.strategy,
        class_names=class_names,
        input_overrides=input_overrides,
        optimizer=instantiate(settings.optimizer),
        scheduler=instantiate(settings.scheduler) if settings.scheduler else None,
        scheduler_interval=settings.scheduler_interval,
        channels_last=settings.channels_last,
        compile=settings.compile,
        label_smoothing=recipe.label_smoothing,
        mix={"mixup_alpha": recipe.mixup_alpha, "cutmix_alpha": recipe.cutmix_alpha, "mix_prob": recipe.mix_prob},
        class_weights=weights if settings.dataset.balance == "loss" else None,
    )


def build_callbacks(settings: RunSettings, plan: Plan, has_logger: bool, clock: float) -> list[L.Callback]:
    """The config's callbacks, set up for this run (the run's clock, the command that resumes it), and what the
    plan adds: the fitted head as the score to beat (a `fit_head` phase before `fit`), an EMA of the weights
    (`recipe.ema_decay`, for a `fit` phase). A RunSummary is always there: the run record is taken from it."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = [instantiate(spec) for spec in settings.callbacks.values()]
    if not any(isinstance(c, RunSummary) for c in callbacks):
        callbacks.append(RunSummary())
    for callback in callbacks:
        if isinstance(callback, RunSummary):
            callback.start = clock
        elif isinstance(callback, GracefulInterrupt):
            callback.resume_command = resume_command(settings)
    if not has_logger:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if plan.fits_head and plan.fits_network:
        callbacks.append(FittedHeadBaseline())
    decay = settings.recipe.ema_decay
    if decay is not None and plan.fits_network:
        callbacks.append(WarmupEMA(decay=float(decay), warmup=settings.recipe.ema_warmup))
    elif decay is not None:
        log.info("recipe.ema_decay ignored: strategy=%s has no fit phase, there are no steps to average.",
                 plan.strategy)
    return callbacks


def feature_data(settings: RunSettings, model: TransferClassifier, datamodule, device: torch.device,
                 weights: str | None = None):
    """Images swapped for cached backbone features (the backbone is a constant function of the image).
    `weights`: the checkpoint the backbone was loaded from (`resume=false`), part of the cache key."""
    layout = torch.channels_last if model.channels_last else torch.contiguous_format
    model.backbone.to(device, memory_format=layout)
    backbone = settings.backbone_description() if weights is None else {**settings.backbone_description(),
                                                                        "weights": weights}
    data = CachedFeatureDataModule(
        datamodule, model.backbone, backbone, settings.cache_dir,
        views=settings.dataset.feature_views, seed=settings.seed, channels_last=model.channels_last,
        progress=settings.progress_bar)
    data.setup("fit")
    model.backbone.to("cpu", memory_format=torch.contiguous_format)
    return data


def resume_command(settings: RunSettings) -> str:
    """The command that continues this run from `{ckpt}` (filled in on interruption): a single run in its own
    directory; a sweep job by re-running its sweep in the sweep's directory (finished jobs are skipped,
    unfinished ones resume from their last.ckpt: transferlab.jobs)."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.sweep.dir)
        recorded = sweep_dir / "multirun.yaml"  # Hydra's record of the sweep, with its comma-separated overrides
        sweep = OmegaConf.select(OmegaConf.load(recorded), "hydra.overrides.task") if recorded.is_file() else None
        words = ["python", "train.py", "-m", *[o for o in (sweep or []) if not o.startswith("hydra.sweep.dir=")],
                 f"hydra.sweep.dir={quoted(str(sweep_dir))}"]
        return " ".join(shlex.quote(w) for w in words)
    overrides: list[str] = []
    if hydra_cfg is not None:
        # resume=false started this run from other weights: its own checkpoint continues it
        overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("ckpt_path=", "resume=", "hydra."))]
    # the run directory as Hydra's grammar reads it back (a space, `=`, `é` or a quote in it), then for the shell
    words = ["python", "train.py", *overrides, "ckpt_path={ckpt}", f"hydra.run.dir={quoted(str(settings.output_dir))}"]
    return " ".join(w if w == "ckpt_path={ckpt}" else shlex.quote(w) for w in words)


@dataclass
class Built:
    """What a run trains: its settings, its data (prepared and scanned) and its model."""

    settings: RunSettings
    datamodule: Any
    model: TransferClassifier
    class_weights: list[float] | None  # dataset.balance != none: n / (classes * count) per class
    head_fit: Any = None  # the fit_head phase's result (training.fit_head.HeadFitResult), once it ran


def build(config: DictConfig | RunSettings) -> Built:
    """The data and the model a training run of this config (or these settings) trains, as `train` builds them
    (also for notebooks, benchmarks and tests): the data prepared and scanned, the model's input spec set on it."""
    settings = config if isinstance(config, RunSettings) else settings_of(config)
    datamodule = settings.build_datamodule()
    datamodule.prepare_data()
    labels = getattr(datamodule, "train_labels", ())
    weights = (class_weights(labels, len(datamodule.class_names))
               if settings.dataset.balance != "none" and len(labels) else None)
    model = build_model(settings, datamodule.class_names, datamodule.input_overrides, weights)
    datamodule.set_input_spec(model.input_spec)
    model.data_fingerprint = getattr(datamodule, "fingerprint", None)  # kept in its checkpoints (training.resume)
    return Built(settings, datamodule, model, weights)


def settings_of(cfg: DictConfig) -> RunSettings:
    """The composed config as checked settings, with Hydra's choices and overrides for the HParams table."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    return RunSettings.from_config(cfg, hydra_cfg.runtime.choices if hydra_cfg else None,
                                   hydra_cfg.overrides.task if hydra_cfg else ())


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Run one training job and return its record as a dict (val/acc_best, checkpoints, timings...)."""
    clock = time.perf_counter()  # the run's clock: data preparation and feature caching included
    settings = settings_of(cfg)  # every value checked, before any data or model
    # the checkpoint found and its file checked before any data is read
    checkpoint = readable_checkpoint(resolve_checkpoint(settings.ckpt_path, "last")) if settings.ckpt_path else None
    extra: dict[str, Any] = {}
    if settings.strategy.name == "auto":  # the advisor's choice (transferlab.advise)
        from transferlab.advise import auto_strategy

        chosen, extra["advice"] = auto_strategy(settings)
        settings = settings.with_strategy(chosen)

    L.seed_everything(settings.seed, workers=True)
    built = build(settings)
    model = built.model
    log.info("Input: %s", model.input_spec)
    plan = make_plan(model.strategy, model.stages, settings.dataset.cache_features)
    log.info("Plan: %s", plan.describe())
    resume = initial = None  # continue the checkpoint's run (if it is this run), or start a new one from its weights
    if checkpoint is not None and settings.resume:
        check_resume(checkpoint, model, plan)
        resume = checkpoint
    elif checkpoint is not None:
        start_from_weights(checkpoint, model)
        initial = extra["initial_weights"] = str(checkpoint.absolute())  # in summary.json

    loggers = [instantiate(spec) for spec in settings.loggers.values()]
    callbacks = [*build_callbacks(settings, plan, bool(loggers), clock), *extra_callbacks]
    trainer: L.Trainer = instantiate(settings.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()])
    check_processes(plan, trainer.world_size)
    log_hparams(trainer.loggers, settings.hparams)
    monitor = next(c for c in trainer.callbacks if isinstance(c, RunSummary))

    # the features: what a backbone that never trains feeds its head, and what a fit_head phase to run needs
    needs_features = plan.cache_features or (plan.fits_head and not (resume and plan.fits_network))
    device = trainer.strategy.root_device
    features = feature_data(settings, model, built.datamodule, device, initial) if needs_features else None
    phases: list[Phase] = []
    fitted_head_only: dict[str, Any] = {}
    if plan.fits_head:
        start = time.perf_counter()
        fitted_head_only = fit_head_phase(settings, plan, trainer, built, features, monitor, resume)
        phases.append(Phase(FIT_HEAD, round(time.perf_counter() - start, 2)))
    quality = None
    if settings.dataset.quality == "deep" and features is not None and trainer.is_global_zero:
        # on the features the run computed anyway, before any fine-tuning (its seconds: quality.seconds)
        quality = audit_run(settings.dataset.root, model, features, built.head_fit)
        if quality is not None:
            extra["quality"] = record_of(quality)
            log_quality(trainer.loggers, quality)
    if plan.fits_network:
        start = time.perf_counter()
        data = features if plan.cache_features else built.datamodule
        if settings.tune.lr_find:
            if resume is not None:
                log.warning("tune.lr_find skipped: a resumed run keeps its optimizer.")
            else:
                extra["lr_find"] = find_lr(tuner(settings), model, data, settings.tune, settings.seed)
        fit(trainer, model, data, ckpt_path=resume)
        phases.append(Phase(FIT, round(time.perf_counter() - start, 2), epochs=trainer.current_epoch))
    elif settings.tune.lr_find:
        log.warning("tune.lr_find skipped: strategy=%s has no fit phase (its head is not stepped by an optimizer).",
                    plan.strategy)

    if quality is not None and quality.leaked_val:  # the val figure also without the val images seen in train
        extra["val_acc_leak_free"] = leak_free_accuracy(Path(settings.output_dir) / "val_predictions.csv",
                                                        quality.leaked_val, quality.root)
    record = monitor.record(trainer, model, phases=phases, extra=extra, skipped=skipped_files(built, features),
                            **fitted_head_only)
    for logger in trainer.loggers:  # a column of TensorBoard's HParams table (callbacks.hparams)
        logger.log_metrics({"run/wall_time_s": record.wall_time_s}, step=trainer.global_step)
    if trainer.is_global_zero:
        print("\n".join(report_lines(record)))
        record.write(settings.output_dir)
    return record.to_dict()


def skipped_files(built: Built, features: Any) -> dict[str, Any] | None:
    """What summary.json says the run left out (dataset.on_bad_file=skip): the images' and the features' (None:
    a datamodule that does not tell)."""
    sources = [d for d in (built.datamodule, features) if hasattr(d, "skipped_files")]
    if not sources:
        return None
    files = list(dict.fromkeys(p for d in sources for p in d.skipped_files()))
    return {"count": len(files), "files": files}


def fit_head_phase(settings: RunSettings, plan: Plan, trainer: L.Trainer, built: Built, features,
                   monitor: RunSummary, resume: Path | None) -> dict[str, Any]:
    """The `fit_head` phase. Before `fit` (lpft): the fitted head is entered as the score to beat, or, resumed
    from a later checkpoint that holds it, nothing is left to do. As the whole plan (frozen): the head (fitted,
    or a checkpoint's) is validated by Lightning's validate loop (TensorBoard, dashboards, val_predictions.csv)
    and saved; returns what the run record takes from that (its checkpoints, no fine-tuning epoch)."""
    model = built.model
    if resume is not None and plan.fits_network:
        return {}
    if resume is None:
        result = fit_head(model, features, settings.strategy.head_fit, trainer.strategy.root_device,
                          built.class_weights, temper_for_fit=plan.fits_network)
        log_head_fit(trainer.loggers, result)
        built.head_fit = result
        if plan.fits_network:
            baseline = next(c for c in trainer.callbacks if isinstance(c, FittedHeadBaseline))
            baseline.enter(result.val_logits, result.val_labels)
            return {}
        monitor.note_baseline(result.val_accuracy)
    else:
        restore_fitted_head(model, resume)
        monitor.note_baseline(float((model.head_fit_report or {}).get("val_accuracy") or float("nan")))
    trainer.validate(model, datamodule=features, verbose=False)
    return {**save_fitted_head(trainer, model), "best_epoch": -1, "epochs": 0}


def restore_fitted_head(model: TransferClassifier, checkpoint: Path) -> None:
    """`ckpt_path=...` on a plan of `fit_head` alone: the checkpoint's head (and its report) is the run's."""
    from transferlab.models.classifier import head_fit_report_from

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    model.head_fit_report = head_fit_report_from(state.get("head_fit"))


def save_fitted_head(trainer: L.Trainer, model: TransferClassifier) -> dict[str, str | None]:
    """A plan without `fit` has no epoch to checkpoint: the fitted head is saved once, as the best checkpoint
    (`head_fit-acc<val acc>.ckpt`, where the monitored checkpoint callback keeps its files) and as last.ckpt."""
    acc = float(trainer.callback_metrics.get("val/acc", float("nan")))
    best_cb = next((c for c in trainer.checkpoint_callbacks if c.monitor and c.dirpath), None)
    last_cb = next((c for c in trainer.checkpoint_callbacks if not c.monitor and c.dirpath), None)
    saved: dict[str, str | None] = {"best_checkpoint": None, "last_checkpoint": None}
    if best_cb is not None:
        path = str(Path(best_cb.dirpath) / f"head_fit-acc{acc:.4f}{best_cb.FILE_EXTENSION}")
        trainer.save_checkpoint(path, weights_only=False)  # the full state: a run resumes from it
        saved["best_checkpoint"] = path
    if last_cb is not None:
        path = str(Path(last_cb.dirpath) / f"{last_cb.filename or 'last'}{last_cb.FILE_EXTENSION}")
        trainer.save_checkpoint(path, weights_only=False)  # the full state: a run resumes from it
        saved["last_checkpoint"] = path
    return saved


def tuner(settings: RunSettings) -> L.Trainer:
    """A trainer for the learning-rate finder alone (`training.fit.find_lr`): the run's devices and precision,
    no logger, callbacks or checkpoints, and epochs enough for the finder's steps."""
    arguments = {**settings.trainer, "logger": False, "callbacks": [], "enable_checkpointing": False,
                 "enable_progress_bar": False, "enable_model_summary": False,
                 "max_epochs": max(settings.max_epochs or 1, settings.tune.num_training),
                 "default_root_dir": str(Path(settings.output_dir) / "lr_find")}
    return instantiate(arguments)
