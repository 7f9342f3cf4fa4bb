"""The speed switches change how fast a run goes, never what it learns or what its checkpoint holds; the summary
tells training time from wall time; the benchmark script runs end to end (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose_config, make_folder, shrink
from transferlab.models.checkpoint import load_model
from transferlab.tasks.train import build, train


def _state(ckpt: str) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_train_size_crops_training_images_only(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, **{"dataset.augment.train_size": 24}))
    built = build(cfg)
    data, model = built.datamodule, built.model
    data.setup("fit")
    train_images, _ = next(iter(data.train_dataloader()))
    val_images, _ = next(iter(data.val_dataloader()))
    assert tuple(train_images.shape[-2:]) == (24, 24)
    assert tuple(val_images.shape[-2:]) == (32, 32)  # evaluation keeps the model's input size
    assert model.input_spec.image_size == 32  # and so does the checkpoint's input spec

    summary = train(cfg)  # the pooled backbone takes both sizes
    assert load_model(summary["last_checkpoint"]).input_spec.image_size == 32


class _BatchLayout:
    """Records whether each training batch arrived at the model channels-last."""

    def __init__(self):
        self.layouts: list[bool] = []

    def __call__(self, module, args):
        images = args[0]
        self.layouts.append(images.is_contiguous(memory_format=torch.channels_last))


def test_channels_last_changes_layout_not_result(tmp_path, tiny_folder, monkeypatch):
    """Same seed, same data: NHWC and NCHW runs end with the same weights, and batches really are NHWC."""
    import transferlab.tasks.train as task

    layouts = _BatchLayout()
    original_build = task.build_model

    def build_with_probe(*args, **kwargs):
        model = original_build(*args, **kwargs)
        model.backbone.register_forward_pre_hook(layouts)
        return model

    monkeypatch.setattr(task, "build_model", build_with_probe)
    states = {}
    for flag in ("true", "false"):
        layouts.layouts.clear()
        cfg = compose_config(tmp_path / flag, shrink(tiny_folder, channels_last=flag, **{"strategy": "finetune"}))
        summary = train(cfg)
        train_batches = layouts.layouts[: 3]  # limit_train_batches=3, then validation
        assert train_batches == [flag == "true"] * 3
        states[flag] = _state(summary["last_checkpoint"])
    assert states["true"].keys() == states["false"].keys()
    for name, value in states["false"].items():
        if value.is_floating_point():
            # BatchNorm running statistics integrate squared activations over every step, so the float rounding
            # that NHWC and NCHW kernels legitimately differ in adds up there (seen: 2.3e-4 on a variance of 1.2)
            # while the weights stay within 1e-4.
            tol = 5e-4 if name.endswith(("running_mean", "running_var")) else 1e-4
            torch.testing.assert_close(states["true"][name], value, atol=tol, rtol=tol, msg=name)


@pytest.mark.slow
def test_compile_switch_trains_with_unchanged_checkpoint_names(tmp_path, tiny_folder):
    plain = train(compose_config(tmp_path / "plain", shrink(tiny_folder, compile="false")))
    compiled = train(compose_config(tmp_path / "compiled", shrink(tiny_folder, compile="true")))
    assert _state(compiled["last_checkpoint"]).keys() == _state(plain["last_checkpoint"]).keys()
    model = load_model(compiled["last_checkpoint"])  # loads into an uncompiled model
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_summary_separates_training_batches_from_wall_time(tiny_training):
    summary = tiny_training("partial")  # the default strategy
    assert 0 < summary["train_phase_s"] < summary["wall_time_s"]
    assert summary["train_phase_images_per_s"] > summary["train_images_per_s"]
    written = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert written["train_phase_s"] == summary["train_phase_s"]


@pytest.mark.slow  # eight trainings in a second process: ~40 s on 2 cores
def test_benchmark_script_smoke(tmp_path):
    """The benchmark's four arms run end to end on a tiny folder and write the table and its JSON."""
    data = make_folder(tmp_path / "data", {"train": {"ants": 6, "bees": 6}, "val": {"ants": 3, "bees": 3}}, size=40)
    out, results_root = tmp_path / "table.md", tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tutorial_vs_transferlab.py"), "--data", str(data), "--epochs", "2",
         "--tutorial-workers", "0", "--out", str(out), "--workroot", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**os.environ, "TRANSFERLAB_BENCH_RESULTS": str(results_root)},  # not the repo's bench/results
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    for heading in ("### frozen (2 epochs)", "### finetune (2 epochs)"):
        assert heading in table
    assert table.count("| best val acc |") == 2
    entries = json.loads((results_root / "tutorial_vs_transferlab" / "latest.json").read_text())["entries"]
    (entry,) = entries.values()
    assert entry["markdown"] == table.rstrip("\n").split("\n")
    results = entry["data"]["results"]
    for strategy in ("frozen", "finetune"):
        for arm in ("tutorial", "transferlab"):
            run = results[strategy][arm]
            assert 0.0 <= run["best_acc"] <= 1.0 and 0 < run["wall_s"] < run["process_s"]
            solved = (strategy, arm) == ("frozen", "transferlab")  # its head is solved, not stepped: no SGD batch
            assert (run["train_images_per_s"] is None) if solved else run["train_images_per_s"] > 0
            # one val accuracy per epoch; transferlab's frozen run validates its fitted head once
            assert len(run["curve"]) == (1 if solved else 2)
            assert all(0 < t < run["process_s"] for t, _ in run["curve"])  # on the whole process's clock
    assert "| whole process, `python ...` to exit (s) |" in table
