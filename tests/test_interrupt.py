"""Interruptions end honestly (a checkpoint of the moment, status interrupted, a non-zero exit) and resume exactly.
In process, signalling this process mid-epoch; the real `train.py` killed by SIGTERM and resumed is slow."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import ROOT, compose_config, shrink
from transferlab.callbacks.interrupt import RunInterrupted
from transferlab.tasks.train import train

# Two epochs of 4 batches, deterministic, augmentation and BatchNorm at work: what a resume must reproduce.
EXACT = {"strategy": "finetune", "trainer.max_epochs": 2, "trainer.limit_train_batches": 4,
         "trainer.deterministic": "true", "callbacks.early_stopping": "null", "logger": "none",
         "callbacks.dashboards": "null"}


class SignalAt(L.Callback):
    """Sends `signum` to this process after optimizer step `step` (the moment a scheduler would kill us)."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _train(tmp_path: Path, folder: Path, run: str, extra_callbacks=(), **overrides):
    cfg = compose_config(tmp_path, shrink(folder, **{**EXACT, **overrides}))
    cfg.paths.output_dir = str(tmp_path / run)
    return train(cfg, extra_callbacks=list(extra_callbacks))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                         # SIGUSR1 stops a run by default too: test_sigusr1_on_slurm_requeues_the_job
                                         pytest.param(signal.SIGUSR1, 138, marks=pytest.mark.slow)])
def test_a_signal_mid_epoch_checkpoints_that_moment_and_says_how_to_resume(tmp_path, tiny_folder, signum, code):
    with pytest.raises(RunInterrupted) as stopped:
        _train(tmp_path, tiny_folder, "run", [SignalAt(signum, 6)])
    assert stopped.value.exit_code == code
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signal.Signals(signum).name
    assert "ckpt_path=" in summary["resume_command"] and f"hydra.run.dir={run}" in summary["resume_command"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1  # mid-epoch 1, not the end of epoch 0


def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, tiny_folder):
    whole = _train(tmp_path, tiny_folder, "whole")
    with pytest.raises(RunInterrupted):
        _train(tmp_path, tiny_folder, "split", [SignalAt(signal.SIGTERM, 6)])
    resumed = _train(tmp_path, tiny_folder, "split", ckpt_path=str(tmp_path / "split"))
    a = torch.load(whole["last_checkpoint"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"{len(different)} of {len(a['state_dict'])} tensors differ, e.g. {different[:3]}"
    assert resumed["val/acc_best"] == whole["val/acc_best"]
    assert Path(resumed["last_checkpoint"]).parent == tmp_path / "split" / "checkpoints"  # same run directory


def test_sigusr1_on_slurm_requeues_the_job(tmp_path, tiny_folder, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(RunInterrupted):
        _train(tmp_path, tiny_folder, "run", [SignalAt(signal.SIGUSR1, 2)])
    assert log.read_text().split() == ["requeue", "4242"]


@pytest.mark.slow
def test_sigterm_to_train_py_exits_143_and_its_resume_command_finishes_the_run(tmp_path, tiny_folder):
    args = [*shrink(tiny_folder), "trainer.max_epochs=60", "trainer.limit_train_batches=2", "logger=none",
            "callbacks.early_stopping=null", "callbacks.dashboards=null", "hydra.run.dir=run"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = tmp_path / "run" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # wait until it is really training
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] < 120
    assert "Resume with:" in err
    resumed = subprocess.run(shlex.split(summary["resume_command"].replace("python train.py",
                             f"{sys.executable} {ROOT / 'train.py'}", 1)), cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert done["status"] == "ok"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 120


@pytest.mark.parametrize("scheduler,step", [
    ("steplr", 2),  # stopped before the unfreeze epoch
    pytest.param("steplr", 6, marks=pytest.mark.slow),  # ... after it
    pytest.param("cosine", 2, marks=pytest.mark.slow),
    pytest.param("cosine", 6, marks=pytest.mark.slow),
])
def test_gradual_resumes_exactly_on_either_side_of_its_unfreeze_epoch(tmp_path, tiny_folder, scheduler, step):
    settings = {"strategy": "gradual", "strategy.unfreeze_at": 1, "scheduler": scheduler}
    whole = _train(tmp_path, tiny_folder, "whole", **settings)
    with pytest.raises(RunInterrupted):
        _train(tmp_path, tiny_folder, "split", [SignalAt(signal.SIGTERM, step)], **settings)
    resumed = _train(tmp_path, tiny_folder, "split", ckpt_path=str(tmp_path / "split"), **settings)
    a, b = _weights(Path(whole["last_checkpoint"])), _weights(Path(resumed["last_checkpoint"]))
    assert not [k for k in a if not torch.equal(a[k], b[k])]
