"""A composed training config turned, once, into the typed objects the run is built from.

`RunSettings.from_config(cfg)` resolves every interpolation, turns each schema group into its dataclass
(`transferlab.config.schema`: their `__post_init__` checks every field), checks what spans groups
(`transferlab.config.checks`) and keeps the rest (trainer, callbacks, loggers, optimizer, scheduler) as plain
`_target_` specs of the composed config, for the training task to instantiate. Nothing downstream of this
receives a DictConfig: the plan, the model, the data and the callbacks get these objects or plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transferlab.config.checks import check_run
from transferlab.config.command import config_error_line
from transferlab.config.schema import (
    BackboneConfig,
    DatasetConfig,
    HeadConfig,
    RecipeConfig,
    StrategyConfig,
    schema_node,
)
from transferlab.errors import ConfigValueError

# Hyperparameters shown for every run in TensorBoard's HParams table, whatever was overridden.
KEY_HPARAMS = ("strategy.name", "backbone.name", "head.kind", "optimizer.lr", "optimizer.weight_decay",
               "dataset.name", "dataset.batch_size", "dataset.fold", "trainer.max_epochs", "trainer.precision",
               "seed")
# Groups whose option follows another's (train.yaml: `dataset_trainer: ${dataset}`): a column would repeat it.
DERIVED_GROUPS = ("dataset_trainer",)
# Top-level keys a run reads that no config file has to hold, so `+` may add them (transferlab.config.command):
# the advisor's thresholds (`+advise.similar=0.95`, strategy=auto) and repetitions (`+repeat.seeds=[1,2,3]`).
ADDABLE_KEYS = ("advise", "repeat")


@dataclass(frozen=True)
class TuneSettings:
    """`tune.*`: Lightning's learning-rate finder before training (conf/train.yaml)."""

    lr_find: bool = False
    min_lr: float = 1e-6
    max_lr: float = 1.0
    num_training: int = 100


@dataclass
class RunSettings:
    """Everything one training run is built from, checked."""

    seed: int
    strategy: StrategyConfig
    backbone: BackboneConfig
    head: HeadConfig
    dataset: DatasetConfig
    recipe: RecipeConfig
    optimizer: dict[str, Any]  # a `_partial_` target spec: the factory is built by the task
    scheduler: dict[str, Any] | None
    scheduler_interval: str
    trainer: dict[str, Any]  # lightning.pytorch.Trainer's `_target_` and arguments
    callbacks: dict[str, dict[str, Any]]  # name -> `_target_` spec (null entries dropped)
    loggers: dict[str, dict[str, Any]]
    output_dir: str
    cache_dir: str
    ckpt_path: str | None = None
    resume: bool = True  # false: ckpt_path's weights start a new run (transferlab.training.resume)
    channels_last: bool = False
    compile: bool = False
    tune: TuneSettings = field(default_factory=TuneSettings)
    advise: dict[str, Any] = field(default_factory=dict)  # the advisor's thresholds (strategy=auto)
    hparams: dict[str, Any] = field(default_factory=dict)  # what TensorBoard's HParams table shows

    def __post_init__(self) -> None:
        if not isinstance(self.resume, bool):
            raise ConfigValueError(f"resume={self.resume!r}: use true (continue the run that wrote ckpt_path) or "
                                   "false (a new run from its weights).")

    @classmethod
    def from_config(cls, cfg: Any, choices: Mapping[str, Any] | None = None,
                    overrides: Iterable[str] = ()) -> RunSettings:
        """The composed `conf/train.yaml` (a DictConfig) as settings; `choices` and `overrides` are Hydra's
        runtime choices and the command line's overrides (for the HParams table)."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from transferlab.config.schema import SCHEMAS

        try:
            OmegaConf.resolve(cfg)  # fail now, naming the key (the one typed: `seed`), rather than mid-training
        except OmegaConfBaseException as e:
            raise ConfigValueError(config_error_line(e) or str(e).splitlines()[0]) from None
        typed = {group: _typed(cfg, group, schema) for group, schema in SCHEMAS.items()}
        plain = OmegaConf.to_container(cfg, resolve=True)
        scheduler = dict(plain.get("scheduler") or {}) or None
        interval = scheduler.pop("interval", "epoch") if scheduler else "epoch"
        tune = TuneSettings(**(plain.get("tune") or {}))
        settings = cls(
            seed=plain["seed"], **typed,
            optimizer=dict(plain["optimizer"]), scheduler=scheduler, scheduler_interval=interval,
            trainer=dict(plain["trainer"]),
            callbacks={k: v for k, v in (plain.get("callbacks") or {}).items() if v is not None and "_target_" in v},
            loggers={k: v for k, v in (plain.get("logger") or {}).items() if v is not None and "_target_" in v},
            output_dir=str(plain["paths"]["output_dir"]), cache_dir=str(plain["paths"]["cache_dir"]),
            ckpt_path=plain.get("ckpt_path"), resume=plain.get("resume", True),
            channels_last=bool(plain.get("channels_last", False)),
            compile=bool(plain.get("compile", False)), tune=tune, advise=dict(plain.get("advise") or {}),
            hparams=run_hparams(plain, choices, overrides),
        )
        check_run(settings)
        return settings

    def with_strategy(self, strategy: StrategyConfig) -> RunSettings:
        """These settings with another strategy (`strategy=auto`: the advisor's choice), checked again."""
        from dataclasses import replace

        settings = replace(self, strategy=strategy, hparams={**self.hparams, "strategy.name": strategy.name})
        check_run(settings)
        return settings

    @property
    def max_epochs(self) -> int | None:
        return self.trainer.get("max_epochs")

    @property
    def progress_bar(self) -> bool:
        """Lightning's `trainer.enable_progress_bar`, which the feature extraction's bars follow too."""
        return self.trainer.get("enable_progress_bar", True) is not False

    def backbone_description(self) -> dict[str, Any]:
        """The backbone as plain data (the model's and the feature cache key's); `strategy.pretrained: false`
        is resolved here (random init), once."""
        from dataclasses import asdict

        backbone = asdict(self.backbone)
        if not self.strategy.pretrained:
            backbone["weights"] = None
        return backbone

    def build_datamodule(self) -> Any:
        """The dataset option's datamodule (`dataset._target_`, FolderDataModule by default) from its checked
        settings, as plain values (nothing downstream receives a DictConfig)."""
        from hydra.utils import instantiate

        return instantiate({"_target_": self.dataset._target_, **self.dataset.datamodule_arguments()},
                           _convert_="all")


def _typed(cfg: Any, group: str, schema: type) -> Any:
    """The group's node as its schema dataclass (`__post_init__` checks it); a node that does not extend the
    schema (a user's own datamodule option) is refused with the way out."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = cfg.get(group)
    if group == "recipe" and node is None:
        return RecipeConfig(name="none")
    if node is None or OmegaConf.get_type(node) is not schema:
        raise ConfigValueError(
            f"{group}: the option does not extend the {group} schema ({schema.__name__}); start it with "
            f"`defaults: [/{schema_node(group)}, _self_]` (or extend one of conf/{group}/*.yaml).")
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as e:
        raise ConfigValueError(config_error_line(e) or f"{group}: {str(e).splitlines()[0]}") from None


def _select(plain: Mapping[str, Any], dotted: str) -> Any:
    node: Any = plain
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def run_hparams(plain: Mapping[str, Any], choices: Mapping[str, Any] | None = None,
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The choices that define a run, as scalars TensorBoard can show (ints, floats and bools kept as such)."""
    params: dict[str, Any] = {}
    for group, option in sorted((choices or {}).items()):
        if option is not None and not group.startswith("hydra") and group not in DERIVED_GROUPS:
            params[f"group/{group}"] = str(option)
    for key in KEY_HPARAMS:
        value = _select(plain, key)
        if value is not None:
            params[key] = value if isinstance(value, bool | int | float | str) else str(value)
    overrides = list(overrides)
    params["overrides"] = " ".join(overrides) if overrides else "(none)"
    return params
