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
    error = "ConfigValueError: optimizer.lr=-1: the learning rate must be > 0 (the tutorial's is 0.001)."
    assert [(r["status"], r["error"]) for r in rows] == [("failed", error)] * 2
