"""lpft's fitted head is the run's first validation: fine-tuning must beat it to replace it as the best
checkpoint, early stopping counts from it, and the run's records (summary.json, val_predictions.csv) say so."""

from __future__ import annotations

import csv
import json

import lightning as L
import torch

from tests.conftest import compose_config, shrink
from tests.test_dashboards import events
from transferlab.callbacks.head_baseline import FittedHeadBaseline
from transferlab.models.checkpoint import resolve_checkpoint
from transferlab.tasks.train import train


class _SpoilTheHead(L.Callback):
    """Fine-tuning that only makes things worse: after every step the head predicts "ant" for every image."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with torch.no_grad():
            pl_module.head[-1].weight.zero_()
            pl_module.head[-1].bias.copy_(torch.tensor([10.0, -10.0]))


def test_when_fine_tuning_never_beats_the_fitted_head_the_head_is_the_best_checkpoint(tmp_path, tiny_folder, capsys):
    overrides = shrink(tiny_folder, backbone="efficientnet_lite0", strategy="lpft", logger="none",
                       **{"paths.cache_dir": tmp_path / "cache", "trainer.limit_val_batches": 1.0,
                          "trainer.max_epochs": 3, "callbacks.early_stopping.patience": 1})
    summary = train(compose_config(tmp_path, overrides), extra_callbacks=[_SpoilTheHead()])
    head_acc = summary["head_fit"]["val_accuracy"]
    assert head_acc > 0.5  # the head separates the two colours; the spoiled network scores 0.5
    assert summary["val/acc_best"] == head_acc and summary["best_epoch"] == -1
    assert summary["val_history"][0]["epoch"] == -1 and summary["val_history"][0]["val_acc"] == head_acc
    assert [h["val_acc"] for h in summary["val_history"][1:]] == [0.5]  # early stopping counted from the head
    assert summary["epochs"] == 1
    out = capsys.readouterr().out
    assert "Best val acc: 1.0000 (the fitted head, before fine-tuning)" in out
    assert "fine-tuning never beat it, so the best checkpoint is this head" in out

    run = tmp_path / "run"
    best = run / "checkpoints" / f"head_fit-acc{head_acc:.4f}.ckpt"
    assert summary["best_checkpoint"] == str(best)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == sorted([best.name, "last.ckpt"])
    (head_weight,) = [w for k, w in torch.load(best, weights_only=False)["state_dict"].items()
                      if k.startswith("head.") and k.endswith(".weight")]
    assert head_weight.abs().sum() > 0  # the fitted head, not the spoiled one
    with open(run / "val_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and sum(r["true"] == r["predicted"] for r in rows) / 12 == head_acc
    (run / "summary.json").unlink()  # without the run's record, the best by name is still the head
    assert resolve_checkpoint(run) == best

    # a resumed run keeps the head as the one to beat (the callbacks' states are in last.ckpt)
    resumed = train(compose_config(tmp_path, [*overrides, "trainer.max_epochs=3", "callbacks.early_stopping=null",
                                              f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]),
                    extra_callbacks=[_SpoilTheHead()])
    assert resumed["epochs"] == 3 and resumed["best_epoch"] == -1 and resumed["best_checkpoint"] == str(best)
    assert json.loads((run / "summary.json").read_text())["val/acc_best"] == head_acc


def test_an_epoch_that_beats_the_baseline_replaces_its_checkpoint(tmp_path, tiny_folder):
    labels = torch.tensor([0] * 6 + [1] * 6)
    wrong = FittedHeadBaseline(torch.nn.functional.one_hot(1 - labels, 2).float() * 5, labels)  # val acc 0
    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy="finetune",
                                          **{"trainer.limit_val_batches": 1.0, "trainer.max_epochs": 1}))
    summary = train(cfg, extra_callbacks=[wrong])
    curve = events(tmp_path / "run" / "tensorboard").Scalars("val/acc")  # TensorBoard's curve starts at the head
    assert [(c.step, c.value) for c in curve][0] == (0, 0.0) and curve[1].step > 0
    first = summary["val_history"][0]
    assert first == {"epoch": -1, "val_acc": 0.0, "elapsed_s": first["elapsed_s"]}
    assert summary["best_epoch"] == 0 and summary["val/acc_best"] > 0
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert names == sorted(["last.ckpt", summary["best_checkpoint"].rsplit("/", 1)[-1]])
    assert not any(n.startswith("head_fit") for n in names)  # replaced, and its file removed


def test_a_run_that_validates_part_of_the_val_set_does_not_score_the_head_on_all_of_it(tmp_path, tiny_folder):
    labels = torch.tensor([0] * 6 + [1] * 6)
    perfect = FittedHeadBaseline(torch.nn.functional.one_hot(labels, 2).float() * 5, labels)
    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy="finetune", logger="none"))  # 2 of 3 val batches
    summary = train(cfg, extra_callbacks=[perfect])
    assert [h["epoch"] for h in summary["val_history"]] == [0] and summary["best_epoch"] == 0
    assert not list((tmp_path / "run" / "checkpoints").glob("head_fit*"))
