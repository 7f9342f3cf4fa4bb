"""tune.lr_find=true: Lightning's learning-rate finder picks optimizer.lr and leaves no other trace."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from tests.conftest import compose_config, shrink
from transferlab.tasks.train import build, train, tuner
from transferlab.training.fit import find_lr

FINDER = {"tune.lr_find": "true", "tune.num_training": 50, "strategy": "finetune"}


def test_the_finder_restores_weights_and_loop_state(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, **FINDER))
    L.seed_everything(cfg.seed)
    built = build(cfg)
    data, model = built.datamodule, built.model
    trainer = tuner(built.settings)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = find_lr(trainer, model, data, built.settings.tune, built.settings.seed)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # every weight and buffer (BatchNorm stats too)
    assert trainer.global_step == 0 and found["steps"] > 0
    assert model.optimizer_factory.keywords["lr"] == found["suggested_lr"] != found["configured_lr"]
    assert not list(tmp_path.rglob(".lr_find_*.ckpt"))  # the finder's own checkpoint is removed


class _AtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.lrs = [g["lr"] / g["lr_mult"] for g in optimizer.param_groups]
        self.optimizer_state = dict(optimizer.state)
        self.step = trainer.global_step


def test_the_suggested_rate_is_the_one_training_uses(tmp_path, tiny_folder):
    start = _AtStart()
    summary = train(compose_config(tmp_path, shrink(tiny_folder, **FINDER)), extra_callbacks=[start])
    suggested = summary["lr_find"]["suggested_lr"]
    assert start.lrs == pytest.approx([suggested] * len(start.lrs))
    assert start.optimizer_state == {} and start.step == 0  # a fresh optimizer: no momentum from the sweep
    assert summary["epochs"] == 1  # debug=tiny's max_epochs, not the finder's 17 (50 steps over 3-batch epochs)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["lr_find"]["suggested_lr"] == suggested


def test_a_solved_head_skips_the_finder(tmp_path, tiny_folder):
    summary = train(compose_config(tmp_path, shrink(tiny_folder, **{**FINDER, "strategy": "frozen"})))
    assert "lr_find" not in summary and summary["head_fit"] is not None
