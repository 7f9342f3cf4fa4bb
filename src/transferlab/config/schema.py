"""The config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Each group's schema is stored as the node `<group>/schema`, and every YAML option of the group extends it
(Hydra's "extending configs" pattern):

    # conf/strategy/frozen.yaml
    defaults:
      - schema
      - _self_
    name: frozen
    train:
      head: 1.0

so an option states only what differs from the defaults below, every option has every key (any key can be
overridden for any option: `strategy=finetune strategy.unfreeze_at=2`), an unknown key is an error and a value
of the wrong type fails at composition naming the key (`strategy.trainable_stages=two`), before any data is
touched. The field lists here are the ones the code consumes: `transferlab.models.strategy.Strategy` subclasses
`StrategyConfig`, the heads of `transferlab.models.heads` take `HeadConfig`'s settings,
`transferlab.models.backbones.create_backbone` takes `BackboneConfig`'s, `transferlab.data.FolderDataModule`
takes `DatasetConfig`'s.

This module imports neither Hydra nor OmegaConf (models/ imports it); `register_schemas` does, when called.
Fields typed `Any` take several kinds of value (`auto` or a number, ...); their consumer checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING: Any = "???"  # omegaconf.MISSING: a value every option (or the command line) must give

SCHEMA_NODE = "schema"  # the ConfigStore name of each group's schema: `defaults: [schema, _self_]`


@dataclass
class HeadFitConfig:
    """Fit the head to convergence on cached backbone features before (lpft) or instead of (frozen) SGD epochs:
    multinomial logistic regression, full batch, L-BFGS, its L2 strength chosen by stratified K-fold
    cross-validation on the training features (semantics: `transferlab.models.linear_fit`)."""

    enabled: bool = False  # frozen and lpft switch it on
    # penalty strengths tried (on standardised features; larger = stronger), by default 1e-4 .. 100, half-decades
    l2: list[float] = field(default_factory=lambda: [round(10 ** (e / 2), 6) for e in range(-8, 5)])
    folds: int = 5  # cross-validation folds (fewer when a class has fewer images)
    max_iter: int = 200  # L-BFGS iterations per fit
    # Candidate inputs besides the features, when the weights come with their classifier (ImageNet's): for each m,
    # the logits of the m pretrained classes most probable on each class's training images. The cross-validation
    # picks among them and the features; [] = the features only.
    source_classes: list[int] = field(default_factory=lambda: [1, 5])
    # The cross-validation folds' seed: the run's, so `seed=1,2,3` shows how much the choice depends on the split
    seed: int = "${seed}"  # type: ignore[assignment]
    # For a head that is fine-tuned afterwards (lpft): when its logits on the training features spread more than
    # this (their standard deviation), divide it by the one factor that brings them to it; its predictions are
    # unchanged. A head fitted to separable features is sure of every training image (flowers12, Lite0: logit std
    # 4.6, a random head's 0.2), so each augmented view it gets wrong sends a gradient that large into the
    # backbone. null: the head as fitted (frozen always).
    max_logit_std: float | None = None


@dataclass
class StrategyConfig:
    """Which parts of the network train, and at which learning-rate multiplier
    (semantics: `transferlab.models.strategy`)."""

    name: str = MISSING
    # Module prefix -> lr multiplier; parameters under no prefix are frozen. Empty here on purpose: OmegaConf
    # merges dicts key by key, so a default rule (say `backbone: 1.0`) would leak into every option that does
    # not name it, and `frozen` would silently train its backbone. Every option states its own `train`.
    train: dict[str, float] = field(default_factory=dict)
    trainable_stages: int = 0  # the last N stages of the backbone also train, at stage_lr_mult
    stage_lr_mult: float = 1.0
    lr_decay: float | None = None  # every stage trains; stage i from the top at lr_decay ** i (see discriminative)
    unfreeze_at: int | None = None  # backbone rules only take effect from this epoch on (see gradual)
    pretrained: bool = True  # false: same architecture, random init (see scratch)
    freeze_bn: bool = True  # BatchNorm layers of frozen parts stay in eval mode
    # every BatchNorm keeps its pretrained running statistics, also where its weights train (a fitted head keeps
    # seeing the features it was fitted on; small or augmented batches do not drag the statistics). Only at a low
    # learning rate: at finetune's, the activations leave the range the frozen statistics normalise (README)
    keep_bn_stats: bool = False
    # Fit the head on cached features first (frozen: that is the whole training; lpft: then fine-tune from it)
    head_fit: HeadFitConfig = field(default_factory=HeadFitConfig)


@dataclass
class BackboneConfig:
    """A registry key of `transferlab.models.backbones.BACKBONE_SOURCES` and a model of that source."""

    source: str = MISSING  # torchvision | timm
    name: str = MISSING  # the model's name in its source
    # DEFAULT, a named/tagged pretrained weight, null (random init), a local file, or packaged:<key>
    weights: str | None = "DEFAULT"
    weights_key_map: str = "name"  # how a local state dict maps onto the model: name | order


@dataclass
class HeadConfig:
    """A registry key of `transferlab.models.heads.HEADS` and its settings."""

    kind: str = MISSING  # linear | mlp
    dropout: float = 0.0
    hidden: int | None = None  # mlp: width of the hidden layer (a linear head has none)


@dataclass
class InputConfig:
    """Overrides of what the backbone's weights ask for (null = keep the weights' value)."""

    image_size: int | None = None
    crop_pct: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None


@dataclass
class AugmentConfig:
    """Training augmentation: RandomResizedCrop(scale, ratio) + optional horizontal flip."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: bool = True
    train_size: int | None = None  # crop size for training (null = input.image_size); lower is faster (FixRes)


@dataclass
class DatasetConfig:
    """`transferlab.data.FolderDataModule`'s arguments. `_target_` stays in the config: a user may point a
    dataset option at another datamodule (that option then does not extend this schema)."""

    _target_: str = "transferlab.data.FolderDataModule"
    name: str = MISSING  # the dataset's name (in the run's summary and hyper-parameters)
    root: str = MISSING  # the image-folder tree (train/<class>/ + val/<class>/, or <class>/)
    prepare: Any = None  # a `_partial_` target called with root before the data is read (download, write)
    batch_size: int = 32
    eval_batch_size: Any = "auto"  # int | auto (64 on a GPU, 8 on a CPU) | null (= batch_size)
    num_workers: Any = "auto"  # int | auto (one loader process per spare core)
    val_fraction: float = 0.2
    split_seed: int = "${seed}"  # type: ignore[assignment]
    # k-fold cross-validation: folds=K makes fold `fold` (0..K-1) of a stratified K-fold split (seeded by
    # split_seed) of the pool the validation set and the other folds the training set. null: no folds.
    folds: int | None = None
    fold: int = 0
    cv_pool: str = "train"  # the pool: train (the train folder) | all (train + val)
    pin_memory: Any = "auto"  # bool | auto (with CUDA)
    # Frozen backbone features computed once (outputs/cache/features): auto = when the strategy never trains
    # the backbone | true | false
    cache_features: Any = "auto"
    feature_views: int = 0  # K > 0: cache K augmented views of each training image instead of one plain view
    # false | memory (or true): decode each image once, keep uint8 tensors | disk: and memory-map them from cache_dir
    cache_images: Any = False
    on_bad_file: str = "skip"  # unreadable/over-size files: skip (warn, listing each) | error (stop before training)
    max_pixels: int | None = 89478485  # images above are bad files (PIL's decompression-bomb limit)
    # Imbalanced folders: none | sampler (each epoch draws training images with replacement, every class equally
    # likely) | loss (cross-entropy weighted by n / (classes * count) per class). A head fit (frozen, lpft's first
    # phase) draws no batches: with sampler or loss it weighs its rows by those class weights, in the fit and in the
    # cross-validation that picks its strength (which then scores balanced accuracy).
    balance: str = "none"
    cache_dir: str | None = "${paths.log_dir}/cache"  # the dataset doctor's per-file checks, reused while unchanged
    input: InputConfig = field(default_factory=InputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class RecipeConfig:
    """How the network is trained, beyond which parts train (the strategy) and the optimizer/scheduler groups a
    recipe option picks: the loss, batch mixing, weight averaging (semantics: `transferlab.models.classifier`,
    `transferlab.callbacks.ema`). Every component is off here; `recipe=strong` switches on what measured helpful."""

    name: str = MISSING
    label_smoothing: float = 0.0  # cross-entropy against (1 - e) * one-hot + e / classes
    mixup_alpha: float = 0.0  # > 0: MixUp(alpha) on training image batches (torchvision v2); not on cached features
    cutmix_alpha: float = 0.0  # > 0: CutMix(alpha); with both, each batch picks one of the two
    mix_prob: float = 1.0  # fraction of training batches mixed
    ema_decay: float | None = None  # a number: validate, checkpoint and export an EMA of the weights
    ema_warmup: bool = True  # the EMA's decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates


SCHEMAS: dict[str, type] = {
    "strategy": StrategyConfig,
    "backbone": BackboneConfig,
    "head": HeadConfig,
    "dataset": DatasetConfig,
    "recipe": RecipeConfig,
}


def register_schemas() -> None:
    """Store each group's schema as `<group>/schema` in Hydra's ConfigStore (idempotent). Must run before
    composition: the options' defaults lists name these nodes."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name=SCHEMA_NODE, node=schema)
