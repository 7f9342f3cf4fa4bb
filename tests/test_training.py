"""Training runs through the real config, shrunk: what `python train.py` writes, every strategy, frozen means
frozen, resume, the class mapping into predictions (slow); a typo stops the command before training; a multirun
(slow) gets one directory per job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose_config, make_folder, run_script, shrink
from transferlab.models.checkpoint import load_model
from transferlab.tasks.train import build, train


def test_train_py_writes_a_run_directory_with_its_config_summary_and_checkpoints(trained_run):
    """The command-line smoke test of train.py: the session's shared `trained_run` is `python train.py
    debug=tiny dataset=folder dataset.root=data ...` launched from its own directory."""
    run = Path(trained_run["run_dir"])
    assert run.parent.parent == Path(trained_run["launch_dir"]) / "outputs" / "train" / "runs"
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "root: data" in saved  # as given on the command line; eval resolves it from the launch directory
    assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "train.log").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["classes"] == ["ant", "bee", "wasp"]
    assert Path(summary["best_checkpoint"]).parent == run / "checkpoints" and Path(summary["best_checkpoint"]).is_file()
    assert summary["last_checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "Best val acc" in trained_run["stdout"] and summary["best_checkpoint"] in trained_run["stdout"]


@pytest.mark.parametrize("strategy", ["finetune", "frozen", "partial"])
def test_each_strategy_trains_and_writes_checkpoints_and_logs(tiny_training, strategy):
    summary = tiny_training(strategy)
    run = Path(summary["run_dir"])
    assert 0.0 <= summary["val/acc_best"] <= 1.0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Path(summary["best_checkpoint"]).is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run / "summary.json").read_text())["classes"] == ["ant", "bee"]
    trainable, total = summary["trainable_params"], summary["total_params"]
    if strategy == "finetune":
        assert trainable == total
    else:
        assert 0 < trainable < total


def _model_and_data(tmp_path, folder, strategy):

    # the SGD path (a head fit only ever writes the head: tests/test_head_fit.py)
    cfg = compose_config(tmp_path, shrink(folder, strategy=strategy, **{"strategy.head_fit.enabled": "false"}))
    built = build(cfg)
    dm, model = built.datamodule, built.model
    return cfg, model, dm


def test_frozen_means_frozen_parameters_and_buffers_bit_identical(tmp_path, tiny_folder):
    import lightning as L

    cfg, model, dm = _model_and_data(tmp_path, tiny_folder, "frozen")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    # Only head parameters may reach the optimizer.
    opt = model.configure_optimizers()["optimizer"]
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.head.parameters()}

    L.Trainer(max_steps=4, limit_val_batches=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(model, dm)

    after = model.backbone.state_dict()
    assert backbone_before.keys() == after.keys()
    for key, value in backbone_before.items():  # weights AND running_mean/var/num_batches_tracked
        assert torch.equal(value, after[key]), f"backbone tensor {key} changed"
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())


def test_partial_trains_only_the_last_stages(tmp_path, tiny_folder):
    _, model, _ = _model_and_data(tmp_path, tiny_folder, "partial")
    last_two = {f"backbone.{n}" for stage in model.stages[-2:] for n in stage}
    for name, p in model.named_parameters():
        expected = name.startswith("head.") or any(name.startswith(s + ".") for s in last_two)
        assert p.requires_grad == expected, name


def test_resume_from_last_checkpoint_continues_the_run(tmp_path, tiny_folder):
    first = train(compose_config(tmp_path / "a", shrink(tiny_folder)))
    last = torch.load(first["last_checkpoint"], map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    run_dir = tmp_path / "a" / "run"
    second = train(compose_config(tmp_path / "b", shrink(tiny_folder, **{"trainer.max_epochs": 2,
                                                                          "ckpt_path": run_dir})))
    resumed = torch.load(second["last_checkpoint"], map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * last["global_step"]


@pytest.mark.slow  # 8 epochs to learn 3 classes; the mapping rule itself: tests/test_folders.py, by default
def test_class_mapping_survives_into_predictions(tmp_path):
    # Val lacks "bee": ImageFolder on val/ would map wasp to 1. Train mapping must hold in predictions.
    folder = make_folder(tmp_path / "d", {"train": {"ant": 16, "bee": 16, "wasp": 16},
                                          "val": {"ant": 4, "wasp": 4}})
    summary = train(compose_config(tmp_path, shrink(folder, **{
        "trainer.max_epochs": 8, "trainer.limit_train_batches": 12, "optimizer": "adamw",
        "optimizer.lr": 0.01, "strategy": "finetune", "scheduler": "cosine", "callbacks.early_stopping": "null"})))
    model = load_model(summary["best_checkpoint"])
    assert model.class_names == ["ant", "bee", "wasp"]
    from transferlab.data.images import load_rgb
    from transferlab.data.transforms import eval_transform

    tf = eval_transform(model.input_spec)
    wasps = sorted((folder / "val" / "wasp").glob("*.png"))
    with torch.no_grad():
        preds = model(torch.stack([tf(load_rgb(str(p))) for p in wasps])).argmax(1)
    assert [model.class_names[i] for i in preds] == ["wasp"] * len(wasps)


def test_checkpoint_alone_rebuilds_model_with_its_input_spec(tiny_training):
    summary = tiny_training("partial")  # the default strategy
    model = load_model(summary["last_checkpoint"])
    assert model.input_spec.image_size == 32
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["transferlab"]["class_names"] == ["ant", "bee"]
    x = torch.randn(2, 3, 32, 32)
    state = ckpt["state_dict"]
    assert torch.equal(model.state_dict()["head.0.weight"], state["head.0.weight"])
    assert model(x).shape == (2, 2)


def test_config_typo_on_the_command_line_fails_before_training(tmp_path, tiny_folder, monkeypatch, capsys):
    returncode, stderr, _ = run_script("train.py", *shrink(tiny_folder), "trainer.max_epoch=3", cwd=tmp_path,
                                    monkeypatch=monkeypatch, capsys=capsys)
    assert returncode != 0
    assert "max_epoch" in stderr
    assert not (tmp_path / "outputs" / "train" / "runs").exists() or not list((tmp_path / "outputs").rglob("*.ckpt"))


@pytest.mark.slow  # a second train.py process and two jobs; the sweep tests cover multiruns by default
def test_multirun_of_two_strategies_writes_one_dir_per_job(tmp_path, tiny_folder):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *shrink(tiny_folder), "strategy=finetune,frozen", "logger=none"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted((tmp_path / "outputs" / "train" / "multiruns").rglob("summary.json"))
    assert [p.parent.name for p in summaries] == ["0", "1"]
    trainable = [json.loads(p.read_text())["trainable_params"] for p in summaries]
    assert trainable[0] > trainable[1]  # finetune trains more than frozen
    assert "Best val acc" in proc.stdout
