"""The config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Each group's schema is stored as the root-level node `<group>_schema` (not in the group: a node there would
be one of its options, listed by `--help` and selectable as `strategy=schema`), and every YAML option of the
group extends it (Hydra's "extending configs" pattern):

    # conf/strategy/frozen.yaml
    defaults:
      - /strategy_schema
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

Validation has one home: each dataclass's `__post_init__` checks its own fields (types and ranges), so a
composed config turned into these objects (`transferlab.config.settings`) and a strategy read from a
checkpoint (`transferlab.models.strategy.strategy_from_config`) are checked by the same lines; checks across
groups are in `transferlab.config.checks`. Fields typed `Any` take several kinds of value (`auto` or a number).

This module imports neither Hydra nor OmegaConf (models/ imports it); `register_schemas` does, when called.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transferlab.errors import ConfigValueError

MISSING: Any = "???"  # omegaconf.MISSING: a value every option (or the command line) must give


def schema_node(group: str) -> str:
    """The ConfigStore name of `group`'s schema, which its options extend: `defaults: [/<group>_schema, _self_]`."""
    return f"{group}_schema"


# --- field checks (used by every __post_init__ below) -----------------------------------------------------------
def _matches(value: Any, hint: Any) -> bool:
    """`value` is of the annotated type (int for float allowed, bool never for a number; containers checked)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list | tuple) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(_matches(k, args[0]) and _matches(v, args[1])
                                                  for k, v in value.items())
    return isinstance(value, hint)


def check_fields(obj: Any, where: str) -> None:
    """Every field of the dataclass `obj` holds a value of its annotated type (MISSING, a value still to be
    given, passes); else one error naming the key, the value and the type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value == MISSING:
            continue
        if not _matches(value, hints[f.name]):
            hint = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise ConfigValueError(f"{where}.{f.name}={value!r:.200}: expected {hint}.")


def known_keys(raw: Mapping, schema: type, where: str) -> dict[str, Any]:
    """`raw`'s keys, refused when one is not a field of `schema`."""
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigValueError(f"Unknown {where} key(s) {unknown}; known keys: {sorted(known)}.")
    return dict(raw)


def _choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigValueError(f"{key}={value!r}: use one of {', '.join(map(str, choices))}.")


def _positive(key: str, value: Any) -> None:
    if value is not None and not value > 0:
        raise ConfigValueError(f"{key}={value!r}: must be > 0.")


def _at_least(key: str, value: Any, least: float) -> None:
    if value is not None and value < least:
        raise ConfigValueError(f"{key}={value!r}: must be >= {least:g}.")


def _between(key: str, value: Any, low: float, high: float) -> None:
    """low < value < high."""
    if value is not None and not low < value < high:
        raise ConfigValueError(f"{key}={value!r}: must be between {low:g} and {high:g}, exclusive.")


@dataclass
class HeadTrainingConfig:
    """How the `fit_head` phase trains a head that is not solved in closed form (an mlp head, a head a user
    registers, or a linear one with `head_fit.solver=minibatch`): minibatch epochs on the cached features, early
    stopped on a held-out part of the *training* features (choosing on val would inflate the val figure), then
    retrained on every training row for the chosen number of epochs (semantics: `transferlab.models.feature_head`)."""

    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4  # not on biases and 1-d parameters
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 10  # epochs without a lower held-out loss before stopping
    holdout: float = 0.2  # share of the training images held out (stratified by class; views of an image together)
    refit: bool = True  # retrain on every training row for the chosen epochs (false: keep the held-out-best head)

    def __post_init__(self) -> None:
        check_fields(self, "strategy.head_fit.training")
        _choice("strategy.head_fit.training.optimizer", self.optimizer, ("adamw", "sgd"))
        _positive("strategy.head_fit.training.lr", self.lr)
        _at_least("strategy.head_fit.training.weight_decay", self.weight_decay, 0)
        for key in ("batch_size", "max_epochs"):
            _at_least(f"strategy.head_fit.training.{key}", getattr(self, key), 1)
        _at_least("strategy.head_fit.training.patience", self.patience, 0)
        _between("strategy.head_fit.training.holdout", self.holdout, 0, 1)


@dataclass
class HeadFitConfig:
    """The `fit_head` phase: the head trained on cached backbone features before (lpft) or instead of (frozen)
    fine-tuning. A linear head is solved: multinomial logistic regression, full batch, L-BFGS, its L2 strength
    chosen by stratified K-fold cross-validation on the training features (`transferlab.models.linear_fit`);
    any other head is trained by minibatch epochs (`training`)."""

    enabled: bool = False  # frozen and lpft switch it on
    # auto: lbfgs for a linear head, minibatch for any other | lbfgs (a linear head only) | minibatch
    solver: str = "auto"
    # penalty strengths tried (on standardised features; larger = stronger), by default 1e-4 .. 100, half-decades
    l2: list[float] = field(default_factory=lambda: [round(10 ** (e / 2), 6) for e in range(-8, 5)])
    folds: int = 5  # cross-validation folds (fewer when a class has fewer images)
    max_iter: int = 200  # L-BFGS iterations per fit
    # Candidate inputs besides the features, when the weights come with their classifier (ImageNet's): for each m,
    # the logits of the m pretrained classes most probable on each class's training images. The cross-validation
    # picks among them and the features; [] = the features only.
    source_classes: list[int] = field(default_factory=lambda: [1, 5])
    # The seed of the cross-validation folds and of the minibatch head's held-out split. The config schema sets
    # it to the run's `${seed}` (so `seed=1,2,3` shows how much the choice depends on the split); 0 when a
    # strategy is built in code or read from a checkpoint saved before it existed.
    seed: int = 0
    # For a head that is fine-tuned afterwards (lpft): when its logits on the training features spread more than
    # this (their standard deviation), divide its last layer by the one factor that brings them to it; its
    # predictions are unchanged. A head fitted to separable features is sure of every training image (flowers12,
    # Lite0: logit std 4.6, a random head's 0.2), so each augmented view it gets wrong sends a gradient that large
    # into the backbone. null: the head as fitted (frozen always).
    max_logit_std: float | None = None
    training: HeadTrainingConfig = field(default_factory=HeadTrainingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.training, Mapping):  # plain data (a checkpoint's strategy)
            self.training = HeadTrainingConfig(**known_keys(self.training, HeadTrainingConfig,
                                                        "strategy.head_fit.training"))
        check_fields(self, "strategy.head_fit")
        _choice("strategy.head_fit.solver", self.solver, ("auto", "lbfgs", "minibatch"))
        if not self.l2 or not all(v > 0 for v in self.l2):
            raise ConfigValueError(f"strategy.head_fit.l2={list(self.l2)!r:.200}: expected a non-empty list of "
                                   "positive strengths.")
        self.l2 = [float(v) for v in self.l2]
        for key in ("folds", "max_iter"):
            _at_least(f"strategy.head_fit.{key}", getattr(self, key), 1)
        _at_least("strategy.head_fit.seed", self.seed, 0)
        if not all(v >= 1 for v in self.source_classes):
            raise ConfigValueError(f"strategy.head_fit.source_classes={list(self.source_classes)!r:.200}: expected "
                                   "a list of whole numbers >= 1 (or [] for the features only).")
        if self.max_logit_std is not None and not 0 < self.max_logit_std < float("inf"):
            raise ConfigValueError(f"strategy.head_fit.max_logit_std={self.max_logit_std!r}: expected a positive "
                                   "number (lpft's is 0.3), or null to keep the head as fitted.")


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

    def __post_init__(self) -> None:
        if isinstance(self.head_fit, Mapping):  # plain data (a checkpoint's strategy)
            self.head_fit = HeadFitConfig(**known_keys(self.head_fit, HeadFitConfig, "strategy.head_fit"))
        check_fields(self, "strategy")
        self.train = {str(k): float(v) for k, v in self.train.items()}
        _at_least("strategy.trainable_stages", self.trainable_stages, 0)
        _at_least("strategy.stage_lr_mult", self.stage_lr_mult, 0)
        _at_least("strategy.unfreeze_at", self.unfreeze_at, 0)
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            raise ConfigValueError(f"strategy.lr_decay={self.lr_decay}: expected 0 < lr_decay <= 1.")


@dataclass
class BackboneConfig:
    """A registry key of `transferlab.models.backbones.BACKBONE_SOURCES` and a model of that source."""

    source: str = MISSING  # torchvision | timm
    name: str = MISSING  # the model's name in its source
    # DEFAULT, a named/tagged pretrained weight, null (random init), a local file, or packaged:<key>
    weights: str | None = "DEFAULT"
    weights_key_map: str = "name"  # how a local state dict maps onto the model: name | order

    def __post_init__(self) -> None:
        check_fields(self, "backbone")
        _choice("backbone.weights_key_map", self.weights_key_map, ("name", "order"))


@dataclass
class HeadConfig:
    """A registry key of `transferlab.models.heads.HEADS` and its settings."""

    kind: str = MISSING  # linear | mlp
    dropout: float = 0.0
    hidden: int | None = None  # mlp: width of the hidden layer (a linear head has none)

    def __post_init__(self) -> None:
        check_fields(self, "head")
        if not 0 <= self.dropout < 1:
            raise ConfigValueError(f"head.dropout={self.dropout}: must be in [0, 1).")
        _at_least("head.hidden", self.hidden, 1)


@dataclass
class InputConfig:
    """Overrides of what the backbone's weights ask for (null = keep the weights' value)."""

    image_size: int | None = None
    crop_pct: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        check_fields(self, "dataset.input")
        _at_least("dataset.input.image_size", self.image_size, 8)
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise ConfigValueError(f"dataset.input.crop_pct={self.crop_pct}: must be in (0, 1].")


@dataclass
class AugmentConfig:
    """Training augmentation: RandomResizedCrop(scale, ratio) + optional horizontal flip."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: bool = True
    train_size: int | None = None  # crop size for training (null = input.image_size); lower is faster (FixRes)

    def __post_init__(self) -> None:
        check_fields(self, "dataset.augment")
        for key in ("scale", "ratio"):
            low_high = getattr(self, key)
            if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
                raise ConfigValueError(f"dataset.augment.{key}={list(low_high)}: expected [low, high] with "
                                       "0 < low <= high.")
        _at_least("dataset.augment.train_size", self.train_size, 8)


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
    split_seed: int = 0  # the config schema sets it to the run's ${seed}
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
    # deep: also near-duplicate leaks, label errors and outliers (transferlab.quality) whenever the backbone's
    # features are computed anyway (frozen, lpft, auto) | fast: the doctor's checks only | off: no advisory
    # warnings either (duplicates, imbalance, ...); unreadable files are still found and skipped or refused
    quality: str = "deep"
    exclude: str | None = None  # a file of paths to leave out (one per line; the doctor's --write-exclude)
    relabel: str | None = None  # a CSV of `path,label` corrections
    input: InputConfig = field(default_factory=InputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.input, Mapping):
            self.input = InputConfig(**known_keys(self.input, InputConfig, "dataset.input"))
        if isinstance(self.augment, Mapping):
            self.augment = AugmentConfig(**known_keys(self.augment, AugmentConfig, "dataset.augment"))
        check_fields(self, "dataset")
        # the batch size first: the SGD learning rate is scaled from it
        _at_least("dataset.batch_size", self.batch_size, 1)
        for key, words in (("eval_batch_size", ("auto", None)), ("num_workers", ("auto",))):
            value = getattr(self, key)
            if value not in words and (isinstance(value, bool) or not isinstance(value, int)
                                       or value < (1 if key == "eval_batch_size" else 0)):
                least = 1 if key == "eval_batch_size" else 0
                raise ConfigValueError(f"dataset.{key}={value!r}: must be an integer >= {least} or auto.")
        _between("dataset.val_fraction", self.val_fraction, 0, 1)
        _choice("dataset.cv_pool", self.cv_pool, ("train", "all"))
        if self.folds is not None:
            if self.folds < 2:
                raise ConfigValueError(f"dataset.folds={self.folds}: cross-validation needs at least 2 folds "
                                       "(null: no folds).")
            if not 0 <= self.fold < self.folds:
                raise ConfigValueError(f"dataset.fold={self.fold} with dataset.folds={self.folds}: use a fold in "
                                       f"0..{self.folds - 1}.")
        _choice("dataset.cache_features", self.cache_features, (True, False, "auto"))
        _at_least("dataset.feature_views", self.feature_views, 0)
        _choice("dataset.cache_images", self.cache_images, (False, True, "memory", "disk"))
        if self.cache_images == "disk" and not self.cache_dir:
            raise ConfigValueError("dataset.cache_images=disk needs dataset.cache_dir (where to write the decoded "
                                   "file).")
        _choice("dataset.on_bad_file", self.on_bad_file, ("skip", "error"))
        _at_least("dataset.max_pixels", self.max_pixels, 1)
        _choice("dataset.balance", self.balance, ("none", "sampler", "loss"))
        _choice("dataset.quality", self.quality, ("deep", "fast", "off"))

    def datamodule_arguments(self) -> dict[str, Any]:
        """The datamodule's keyword arguments as plain data (`_target_` and `prepare` are built by the caller)."""
        values = dataclasses.asdict(self)
        values.pop("_target_")
        return values


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

    def __post_init__(self) -> None:
        check_fields(self, "recipe")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigValueError(f"recipe.label_smoothing={self.label_smoothing}: must be in [0, 1) (0.1 is usual).")
        for key in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) < 0:
                raise ConfigValueError(f"recipe.{key}={getattr(self, key)}: must be >= 0 (0 switches it off; 0.2 to "
                                       "1.0 is usual).")
        if not 0 <= self.mix_prob <= 1:
            raise ConfigValueError(f"recipe.mix_prob={self.mix_prob}: must be in [0, 1].")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigValueError(f"recipe.ema_decay={self.ema_decay}: must be between 0 and 1 (e.g. 0.998), or "
                                   "null to switch the EMA off.")


SCHEMAS: dict[str, type] = {
    "strategy": StrategyConfig,
    "backbone": BackboneConfig,
    "head": HeadConfig,
    "dataset": DatasetConfig,
    "recipe": RecipeConfig,
}


# Schema fields that follow another key of the run in a composed config (a dataclass built in code keeps 0).
FOLLOW_THE_RUN: dict[str, dict[str, str]] = {
    "strategy": {"head_fit.seed": "${seed}"},
    "dataset": {"split_seed": "${seed}"},
}


def register_schemas() -> None:
    """Store each group's schema as `<group>_schema` in Hydra's ConfigStore (idempotent). Must run before
    composition: the options' defaults lists name these nodes."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        node = OmegaConf.structured(schema)
        for key, value in FOLLOW_THE_RUN.get(group, {}).items():
            OmegaConf.update(node, key, value)
        store.store(name=schema_node(group), node=node)
