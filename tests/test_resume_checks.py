"""Resuming on a changed run: a checkpoint resumed with another backbone, head, plan of phases, class list or
input size is refused in one line naming each field (its value in the checkpoint and now) and the way out; an
image added to or removed from the same classes is resumed with a warning naming the counts; `resume=false`
starts a new run from the checkpoint's weights. Real files on disk, the real `train(cfg)` (and `train.py`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import ROOT, TINY_SPLITS, compose_config, make_folder, run_script, shrink
from transferlab.errors import CheckpointError, ConfigValueError
from transferlab.tasks.train import resume_command, settings_of, train

# Two epochs of 3 batches (6 steps) for the run every test resumes; no logger or dashboards (seconds).
FAST = {"strategy": "finetune", "trainer.max_epochs": 2, "logger": "none", "callbacks.dashboards": "null"}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> dict:
    """The 2-class tiny folder (ant, bee) trained once; read-only (a test that changes the data copies it)."""
    base = tmp_path_factory.mktemp("resume_checks")
    data = make_folder(base / "data", TINY_SPLITS)
    summary = train(compose_config(base, shrink(data, **FAST)))
    GlobalHydra.instance().clear()
    return {"run_dir": base / "run", "data": data, "last": Path(summary["last_checkpoint"])}


def _resume(tmp_path: Path, data: Path, ckpt: Path, extra_callbacks=(), **overrides) -> dict:
    cfg = compose_config(tmp_path, shrink(data, **{**FAST, "trainer.max_epochs": 3, "ckpt_path": ckpt, **overrides}))
    return train(cfg, extra_callbacks=list(extra_callbacks))


def _copy(first_run: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(first_run["data"], tmp_path / "data"))


def _renamed(first_run: dict, tmp_path: Path) -> Path:
    """The same images, the class folder bee renamed wasp (train and val)."""
    data = _copy(first_run, tmp_path)
    for split in ("train", "val"):
        os.rename(data / split / "bee", data / split / "wasp")
    return data


def _refused(tmp_path: Path, data: Path, ckpt: Path, **overrides) -> str:
    with pytest.raises(CheckpointError) as refused:
        _resume(tmp_path, data, ckpt, **overrides)
    message = str(refused.value)
    assert "\n" not in message, message
    assert "resume=false" in message and "new run" in message, message
    assert not list((tmp_path / "run").rglob("*.ckpt")), "a refused resume trained"
    assert not list(tmp_path.rglob("features")), "a refused resume extracted features"
    return message


def test_a_renamed_class_is_refused_naming_both_class_lists(first_run, tmp_path):
    message = _refused(tmp_path, _renamed(first_run, tmp_path), first_run["run_dir"])
    assert "class_names: ['ant', 'bee'] in the checkpoint, ['ant', 'wasp'] now" in message
    assert str(first_run["last"]) in message


def test_another_backbone_is_refused(first_run, tmp_path):
    message = _refused(tmp_path, first_run["data"], first_run["run_dir"], **{"backbone.name": "test_resnet"})
    assert "backbone: timm/test_efficientnet in the checkpoint, timm/test_resnet now" in message


def test_another_head_is_refused(first_run, tmp_path):
    message = _refused(tmp_path, first_run["data"], first_run["run_dir"], head="mlp")
    assert "head.kind: 'linear' in the checkpoint, 'mlp' now" in message
    assert "head.hidden: None in the checkpoint, 512 now" in message


def test_another_image_size_is_refused(first_run, tmp_path):
    message = _refused(tmp_path, first_run["data"], first_run["run_dir"], **{"dataset.input.image_size": 48})
    assert "input_spec.image_size: 32 in the checkpoint, 48 now" in message


def test_a_strategy_with_other_phases_is_refused_before_any_feature_is_extracted(first_run, tmp_path):
    message = _refused(tmp_path, first_run["data"], first_run["run_dir"], strategy="lpft")
    assert "phases: fit (strategy=finetune) in the checkpoint, fit_head -> fit (strategy=lpft) now" in message


def test_another_strategy_with_the_same_phases_is_refused_too(first_run, tmp_path):
    message = _refused(tmp_path, first_run["data"], first_run["run_dir"], strategy="partial")
    assert "strategy: finetune in the checkpoint, partial now" in message and "phases:" not in message


def test_every_difference_is_named_in_the_one_line(first_run, tmp_path):
    message = _refused(tmp_path, _renamed(first_run, tmp_path), first_run["run_dir"],
                       **{"dataset.input.image_size": 48, "backbone.name": "test_resnet"})
    assert all(field in message for field in ("backbone:", "class_names:", "input_spec.image_size:"))


def test_train_py_refuses_a_renamed_class_in_one_line_and_exits_2(first_run, tmp_path, monkeypatch, capsys):
    data = _renamed(first_run, tmp_path)
    code, err, _ = run_script("train.py", *shrink(data, logger="none", ckpt_path=first_run["run_dir"]),
                              cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "class_names: ['ant', 'bee'] in the checkpoint, ['ant', 'wasp'] now" in line and "resume=false" in line


@pytest.mark.slow  # a train.py process of its own; the same refusal through train.py in process just above
def test_train_py_in_a_subprocess_refuses_another_image_size_and_exits_2(first_run, tmp_path):
    args = shrink(first_run["data"], logger="none", ckpt_path=first_run["run_dir"], **{"dataset.input.image_size": 48})
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "input_spec.image_size: 32 in the checkpoint, 48 now" in proc.stderr


def test_an_added_image_resumes_with_a_warning_naming_the_counts(first_run, tmp_path, caplog):
    data = _copy(first_run, tmp_path)
    pixels = np.random.default_rng(7).integers(0, 255, size=(24, 24, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(data / "train" / "ant" / "100.png")
    with caplog.at_level(logging.WARNING):
        resumed = _resume(tmp_path, data, first_run["run_dir"])
    warnings = [r.getMessage() for r in caplog.records if "dataset changed" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "train: 24 images in the checkpoint, 25 now" in warnings[0]
    assert "val: 12 images in the checkpoint, 12 now" in warnings[0]
    last = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=True)
    assert last["global_step"] == 9 and last["dataset"]["train"] == 25  # resumed: 6 steps + one epoch of 3


def test_a_checkpoint_without_a_fingerprint_warns_that_the_data_cannot_be_checked(first_run, tmp_path, caplog):
    old = torch.load(first_run["last"], map_location="cpu", weights_only=True)
    old.pop("dataset", None)  # as written before checkpoints recorded their data
    torch.save(old, tmp_path / "old.ckpt")
    with caplog.at_level(logging.WARNING):
        resumed = _resume(tmp_path, first_run["data"], tmp_path / "old.ckpt")
    assert any("cannot be checked" in r.getMessage() for r in caplog.records)
    assert torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=True)["global_step"] == 9


class FirstWeights(L.Callback):
    """The head's weights as training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.head = {k: v.detach().clone() for k, v in pl_module.head.state_dict().items()}


def test_resume_false_starts_a_new_run_from_the_weights_on_a_renamed_class_list(first_run, tmp_path):
    start = FirstWeights()
    summary = _resume(tmp_path, _renamed(first_run, tmp_path), first_run["run_dir"], [start],
                      resume="false", **{"trainer.max_epochs": 1})
    old = torch.load(first_run["last"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, old[f"head.{k}"]) for k, v in start.head.items())  # from those weights
    assert summary["classes"] == ["ant", "wasp"]
    assert [h["epoch"] for h in summary["val_history"]] == [0]  # only this run's epoch
    assert summary["initial_weights"] == str(first_run["last"])
    new = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert new["epoch"] == 0 and new["global_step"] == 3  # epoch 0, not the old run's 6 steps + 3
    assert new["transferlab"]["class_names"] == ["ant", "wasp"]


def test_resume_false_on_a_frozen_plan_fits_the_head_on_the_checkpoints_backbone_not_a_cached_one(first_run,
                                                                                                  tmp_path):
    def frozen(run: str, **overrides) -> dict:
        cfg = compose_config(tmp_path, shrink(first_run["data"], **{**FAST, "strategy": "frozen", **overrides}))
        cfg.paths.output_dir = str(tmp_path / run)
        return train(cfg)

    frozen("pretrained")  # caches the features of the backbone as built (random init, weights null)
    summary = frozen("from_weights", ckpt_path=first_run["last"], resume="false")
    assert len(list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))) == 2  # its own features
    old = torch.load(first_run["last"], map_location="cpu", weights_only=True)["state_dict"]
    new = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(new[k], v) for k, v in old.items() if k.startswith("backbone."))


def test_resume_false_into_another_shape_is_one_error_naming_the_tensor(first_run, tmp_path):
    data = make_folder(tmp_path / "data3", {"train": {"ant": 4, "bee": 4, "wasp": 4}, "val": {"ant": 2, "bee": 2,
                                                                                             "wasp": 2}})
    with pytest.raises(CheckpointError) as refused:
        _resume(tmp_path, data, first_run["run_dir"], resume="false")
    message = str(refused.value)
    assert "\n" not in message and "resume=false" in message
    assert "head.0.weight: (2, " in message and "(3, " in message, message


def test_resume_must_be_true_or_false(first_run, tmp_path):
    with pytest.raises(ConfigValueError, match=r"resume='maybe'"):
        _resume(tmp_path, first_run["data"], first_run["run_dir"], resume="maybe")


def test_the_resume_command_of_a_run_started_with_resume_false_continues_it(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, ckpt_path=tmp_path / "x.ckpt", resume="false"))
    command = resume_command(settings_of(cfg))
    assert "resume=" not in command and "ckpt_path={ckpt}" in command


def test_an_incomplete_sweep_job_resumes_its_own_checkpoint_even_if_it_started_with_resume_false(tmp_path):
    from transferlab.jobs.attempts import previous_attempt
    from transferlab.jobs.ddp import ckpt_override

    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.create({"ckpt_path": "elsewhere.ckpt", "resume": False})
    assert previous_attempt(cfg, tmp_path) == (False, None)
    assert cfg.ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt") and cfg.resume is True
    assert "resume=false" in ckpt_override(OmegaConf.create({"ckpt_path": "a.ckpt", "resume": False}))


def test_the_resume_command_names_a_run_directory_with_spaces_accents_and_equals_exactly(tmp_path, tiny_folder):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_config(tmp_path, shrink(tiny_folder))
    cfg.paths.output_dir = str(tmp_path / "my runs" / "café=1 'quoted'")
    settings = settings_of(cfg)
    words = shlex.split(resume_command(settings))
    (run_word,) = [w for w in words if w.startswith("hydra.run.dir=")]
    assert OverridesParser.create().parse_override(run_word).value() == str(settings.output_dir)
    assert "'quoted'" in str(settings.output_dir)
