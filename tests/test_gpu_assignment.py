"""Parallel sweeps on a machine with several GPUs: each concurrent job gets its own GPU (faked device count; no
CUDA Trainer is created: the test reads the trainer config the task would get)."""

from __future__ import annotations

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from tests.conftest import compose_config
from transferlab.jobs import run_job


def _trainer_config(tmp_path, monkeypatch, overrides: list[str], num: int, gpus: int, mode=RunMode.MULTIRUN):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    cfg = compose_config(tmp_path, overrides)
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.mode = mode
        hydra_cfg.job.num = num
        hydra_cfg.runtime.output_dir = str(tmp_path / str(num))
    seen = {}

    def task(c):
        seen.update(accelerator=c.trainer.accelerator, devices=c.trainer.devices)
        return {"val/acc_best": 0.5}

    assert run_job(cfg, task=task) == 0.5
    devices = seen["devices"]
    return seen["accelerator"], list(devices) if not isinstance(devices, (str, int)) else devices


JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"]


@pytest.mark.parametrize("num, gpu", [(0, 0), (1, 1), (3, 3), (5, 1)])
def test_each_parallel_job_gets_its_own_gpu(tmp_path, monkeypatch, caplog, num, gpu):
    caplog.set_level("INFO", logger="transferlab.jobs")
    assert _trainer_config(tmp_path, monkeypatch, JOBLIB, num, gpus=4) == ("gpu", [gpu])
    assert f"job {num} trains on GPU {gpu} (trainer.devices=[{gpu}])" in caplog.text


def test_joblib_default_n_jobs_is_parallel_too(tmp_path, monkeypatch):
    assert _trainer_config(tmp_path, monkeypatch, ["hydra/launcher=joblib"], 2, gpus=2) == ("gpu", [0])


@pytest.mark.parametrize("overrides, gpus, mode", [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"], 4, RunMode.MULTIRUN),  # one job at a time
    ([], 4, RunMode.MULTIRUN),                                                      # the basic launcher
    (JOBLIB, 1, RunMode.MULTIRUN),                                                  # one GPU: nothing to share
    (JOBLIB, 0, RunMode.MULTIRUN),                                                  # no CUDA
    ([*JOBLIB, "trainer.devices=2"], 4, RunMode.MULTIRUN),                          # the user chose
    ([*JOBLIB, "trainer.accelerator=cpu"], 4, RunMode.MULTIRUN),
    (JOBLIB, 4, RunMode.RUN),                                                       # not a sweep
])
def test_devices_are_left_alone_otherwise(tmp_path, monkeypatch, overrides, gpus, mode):
    accelerator, devices = _trainer_config(tmp_path, monkeypatch, overrides, 1, gpus=gpus, mode=mode)
    assert (accelerator, devices) != ("gpu", [1])
    assert devices in ("auto", 2)
