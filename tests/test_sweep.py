"""Sweeps survive their jobs: a failing job is recorded and the others complete; the report has every row.

One real `train.py -m` sweep (basic launcher) runs by default; the joblib launcher's and the single-run exit
status (both real processes) are slow. The job wrapper's rules are pinned down in process below."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write

from tests.conftest import CONF, ROOT, compose_config, shrink
from transferlab.callbacks.hparams import HPARAM_METRICS
from transferlab.jobs import run_job
from transferlab.jobs.attempts import error_line
from transferlab.jobs.ddp import SWEEP_JOB_ENV

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run_train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=ENV)


def hparams_of(tb_dir: Path) -> tuple[dict, list[str], float]:
    """(hparams of the session, metric names declared for the HParams view, last val/acc_best scalar)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    return hparams, metrics, acc.Scalars("val/acc_best")[-1].value


@pytest.mark.slow  # a train.py multirun of four jobs in a subprocess
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_with_failing_jobs_records_them_and_completes_the_others(tmp_path, tiny_folder, launcher):
    # lr=-1: a bad override value (the optimizer refuses it); lr=1e30: the loss goes NaN.
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = run_train(["-m", *shrink(tiny_folder), "optimizer.lr=0.01,-1,1e30,0.02", f"paths.root_dir={tmp_path}",
                      *extra], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "train" / "multiruns").glob("*/*"))
    assert len(sweeps) == 1
    sweep = sweeps[0]

    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert sorted(summaries) == ["0", "1", "2", "3"]
    assert [summaries[j]["status"] for j in "0123"] == ["ok", "failed", "failed", "ok"]
    assert summaries["1"]["error"] == ("ConfigValueError: optimizer.lr=-1: the learning rate must be > 0 "
                                       "(the tutorial's is 0.001).")
    assert summaries["2"]["error"].startswith("FloatingPointError: train/loss is nan")
    assert "Traceback" in (sweep / "1" / "train.log").read_text()  # the full error is in the job's log

    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["optimizer.lr"], r["status"]) for r in rows] == [
        ("0", "0.01", "ok"), ("1", "-1", "failed"), ("2", "1e+30", "failed"), ("3", "0.02", "ok")]
    assert float(rows[0]["val_acc_best"]) == summaries["0"]["val/acc_best"]
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").stat().st_size > 0

    # HParams view: every completed job is a session with its hparams and the run's metrics declared.
    for job in ("0", "3"):
        hparams, metrics, best = hparams_of(sweep / job / "tensorboard")
        assert metrics == list(HPARAM_METRICS)
        assert hparams["optimizer.lr"] == {"0": 0.01, "3": 0.02}[job]
        assert best == pytest.approx(summaries[job]["val/acc_best"])


@pytest.mark.slow  # train.py's one-line refusal is checked by default in tests/test_config_values.py
def test_single_run_failure_still_fails_the_command(tmp_path, tiny_folder):
    proc = run_train([*shrink(tiny_folder), "optimizer.lr=-1", f"paths.root_dir={tmp_path}", "logger=none"],
                     cwd=tmp_path)
    assert proc.returncode != 0
    assert "optimizer.lr=-1: the learning rate must be > 0" in proc.stderr


# --- the job wrapper in-process --------------------------------------------------------------------------------
def _as_job(tmp_path: Path, mode: RunMode, overrides: list[str] = ()):
    cfg = compose_config(tmp_path, list(overrides))
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.mode = mode
        hydra_cfg.runtime.output_dir = str(tmp_path / "run")
    return cfg


def _boom(cfg):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")


def test_failed_job_in_a_multirun_returns_none_and_writes_a_failed_summary(tmp_path):
    cfg = _as_job(tmp_path, RunMode.MULTIRUN)
    assert run_job(cfg, task=_boom) is None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert summary["val/acc_best"] is None


def test_failed_job_in_a_single_run_raises_and_writes_a_failed_summary(tmp_path):
    cfg = _as_job(tmp_path, RunMode.RUN)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_job(cfg, task=_boom)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_job_returns_val_acc_best_or_none(tmp_path):
    cfg = _as_job(tmp_path, RunMode.MULTIRUN)
    assert run_job(cfg, task=lambda c: {"val/acc_best": 0.75}) == 0.75
    assert run_job(cfg, task=lambda c: {"val/acc_best": None}) is None
    assert run_job(cfg, task=lambda c: {"val/acc_best": math.nan}) is None  # a NaN would crash the Optuna sweeper


def test_ddp_children_get_this_jobs_command_line_and_directory(tmp_path, monkeypatch):
    """What Lightning's _hydra_subprocess_cmd reads while the job runs: argv without -m and the swept lists,
    and a Hydra run dir that is the job's directory. Everything is put back afterwards."""
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "strategy=frozen,finetune", "hydra.sweep.dir=/x"])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = _as_job(tmp_path, RunMode.MULTIRUN, ["strategy=frozen", "seed=3"])
    with read_write(HydraConfig.get()):
        HydraConfig.get().overrides.hydra = ["hydra.sweep.dir=/x", "hydra.mode=MULTIRUN"]
    seen = {}

    def task(c):
        seen.update(argv=list(sys.argv), run_dir=HydraConfig.get().run.dir, env=os.environ.get(SWEEP_JOB_ENV))
        os.environ["LOCAL_RANK"] = "0"  # what Lightning's launcher leaves behind
        os.environ["MASTER_PORT"] = "12345"
        return {"val/acc_best": 1.0}

    assert run_job(cfg, task=task) == 1.0
    assert seen["argv"][0] == "train.py" and "-m" not in seen["argv"]
    assert seen["argv"][1] == "--config-name=train"
    assert "strategy=frozen" in seen["argv"] and "seed=3" in seen["argv"]
    assert "hydra.sweep.dir=/x" in seen["argv"] and "hydra.mode=MULTIRUN" not in seen["argv"]
    assert seen["run_dir"] == str(tmp_path / "run")
    assert seen["env"] == str(tmp_path / "run")
    assert sys.argv == ["train.py", "-m", "strategy=frozen,finetune", "hydra.sweep.dir=/x"]
    assert "LOCAL_RANK" not in os.environ and SWEEP_JOB_ENV not in os.environ
    assert os.environ.get("MASTER_PORT") != "12345"


def test_failing_ddp_child_rank_of_a_sweep_job_exits_cleanly(tmp_path, monkeypatch):
    """A child rank runs in run mode; told it belongs to a sweep job it must not exit non-zero (Lightning
    would SIGKILL the whole sweep), and only rank 0 writes the summary."""
    cfg = _as_job(tmp_path, RunMode.RUN)
    monkeypatch.setenv(SWEEP_JOB_ENV, str(tmp_path / "run"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_job(cfg, task=_boom) is None
    assert not (tmp_path / "run" / "summary.json").exists()


def test_requeued_slurm_job_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    cfg = _as_job(tmp_path, RunMode.MULTIRUN)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    seen = []
    task = lambda c: seen.append(c.ckpt_path) or {"val/acc_best": 0.5}  # noqa: E731
    run_job(cfg, task=task)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_job(cfg, task=task)
    assert seen == [None, str(last)]


def test_error_line_keeps_the_cause_of_an_introducing_line():
    assert error_line(ValueError("bad\nsecond")) == "ValueError: bad"
    assert error_line(KeyError()) == "KeyError"
    wrapped = Exception("Error in call to target 'torch.optim.sgd.SGD':\nValueError('Invalid learning rate')")
    assert error_line(wrapped) == "Exception: Error in call to target 'torch.optim.sgd.SGD': ValueError('Invalid " \
                                  "learning rate')"
    assert len(error_line(RuntimeError("x" * 1000))) == 300


# --- the SLURM launcher config ------------------------------------------------------------------------------
def test_slurm_launcher_config_keeps_the_sweep_dir_across_a_requeue(tmp_path):
    """submitit pickles the launcher with the master config and rebuilds each job's config from it on a
    requeue (load_sweep_config copies the resolver cache), so the ${now:...} sweep dir must come out the same."""
    GlobalHydra.instance().clear()
    overrides = [f"paths.root_dir={tmp_path}", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        master = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(master)
        launcher = master.hydra.launcher
        assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
        assert launcher.partition == "gpu" and launcher.max_num_timeout >= 1
        sweep_dir = str(master.hydra.sweep.dir)
        assert launcher.submitit_folder == f"{sweep_dir}/.submitit/%j"

        shipped = pickle.loads(pickle.dumps(master))
        time.sleep(1.1)  # ${now:%H-%M-%S} would now give another directory
        fresh = compose("train", overrides=overrides, return_hydra_config=True)
        OmegaConf.copy_cache(from_config=shipped, to_config=fresh)  # what load_sweep_config does
        assert str(fresh.hydra.sweep.dir) == sweep_dir
        assert str(compose("train", overrides=overrides, return_hydra_config=True).hydra.sweep.dir) != sweep_dir
