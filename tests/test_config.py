"""The composed configuration: every group option composes, typos fail naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_config
from transferlab.config import register_resolvers
from transferlab.models.backbones import packaged_weights_path


def test_default_config_resolves_completely(tmp_path):
    register_resolvers()
    cfg = compose_config(tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.dataset.name == "digits"
    assert cfg.backbone.name == "tf_efficientnet_lite0"
    # The config names a registry key, never a file path; the registry finds the package's file.
    assert cfg.backbone.weights == "packaged:efficientnet_lite0"
    assert packaged_weights_path("efficientnet_lite0").endswith("efficientnet-lite0-57934424.pth")
    assert cfg.optimizer.lr == 0.001 and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler.step_size == 7 and cfg.scheduler.gamma == 0.1
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.max_epochs == 25
    assert not OmegaConf.missing_keys(cfg)


@pytest.mark.parametrize("group", ["dataset", "backbone", "strategy", "head", "optimizer", "scheduler"])
def test_every_option_of_every_group_composes(tmp_path, group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose_config(tmp_path, [f"{group}={option}"])
        assert cfg[group] is not None, option


def test_typo_in_key_fails_at_startup_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(tmp_path, ["dataset.batchsize=4"])
    assert "batchsize" in str(err.value.__cause__ or err.value)


def test_typo_in_group_option_fails_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException, match="resnet81"):
        compose_config(tmp_path, ["backbone=resnet81"])


def test_unknown_strategy_key_is_rejected():
    from transferlab.models.strategy import strategy_from_config

    with pytest.raises(ValueError, match="trainable_stage"):
        strategy_from_config({"name": "x", "train": {"head": 1.0}, "trainable_stage": 2})


def test_cosine_scheduler_follows_max_epochs(tmp_path):
    cfg = compose_config(tmp_path, ["scheduler=cosine", "trainer.max_epochs=9"])
    assert cfg.scheduler.T_max == 9
