"""Out-of-range values fail at start-up, naming the key, the value and the allowed range."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, compose_config
from transferlab.config.checks import ConfigValueError
from transferlab.config.settings import RunSettings


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("dataset.batch_size=0", "dataset.batch_size"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("dataset.val_fraction=1.5", "dataset.val_fraction"),
    ("dataset.val_fraction=0", "dataset.val_fraction"),
    ("trainer.accelerator=cpu trainer.precision=16-mixed", "trainer.precision"),
    ("strategy=lpft strategy.head_fit.max_logit_std=0", "strategy.head_fit.max_logit_std"),
    ("strategy=lpft strategy.head_fit.max_logit_std=-1.0", "strategy.head_fit.max_logit_std"),
])
def test_out_of_range_values_are_refused_naming_the_key(tmp_path, override, key):
    cfg = compose_config(tmp_path, override.split())
    with pytest.raises(ConfigValueError) as err:
        RunSettings.from_config(cfg)
    assert str(err.value).startswith(f"{key}=")


def test_a_dataset_root_that_is_a_file_is_named(tmp_path):
    not_a_folder = tmp_path / "images.zip"
    not_a_folder.write_bytes(b"PK")
    cfg = compose_config(tmp_path, ["dataset=folder", f"dataset.root={not_a_folder}"])
    with pytest.raises(ConfigValueError, match="dataset.root=.*is a file"):
        RunSettings.from_config(cfg)


def test_the_defaults_pass(tmp_path):
    RunSettings.from_config(compose_config(tmp_path))


@pytest.mark.slow  # a train.py subprocess; test_out_of_range_values_are_refused_naming_the_key checks in process
def test_train_py_refuses_before_touching_data_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "optimizer.lr=0", "logger=none"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: optimizer.lr=0") and "must be > 0" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # the digits were never written
    assert not list(tmp_path.rglob("*.ckpt"))
