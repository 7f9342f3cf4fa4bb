"""What conf/ needs before Hydra composes it (resolvers, the config schema) and helpers to turn the composed
config into plain data. The schema's dataclasses live in `transferlab.config.schema`."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.config.run_dirs import unique_dir
from transferlab.config.schema import register_schemas


def launch_dir() -> str:
    """The directory the command was launched from, in a job (even with hydra.job.chdir) and in the sweeper.

    `${hydra:runtime.cwd}` cannot be used in paths: the multirun sweep dir is resolved before any job
    exists, when HydraConfig is not set yet."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.cwd
    return os.getcwd()


def register_resolvers() -> None:
    """Everything conf/ needs before composition, in one call (the entry points and the tests make it):
    the resolvers `${launch_dir:}` (the directory the command was launched from) and `${unique_dir:...}`
    (a run directory no other process gets, `transferlab.config.run_dirs`) and the config schema (each
    group's dataclass stored as `<group>/schema` in Hydra's ConfigStore, which the YAML options extend)."""
    if not OmegaConf.has_resolver("launch_dir"):
        OmegaConf.register_new_resolver("launch_dir", launch_dir)
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    register_schemas()


def to_plain(cfg: DictConfig | Any) -> Any:
    """Resolved, plain Python containers (safe to store in checkpoints loaded with weights_only=True)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
