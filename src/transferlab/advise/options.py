"""The strategy options a recommendation names (`conf/strategy/<name>.yaml`), read as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.config.compose import CONF_DIR  # the project's conf/
from transferlab.config.schema import StrategyConfig


def conf_dir() -> Path:
    """The conf/ of the running Hydra app (its main config source), else the project's."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.get("config_sources", []):
            if source.get("provider") == "main" and source.get("schema") == "file":
                return Path(source.path)
    return CONF_DIR


def strategy_option(name: str, settings: dict[str, Any] | None = None, conf: Path | None = None) -> DictConfig:
    """`conf/strategy/<name>.yaml` read as data onto the strategy schema, then `settings`: a wrong key or type
    fails here. Nothing is instantiated (an option has no `_target_`; its `defaults` list is the schema)."""
    path = (conf or conf_dir()) / "strategy" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"strategy option {name!r}: no {path}")
    option = OmegaConf.load(path)
    with open_dict(option):
        option.pop("defaults", None)
    node = OmegaConf.merge(OmegaConf.structured(StrategyConfig), option, settings or {})
    if node.name != name:
        raise ValueError(f"{path} names itself {node.name!r}, not {name!r}.")
    return node
