"""Crashes and full disks never poison a later run: checkpoint writes are atomic and a failed one fails the run."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, compose_config, shrink
from transferlab.callbacks.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError
from transferlab.models.checkpoint import CheckpointError, readable_checkpoint
from transferlab.tasks.train import train


def test_a_checkpoint_that_cannot_be_written_fails_the_run_naming_the_path(tmp_path, tiny_folder):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the checkpoint folder should be")
    cfg = compose_config(tmp_path, shrink(tiny_folder, **{"callbacks.model_checkpoint.dirpath": blocker / "ckpts"}))
    with pytest.raises(CheckpointSaveError, match=str(blocker / "ckpts")):
        train(cfg)
    assert not (tmp_path / "run" / "summary.json").exists()  # no "Best checkpoint: <a path that does not exist>"


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("transferlab.files.os.fsync", no_space)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind


KILL_MID_SAVE = """
import os, signal, sys, torch
from transferlab.callbacks.checkpoint_io import AtomicCheckpointIO
import transferlab.files as files
real_fsync = files.os.fsync
def die(fd):  # the data is written, the rename has not happened: the worst moment to be killed
    os.kill(os.getpid(), signal.SIGKILL)
files.os.fsync = die
AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1_000_000)}}, sys.argv[1])
"""


def test_a_kill_during_a_save_with_tmpdir_elsewhere_never_truncates_the_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    other_tmp = tmp_path / "elsewhere"
    other_tmp.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(target)], env={"TMPDIR": str(other_tmp),
                          "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}, capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert target.read_bytes() == before  # the good checkpoint is untouched
    assert not list(other_tmp.rglob("*ckpt*"))  # nothing was staged in $TMPDIR


def test_resuming_from_an_unreadable_checkpoint_names_it_and_offers_the_newest_readable(tmp_path):
    good = tmp_path / "epoch001-acc0.5000.ckpt"
    torch.save({"state_dict": {}}, good)
    last = tmp_path / "last.ckpt"
    shutil.copy(good, last)
    with open(last, "r+b") as f:  # truncated by a crash
        f.truncate(last.stat().st_size // 2)
    with pytest.raises(CheckpointError) as err:
        readable_checkpoint(last)
    assert str(last) in str(err.value) and f"ckpt_path={good}" in str(err.value)
    assert readable_checkpoint(good) == good


def test_a_scribbled_checkpoint_is_unreadable_too(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(10_000.0)}}, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\\x00" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="unreadable"):
        readable_checkpoint(path)
