"""Resuming an interrupted sweep: the same multirun command with hydra.sweep.dir=<its dir> skips finished jobs,
resumes incomplete ones from their last.ckpt, reruns failed ones, and the report covers them all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import shrink
from tests.test_sweep import run_train

LRS = ["0.01", "0.02", "0.03"]


def _sweep_args(tiny_folder: Path, tmp_path: Path, sweep: Path, lrs=LRS) -> list[str]:
    return ["-m", *shrink(tiny_folder), "strategy=finetune", f"optimizer.lr={','.join(lrs)}",
            "trainer.max_epochs=2", "logger=none", "callbacks.dashboards=null", f"paths.root_dir={tmp_path}",
            f"hydra.sweep.dir={sweep}"]


def _global_step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow  # three train.py multiruns in subprocesses: ~25 s
def test_rerun_of_a_sweep_skips_ok_resumes_incomplete_and_reruns_failed_jobs(tmp_path, tiny_folder):
    sweep = tmp_path / "sweep"
    # job 0 finished: a summary no training would write (the marker proves it was not retrained)
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "summary.json").write_text(json.dumps({"status": "ok", "val/acc_best": 0.123,
                                                          "marker": "not retrained"}))
    # job 1 incomplete: 1 of its 2 epochs done (a 1-epoch run of the same job, in its directory, no summary)
    first = run_train([*shrink(tiny_folder), "strategy=finetune", "optimizer.lr=0.02", "trainer.max_epochs=1",
                       "logger=none", "callbacks.dashboards=null", f"paths.root_dir={tmp_path}",
                       f"hydra.run.dir={sweep / '1'}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    last = sweep / "1" / "checkpoints" / "last.ckpt"
    steps_per_epoch = _global_step(last)
    assert steps_per_epoch == 3  # debug=tiny: 3 training batches
    (sweep / "1" / "summary.json").unlink()
    # job 2 failed, with a checkpoint of its failed attempt
    (sweep / "2" / "checkpoints").mkdir(parents=True)
    (sweep / "2" / "checkpoints" / "last.ckpt").write_bytes(b"from the failed attempt")
    (sweep / "2" / "summary.json").write_text(json.dumps({"status": "failed", "val/acc_best": None,
                                                          "error": "RuntimeError: CUDA out of memory"}))

    proc = run_train(_sweep_args(tiny_folder, tmp_path, sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the jobs kept their numbers: job n is still lr LRS[n]
    for n, lr in enumerate(LRS):
        assert f"optimizer.lr={lr}" in yaml.safe_load((sweep / str(n) / ".hydra" / "overrides.yaml").read_text())
        assert yaml.safe_load((sweep / str(n) / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"] == n
        assert f"optimizer.lr={lr}" in json.loads((sweep / str(n) / "job.json").read_text())["overrides"]

    s0 = json.loads((sweep / "0" / "summary.json").read_text())
    assert s0["marker"] == "not retrained" and not (sweep / "0" / "checkpoints").exists()
    assert "not retrained" in (sweep / "0" / "train.log").read_text()

    s1 = json.loads((sweep / "1" / "summary.json").read_text())
    assert s1["status"] == "ok"
    assert _global_step(last) == 2 * steps_per_epoch  # continued to the 2-epoch end, not restarted
    assert "resuming from" in (sweep / "1" / "train.log").read_text()

    s2 = json.loads((sweep / "2" / "summary.json").read_text())
    assert s2["status"] == "ok" and _global_step(sweep / "2" / "checkpoints" / "last.ckpt") == 2 * steps_per_epoch
    assert json.loads((sweep / "2" / "summary.json.failed-1").read_text())["status"] == "failed"
    assert (sweep / "2" / "checkpoints.failed-1" / "last.ckpt").read_bytes() == b"from the failed attempt"

    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["optimizer.lr"], r["status"]) for r in rows] == [
        ("0", "0.01", "ok"), ("1", "0.02", "ok"), ("2", "0.03", "ok")]
    assert float(rows[0]["val_acc_best"]) == 0.123

    # Another command in the same sweep dir is refused before it touches a job's results.
    other = run_train(_sweep_args(tiny_folder, tmp_path, sweep, ["0.5", "0.6", "0.7"]), cwd=tmp_path)
    assert other.returncode == 2
    assert "holds another job" in other.stderr and "optimizer.lr=0.01" in other.stderr
    assert json.loads((sweep / "0" / "summary.json").read_text())["marker"] == "not retrained"
