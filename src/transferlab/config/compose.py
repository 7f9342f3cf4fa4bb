"""The project's conf/ composed from Python, as `python train.py <overrides>` would compose it: for the commands
that are not Hydra mains (the advisor, the doctor's deep check) and for notebooks."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, open_dict

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the project's conf/ (src/transferlab/config/compose.py)


def compose_train_config(root: str, overrides: list[str], config_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml composed as `python train.py dataset=folder dataset.root=<root> <overrides>` would be."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from transferlab.config import register_resolvers

    register_resolvers()
    data = [] if any(o.startswith("dataset=") for o in overrides) else ["dataset=folder"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str((config_dir or CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("train", overrides=[*data, f"dataset.root={os.path.abspath(root)}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${launch_dir:} = this directory, as in a train.py job
    with open_dict(cfg):
        del cfg.hydra
    return cfg
