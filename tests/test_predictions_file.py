"""val_predictions.csv: every training job writes what its best epoch predicted for each validation image."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from tests.conftest import compose_config, shrink
from transferlab.callbacks.predictions import ValPredictions, _unique_by_index
from transferlab.evaluation.stats import PREDICTION_COLUMNS, read_predictions
from transferlab.tasks.train import train

WHOLE_VAL = {"trainer.limit_val_batches": 1.0, "logger": "none"}


def rows_of(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("strategy", ["finetune", "frozen"])  # frozen validates on cached features
def test_job_writes_one_row_per_val_image_and_its_accuracy_is_val_acc_best(tmp_path, tiny_folder, strategy):
    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy=strategy, **{"trainer.max_epochs": 2}, **WHOLE_VAL))
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    rows = rows_of(run / "val_predictions.csv")
    assert tuple(rows[0]) == PREDICTION_COLUMNS
    val_files = sorted(str(p) for p in (tiny_folder / "val").rglob("*.png"))
    assert sorted(r["file"] for r in rows) == val_files  # one row per val image, each once
    assert all(r["true"] == ("ant" if "/ant/" in r["file"] else "bee") for r in rows)
    assert {r["predicted"] for r in rows} <= {"ant", "bee"}
    for r in rows:
        p, pt = float(r["probability"]), float(r["true_probability"])
        assert 0.5 - 1e-6 <= p <= 1.0 and 0.0 <= pt <= 1.0  # two classes: the argmax has at least 1/2
        assert (pt == p) == (r["predicted"] == r["true"]) or math.isclose(p, 0.5, abs_tol=1e-6)
    accuracy = sum(r["predicted"] == r["true"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(summary["val/acc_best"], abs=1e-6)
    assert read_predictions(run / "val_predictions.csv")[rows[0]["file"]] == (rows[0]["true"], rows[0]["predicted"])


def test_switched_off_with_null(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, **{"callbacks.val_predictions": "null"}, **WHOLE_VAL))
    train(cfg)
    assert (tmp_path / "run" / "summary.json").is_file()
    assert not (tmp_path / "run" / "val_predictions.csv").exists()


def test_padded_ddp_rows_are_deduplicated_by_index():
    # DistributedSampler pads with repeats of the first indices; each image is kept once, in index order.
    rows = torch.tensor([[2, 1, 1, 0.9, 0.9], [0, 0, 1, 0.6, 0.4], [1, 1, 1, 0.7, 0.7], [0, 0, 1, 0.6, 0.4]])
    assert _unique_by_index(rows)[:, 0].tolist() == [0, 1, 2]


def test_best_rows_survive_a_checkpoint_round_trip():
    cb = ValPredictions()
    cb._noted_best, cb.best_epoch, cb.best_rows = 0.75, 3, torch.zeros(4, 5)
    again = ValPredictions()
    again.load_state_dict(cb.state_dict())
    assert again._noted_best == 0.75 and again.best_epoch == 3 and torch.equal(again.best_rows, torch.zeros(4, 5))
    fresh = ValPredictions()
    fresh.load_state_dict({})  # a checkpoint from before this callback existed
    assert fresh.best_rows is None and fresh._noted_best == -math.inf


@pytest.mark.slow  # two DDP processes: ~12 s
def test_ddp_gathers_both_ranks_and_rank0_writes_each_image_once(tmp_path):
    """2 CPU ranks, 11 val images: DistributedSampler gives each rank 6 (one padded repeat); the file has 11."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, make_folder

    data = make_folder(tmp_path / "data", {"train": {"ant": 8, "bee": 8}, "val": {"ant": 6, "bee": 5}})
    args = [*shrink(data, logger="none", **{"trainer.limit_val_batches": 1.0, "callbacks.dashboards": "null"}),
            "trainer.accelerator=cpu", "trainer.devices=2", "++trainer.strategy=ddp", f"paths.root_dir={tmp_path}",
            "hydra.run.dir=run"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    rows = rows_of(run / "val_predictions.csv")
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in (data / "val").rglob("*.png"))
    accuracy = sum(r["predicted"] == r["true"] for r in rows) / len(rows)
    best = json.loads((run / "summary.json").read_text())["val/acc_best"]
    assert abs(accuracy - best) <= 1 / 11 + 1e-6  # val/acc counted the padded repeat once more


def test_resumed_run_in_another_directory_still_writes_the_best_epochs_rows(tmp_path, tiny_folder):
    first = compose_config(tmp_path / "a", shrink(tiny_folder, **{"trainer.max_epochs": 2,
                                                                  "callbacks.early_stopping": "null"}, **WHOLE_VAL))
    train(first)
    original = (tmp_path / "a" / "run" / "val_predictions.csv").read_text()
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    # the checkpoint holds the best rows; epoch 3 may or may not beat them
    second = compose_config(tmp_path / "b", shrink(tiny_folder, ckpt_path=last, **{
        "trainer.max_epochs": 3, "callbacks.early_stopping": "null"}, **WHOLE_VAL))
    summary = train(second)
    written = (tmp_path / "b" / "run" / "val_predictions.csv").read_text()
    if summary["best_epoch"] < 2:
        assert written == original
    rows = rows_of(tmp_path / "b" / "run" / "val_predictions.csv")
    assert len(rows) == 12
    assert sum(r["predicted"] == r["true"] for r in rows) / 12 == pytest.approx(summary["val/acc_best"], abs=1e-6)
