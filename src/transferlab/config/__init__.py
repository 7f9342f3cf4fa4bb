"""OmegaConf resolvers used by conf/ and helpers to turn the composed config into plain data."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf


def launch_dir() -> str:
    """The directory the command was launched from, in a job (even with hydra.job.chdir) and in the sweeper.

    `${hydra:runtime.cwd}` cannot be used in paths: the multirun sweep dir is resolved before any job
    exists, when HydraConfig is not set yet."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.cwd
    return os.getcwd()


def register_resolvers() -> None:
    """`${launch_dir:}` -> the directory the command was launched from."""
    if not OmegaConf.has_resolver("launch_dir"):
        OmegaConf.register_new_resolver("launch_dir", launch_dir)


def to_plain(cfg: DictConfig | Any) -> Any:
    """Resolved, plain Python containers (safe to store in checkpoints loaded with weights_only=True)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a/b': 1}; lists become strings (TensorBoard's HParams takes scalars only)."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[name] = "null" if value is None else value
        else:
            flat[name] = str(value)
    return flat
