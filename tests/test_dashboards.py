"""The TensorBoard dashboards: read back from the event file, not just assumed to be written. Per-class scalars,
the confusion matrix and the prediction grid (misclassified first) after training; nothing without a logger;
images redrawn only when predictions change; the same per-class scores as eval.py."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import compose_config, shrink
from transferlab.callbacks.dashboards import ValidationDashboards, grid_order
from transferlab.evaluation.metrics import compute_metrics
from transferlab.evaluation.plots import prediction_grid
from transferlab.tasks.train import train

TILE = 128  # the default tile size


def events(tb_dir) -> EventAccumulator:
    acc = EventAccumulator(str(tb_dir), size_guidance={IMAGES: 0, SCALARS: 0})
    acc.Reload()
    return acc


def last(acc: EventAccumulator, tag: str) -> float:
    return acc.Scalars(tag)[-1].value


def png(acc: EventAccumulator, tag: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)).convert("RGB"))


def caption_colour(grid: np.ndarray, k: int, tile_h: int) -> str:
    """'red' or 'green': the colour of the 'pred ...' caption of tile k (make_grid: 8 per row, padding 3)."""
    row, col = divmod(k, 8)
    y0, x0 = 3 + row * (tile_h + 3), 3 + col * (TILE + 3)
    strip = grid[y0 + TILE: y0 + TILE + tile_h // 8 + 6, x0: x0 + TILE].reshape(-1, 3).astype(int)
    red = ((strip[:, 0] > 150) & (strip[:, 1] < 90) & (strip[:, 2] < 90)).any()
    green = ((strip[:, 1] > 100) & (strip[:, 0] < 80) & (strip[:, 2] < 80)).any()
    assert red != green, f"tile {k}: caption is neither clearly red nor green"
    return "red" if red else "green"


@pytest.mark.parametrize("strategy", ["finetune", "frozen"])  # frozen: the model sees cached features
def test_event_file_holds_confusion_matrix_per_class_scalars_and_prediction_grid(tiny_training, strategy):
    run = tiny_training(strategy)  # the tiny folder, every validation batch (trainer.limit_val_batches=null)
    acc = events(Path(run["run_dir"]) / "tensorboard")
    assert {"val/confusion_matrix", "val/predictions"} <= set(acc.Tags()["images"])

    # Per-class scalars agree with what the model logged: support-weighted recall is the accuracy
    # (6 ant + 6 bee validation images), and F1 is the harmonic mean of precision and recall.
    recall = {c: last(acc, f"val_recall/{c}") for c in ("ant", "bee")}
    precision = {c: last(acc, f"val_precision/{c}") for c in ("ant", "bee")}
    f1 = {c: last(acc, f"val_f1/{c}") for c in ("ant", "bee")}
    val_acc = last(acc, "val/acc")
    assert (recall["ant"] * 6 + recall["bee"] * 6) / 12 == pytest.approx(val_acc, abs=1e-6)
    for c in ("ant", "bee"):
        p, r = precision[c], recall[c]
        assert f1[c] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-6)
    assert last(acc, "val/recall_macro") == pytest.approx((recall["ant"] + recall["bee"]) / 2, abs=1e-6)

    matrix = png(acc, "val/confusion_matrix")
    assert matrix.shape[0] > 100 and matrix.shape[1] > 100 and matrix.std() > 10  # a drawing, not a blank

    # The grid: all 12 validation images, the misclassified ones (red caption) first.
    grid = png(acc, "val/predictions")
    tile_h = (grid.shape[0] - 3) // 2 - 3  # two rows of tiles
    assert grid.shape[1] == 3 + 8 * (TILE + 3)
    wrong = round((1 - val_acc) * 12)
    assert [caption_colour(grid, k, tile_h) for k in range(12)] == ["red"] * wrong + ["green"] * (12 - wrong)


def test_no_tensorboard_logger_no_dashboards_and_no_error(tmp_path, tiny_folder):
    summary = train(compose_config(tmp_path, shrink(tiny_folder, logger="none")))
    assert summary["val/acc_best"] is not None
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_grid_order_puts_misclassified_first_keeping_order():
    records = [(0, 1, 1), (1, 0, 1), (2, 2, 2), (3, 2, 0), (4, 0, 0)]  # (index, predicted, true)
    assert grid_order(records) == [1, 3, 0, 2, 4]


def test_prediction_grid_is_a_captioned_image_tensor(tmp_path, tiny_folder):
    paths = sorted(str(p) for p in (tiny_folder / "val" / "ant").glob("*.png"))[:3]
    grid = prediction_grid(paths, [1, 0, 0], [0, 0, 0], ["ant", "bee"], tile_size=64)
    assert grid.shape[0] == 3 and grid.shape[2] == 3 + 3 * (64 + 3)
    assert 0.0 <= float(grid.min()) and float(grid.max()) <= 1.0


class _Tiny(L.LightningModule):
    """A model that never calls itself during validation: the forward hook sees nothing."""

    def __init__(self, return_logits: bool) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
        self.class_names = ["a", "b", "c"]
        self.return_logits = return_logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        logits = self.net(batch[0])
        return {"logits": logits} if self.return_logits else None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_tiny(tmp_path, return_logits: bool, n: int = 12) -> EventAccumulator:
    return _fit_tiny_model(tmp_path, return_logits, n)[0]


def _fit_tiny_model(tmp_path, return_logits: bool, n: int = 12):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 3)
    trainer = L.Trainer(max_epochs=1, logger=TensorBoardLogger(tmp_path, name="tb", version=""),
                        callbacks=[ValidationDashboards()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1)
    model = _Tiny(return_logits)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return events(tmp_path / "tb"), model, data.tensors


def test_logits_returned_by_validation_step_are_used(tmp_path):
    acc = _fit_tiny(tmp_path, return_logits=True)
    assert "val/confusion_matrix" in acc.Tags()["images"]
    assert {"val_f1/a", "val_f1/b", "val_f1/c"} <= set(acc.Tags()["scalars"])
    # No image files behind a TensorDataset: no grid, and no error either.
    assert "val/predictions" not in acc.Tags()["images"]


def test_dashboard_per_class_scalars_equal_the_eval_tasks_for_the_same_predictions(tmp_path):
    """One computation of per-class scores: what the dashboards log during training is what `eval.py` reports."""
    acc, model, (images, targets) = _fit_tiny_model(tmp_path, return_logits=True, n=60)
    with torch.no_grad():  # validation ran after the only training epoch: these are the logits it saw
        probs = model.net(images).softmax(-1)
    assert 0 < int((probs.argmax(-1) == targets).sum()) < len(targets)  # neither all right nor all wrong
    _, per_class, confusion, _ = compute_metrics(probs, targets, model.class_names)
    for row in per_class:
        for score in ("precision", "recall", "f1"):
            assert last(acc, f"val_{score}/{row['class']}") == pytest.approx(row[score], abs=1e-6)
    f1 = [row["f1"] for row in per_class]
    assert last(acc, "val/f1_macro") == pytest.approx(sum(f1) / len(f1), abs=1e-6)
    assert int(confusion.sum()) == len(targets)


def test_without_any_logits_it_warns_and_logs_nothing(tmp_path, caplog):
    acc = _fit_tiny(tmp_path, return_logits=False)
    assert "val/confusion_matrix" not in acc.Tags()["images"]
    assert "no logits for validation batches" in caplog.text


def test_bad_settings_name_the_config_key():
    with pytest.raises(ValueError, match="callbacks.dashboards"):
        ValidationDashboards(every_n_epochs=0)


def test_images_are_redrawn_only_when_predictions_change(tmp_path, tiny_folder):
    """lr 1e-30 (0 is refused at start-up): every epoch predicts the same, so one drawing each; the scalars are
    still logged every epoch."""
    overrides = shrink(tiny_folder, strategy="frozen", **{"trainer.max_epochs": 3, "optimizer.lr": 1e-30,
                                                          "trainer.limit_val_batches": "null",
                                                          "strategy.head_fit.enabled": "false"})  # SGD epochs
    train(compose_config(tmp_path, overrides))
    acc = events(tmp_path / "run" / "tensorboard")
    assert len(acc.Scalars("val/recall_macro")) == 3
    assert len(acc.Images("val/confusion_matrix")) == 1
    assert len(acc.Images("val/predictions")) == 1

    train(compose_config(tmp_path / "learning", shrink(tiny_folder, **{"trainer.max_epochs": 3,
                                                                        "optimizer.lr": 0.1,
                                                                        "strategy": "finetune"})))
    learning = events(tmp_path / "learning" / "run" / "tensorboard")
    assert len(learning.Images("val/predictions")) > 1  # predictions moved, so the grid was redrawn
