"""hparams_search=optuna: Hydra's Optuna sweeper maximising val/acc_best, stored in SQLite so it resumes.
Slow: two `train.py -m` processes of two trials each."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shrink

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def search(tmp_path, folder, *extra: str) -> subprocess.CompletedProcess:
    # backbone=tiny on the command line (debug=tiny's, made explicit) is a fixed parameter: Optuna then searches
    # lr, weight decay and strategy only.
    args = ["-m", "hparams_search=optuna", *shrink(folder, backbone="tiny"), f"paths.root_dir={tmp_path}",
            "logger=none", *extra]
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env=ENV)


@pytest.mark.slow
def test_optuna_search_runs_trials_and_resumes_its_sqlite_study(tmp_path, tiny_folder):
    optuna = pytest.importorskip("optuna")
    first = search(tmp_path, tiny_folder, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    db = tmp_path / "outputs" / "optuna" / "transferlab.db"
    assert db.is_file()
    study = optuna.load_study(study_name="transferlab", storage=f"sqlite:///{db}")
    assert len(study.trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        assert 1e-4 <= trial.params["optimizer.lr"] <= 1e-1
        assert 1e-6 <= trial.params["optimizer.weight_decay"] <= 1e-2
        assert trial.params["strategy"] in {"finetune", "frozen", "partial"}
        assert trial.user_attrs["backbone"] == "tiny"  # a command-line override is fixed, not searched
    (sweep,) = list((tmp_path / "outputs" / "train" / "multiruns").glob("*/*"))
    # The value Optuna recorded is the job's val/acc_best, as the job's summary.json has it.
    for trial in study.trials:
        summary = json.loads((sweep / str(trial.number) / "summary.json").read_text())
        assert trial.value == pytest.approx(summary["val/acc_best"])
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {"optimizer.lr", "optimizer.weight_decay"} <= set(rows[0])
    assert (sweep / "optimization_results.yaml").is_file()

    # Same command, same study: it resumes. Its trials fail (lr pinned to an invalid value); each is a FAIL in
    # the study and a failed row in the report, and the search goes on to the next trial.
    second = search(tmp_path, tiny_folder, "hydra.sweeper.n_trials=2", "optimizer.lr=-1")
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="transferlab", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    sweeps = sorted((tmp_path / "outputs" / "train" / "multiruns").glob("*/*"))
    assert len(sweeps) == 2
    with open(sweeps[-1] / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    refused = "ConfigValueError: optimizer.lr=-1: the learning rate must be > 0 (the tutorial's is 0.001)."
    assert [(r["status"], r["error"]) for r in rows] == [("failed", refused)] * 2


# --- repeat: each trial evaluated on several seeds or folds, the mean as the objective ------------------------
def _job(tmp_path, overrides):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, overrides)
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.MULTIRUN
        HydraConfig.get().runtime.output_dir = str(tmp_path / "job")
    return cfg


def test_a_job_repeated_on_two_seeds_returns_the_mean_of_their_val_acc_best(tmp_path, tiny_folder):
    import statistics

    from transferlab.jobs import run_job

    cfg = _job(tmp_path, shrink(tiny_folder, **{"+repeat.seeds": "[1,2]", "logger": "none",
                                                "callbacks.dashboards": "null", "trainer.max_epochs": 2}))
    value = run_job(cfg)
    reps = {name: json.loads((tmp_path / "job" / name / "summary.json").read_text())
            for name in ("rep_seed1", "rep_seed2")}
    assert all(r["status"] == "ok" and r["seed"] == seed for r, seed in zip(reps.values(), (1, 2), strict=True))
    values = [r["val/acc_best"] for r in reps.values()]
    assert value == pytest.approx(statistics.fmean(values))
    job = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert job["status"] == "ok" and job["val/acc_best"] == pytest.approx(value)
    assert job["repeat"]["values"] == dict(zip(reps, values, strict=True))
    assert job["val/acc_best_n"] == 2 and job["val/acc_best_std"] == pytest.approx(statistics.stdev(values))
    assert (tmp_path / "job" / "rep_seed1" / "checkpoints" / "last.ckpt").is_file()
    from transferlab.models.checkpoint import load_model

    for name, seed in (("rep_seed1", 1), ("rep_seed2", 2)):  # what follows ${seed} follows each repetition's seed
        strategy = load_model(tmp_path / "job" / name / "checkpoints" / "last.ckpt").strategy
        assert strategy.head_fit.seed == seed


def test_repeat_folds_runs_each_fold_in_its_own_directory(tmp_path, tiny_folder):
    from transferlab.jobs import run_job

    cfg = _job(tmp_path, shrink(tiny_folder, **{"+repeat.folds": 3, "+repeat.seeds": "[5]"}))
    seen = []

    def task(c):
        seen.append((c.seed, c.dataset.folds, c.dataset.fold, c.paths.output_dir, c.dataset.split_seed))
        return {"val/acc_best": 0.5 + 0.1 * c.dataset.fold}

    assert run_job(cfg, task=task) == pytest.approx(0.6)
    assert seen == [(5, 3, i, str(tmp_path / "job" / f"rep_seed5_fold{i}"), 5) for i in range(3)]


def test_a_failing_repetition_fails_the_job(tmp_path, tiny_folder):
    from transferlab.jobs import run_job

    cfg = _job(tmp_path, shrink(tiny_folder, **{"+repeat.seeds": "[1,2,3]"}))
    calls = []

    def task(c):
        calls.append(c.seed)
        if c.seed == 2:
            raise FloatingPointError("train/loss is nan")
        return {"val/acc_best": 0.5}

    assert run_job(cfg, task=task) is None
    assert calls == [1, 2]  # the trial is a FAIL: no point in training seed 3
    job = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert job["status"] == "failed" and job["error"] == "rep_seed2: FloatingPointError: train/loss is nan"


@pytest.mark.slow  # an Optuna search in a subprocess
def test_optuna_trials_repeated_on_seeds(tmp_path, tiny_folder):
    pytest.importorskip("optuna")
    proc = search(tmp_path, tiny_folder, "hydra.sweeper.n_trials=1", "+repeat.seeds=[1,2]",
                  "hydra.sweeper.study_name=repeat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = next((tmp_path / "outputs" / "train" / "multiruns").glob("*/*/0"))
    summary = json.loads((job / "summary.json").read_text())
    assert sorted(summary["repeat"]["values"]) == ["rep_seed1", "rep_seed2"]
    results = (job.parent / "optimization_results.yaml").read_text()
    assert f"best_value: {summary['val/acc_best']}" in results
