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


def linear_scaled_lr(lr: float, at_batch: int, batch_size: int) -> float:
    """`${linear_scaled_lr:0.001,4,${dataset.batch_size}}`: a learning rate tuned at one batch size, scaled
    linearly to another (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the tutorial's SGD lr 0.001 at
    batch 4 is 0.004 at 16 and 0.008 at 32, the same step per image seen. Per process under DDP."""
    return float(lr) * int(batch_size) / int(at_batch)


def register_resolvers() -> None:
    """Everything conf/ needs before composition, in one call (the entry points and the tests make it):
    the resolvers `${launch_dir:}` (the directory the command was launched from), `${linear_scaled_lr:...}`
    (a learning rate scaled to the batch size) and `${unique_dir:...}`
    (a run directory no other process gets, `transferlab.config.run_dirs`) and the config schema (each
    group's dataclass stored as `<group>_schema` in Hydra's ConfigStore, which the YAML options extend)."""
    if not OmegaConf.has_resolver("launch_dir"):
        OmegaConf.register_new_resolver("launch_dir", launch_dir)
    if not OmegaConf.has_resolver("linear_scaled_lr"):
        OmegaConf.register_new_resolver("linear_scaled_lr", linear_scaled_lr)
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    register_schemas()


def to_plain(cfg: DictConfig | Any) -> Any:
    """Resolved, plain Python containers (safe to store in checkpoints loaded with weights_only=True)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
