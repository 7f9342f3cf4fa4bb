"""Lightning DDP with 2 CPU processes (gloo) inside a Hydra run: one output directory, not one per rank.

Lightning starts rank 1 by re-running the command line with Hydra's run dir. These tests run `train.py` in a
subprocess, as a user would, and check where everything landed. All slow (each starts two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, shrink

# `++`: set trainer.strategy whether or not conf/trainer/default.yaml declares it.
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "++trainer.strategy=ddp"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run_train(args, cwd, timeout=300, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env or ENV)


@pytest.mark.slow  # train.py and its rank 1: ~15 s on 2 cores
def test_ddp_single_run_writes_one_run_dir(tmp_path, tiny_folder):
    proc = run_train([*shrink(tiny_folder), *DDP, f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # really two ranks

    outputs = tmp_path / "outputs"
    runs = [p for p in (outputs / "train" / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    assert not (outputs / "train" / "multiruns").exists()
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["val/acc_best"] is not None
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran in this same directory

    # Rank 0 logged the dashboards from metrics synced over both ranks.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "val/confusion_matrix" in acc.Tags()["images"]
    assert {"val_recall/ant", "val_recall/bee"} <= set(acc.Tags()["scalars"])


@pytest.mark.slow  # two DDP jobs, each starting a second process: ~1 min on 2 cores
def test_ddp_multirun_keeps_each_job_in_its_own_dir_and_survives_a_failing_job(tmp_path, tiny_folder):
    # lr=1e30: the loss goes NaN on both ranks mid-training (lr<=0 is now refused before DDP even starts)
    proc = run_train(["-m", *shrink(tiny_folder), *DDP, "optimizer.lr=0.01,1e30,0.02", f"paths.root_dir={tmp_path}",
                      "logger=none"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = tmp_path / "outputs"
    assert not (outputs / "train" / "runs").exists()  # no rank re-entered Hydra into a run dir of its own
    sweeps = list((outputs / "train" / "multiruns").glob("*/*"))
    assert len(sweeps) == 1, sweeps  # ... nor started a sweep of its own
    sweep = sweeps[0]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2"]
    status = {j: json.loads((sweep / j / "summary.json").read_text())["status"] for j in jobs}
    assert status == {"0": "ok", "1": "failed", "2": "ok"}  # the job after the failed one still trains
    for j in jobs:
        assert (sweep / j / "train_ddp_process_1.log").is_file()
    assert (sweep / "summary.csv").is_file()


@pytest.mark.slow  # two processes, three epochs: ~30 s on 2 cores
@pytest.mark.parametrize("scheduler", ["steplr", "cosine"])
def test_gradual_under_ddp_trains_the_backbone_on_every_rank_and_ranks_stay_identical(tmp_path, tiny_folder,
                                                                                       scheduler):
    """Lightning's BackboneFinetuning trap (pytorch-lightning #20340): parameters frozen when DDP wraps the
    model are never all-reduced, so after unfreezing each rank trains its own backbone."""
    probe = tmp_path / "weights"
    proc = run_train([*shrink(tiny_folder), *DDP, f"paths.root_dir={tmp_path}", "logger=none",
                      "strategy=gradual", "strategy.unfreeze_at=1", "trainer.max_epochs=3",
                      f"scheduler={scheduler}", "callbacks.early_stopping=null", "callbacks.dashboards=null",
                      "+callbacks.probe._target_=tests.ddp_probe.SaveRankWeights", f"+callbacks.probe.folder={probe}"],
                     cwd=tmp_path, env={**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                                                                  os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = torch.load(probe / "start_rank0.pt", weights_only=True)
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    backbone = [k for k in start if k.startswith("backbone.") and start[k].is_floating_point()
                and not k.endswith(("running_mean", "running_var"))]
    assert any(not torch.equal(start[k], ranks[0][k]) for k in backbone), "the backbone never trained"
    differ = [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    assert not differ, f"ranks disagree on {len(differ)} tensors, e.g. {differ[:3]}"


@pytest.mark.slow  # two processes, real Lite0 weights: ~40 s on 2 cores
def test_lpft_under_ddp_enters_its_fitted_head_on_every_rank(tmp_path, tiny_folder):
    """The fitted head's checkpoint is saved by a collective call when fine-tuning starts: every rank makes it
    (a rank that skipped it would leave the other waiting), and the head is the run's first validation."""
    proc = run_train([*shrink(tiny_folder), *DDP, f"paths.root_dir={tmp_path}", "logger=none", "strategy=lpft",
                      "backbone=efficientnet_lite0", "trainer.limit_val_batches=1.0", "trainer.max_epochs=1"],
                     cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "outputs" / "train" / "runs").glob("*/*") if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    head = summary["head_fit"]["val_accuracy"]
    assert summary["val_history"][0]["epoch"] == -1 and summary["val_history"][0]["val_acc"] == head
    assert summary["val/acc_best"] >= head
    best = [p.name for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1 and (summary["best_epoch"] == -1) == best[0].startswith("head_fit-acc")
