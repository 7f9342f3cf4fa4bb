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
