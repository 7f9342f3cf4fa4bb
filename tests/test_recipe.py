"""recipe=tutorial|strong and its switches: warm-up + cosine, label smoothing, MixUp/CutMix, weight EMA,
class balance (dataset.balance) and flip test-time augmentation (eval.py / predict.py tta=flip)."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import compose_config, make_folder, run_script, shrink
from transferlab.callbacks.ema import WarmupEMA, warmup_ema_avg_fn
from transferlab.config.checks import ConfigValueError
from transferlab.config.settings import RunSettings
from transferlab.data.loaders import EpochSampler
from transferlab.inference import load_classifier
from transferlab.models.checkpoint import load_model
from transferlab.models.schedules import warmup_cosine
from transferlab.tasks.train import build, class_weights, settings_of, train


def _model(cfg):
    built = build(cfg)
    return built.model, built.datamodule


# --- composition -------------------------------------------------------------------------------------------------
def test_the_default_recipe_is_the_tutorials(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder))
    assert cfg.recipe.name == "tutorial"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.scheduler._target_.endswith("StepLR")
    assert cfg.recipe.label_smoothing == 0 and cfg.recipe.ema_decay is None and cfg.recipe.mixup_alpha == 0


def test_strong_recipe_picks_its_optimizer_and_schedule_but_the_command_line_wins(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, recipe="strong"))
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.scheduler._target_ == "transferlab.models.schedules.warmup_cosine" and cfg.scheduler.interval == "step"
    assert cfg.recipe.label_smoothing == 0.1 and cfg.recipe.ema_decay == 0.998
    mixed = compose_config(tmp_path, shrink(tiny_folder, recipe="strong", optimizer="sgd",
                                            **{"recipe.ema_decay": "null"}))
    assert mixed.optimizer._target_ == "torch.optim.SGD" and mixed.recipe.ema_decay is None
    assert mixed.scheduler._target_.endswith("warmup_cosine")


@pytest.mark.parametrize("override, key", [
    ("recipe.label_smoothing=1.5", "recipe.label_smoothing"),
    ("recipe.ema_decay=1.0", "recipe.ema_decay"),
    ("recipe.mixup_alpha=-1", "recipe.mixup_alpha"),
    ("recipe.mix_prob=2", "recipe.mix_prob"),
    ("dataset.balance=oversample", "dataset.balance"),
])
def test_out_of_range_recipe_values_are_refused_by_name(tmp_path, tiny_folder, override, key):
    cfg = compose_config(tmp_path, [*shrink(tiny_folder), override])
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        RunSettings.from_config(cfg)


# --- the schedule ------------------------------------------------------------------------------------------------
def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    schedule = warmup_cosine(optimizer, total_steps=200, warmup=0.1, start_factor=0.01)
    lrs = []
    for _ in range(200):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.005)
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21], strict=True))  # 20 warm-up steps, rising
    assert lrs[20] == pytest.approx(0.5) and max(lrs) == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[20:-1], lrs[21:], strict=True))  # then never rising
    assert lrs[-1] < 0.5 * 1e-3


def test_a_step_schedule_spans_the_whole_run(tmp_path, tiny_folder):
    """The model hands the scheduler the run's total optimizer steps: the last step's lr is near zero."""
    seen = {}

    class LastLr(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault("lrs", []).append(trainer.optimizers[0].param_groups[0]["lr"])

    overrides = shrink(tiny_folder, recipe="strong", strategy="finetune", **{"trainer.max_epochs": 3,
                       "recipe.ema_decay": "null", "scheduler.warmup": 0.2})
    train(compose_config(tmp_path, overrides), extra_callbacks=[LastLr()])
    lrs = seen["lrs"]
    assert len(lrs) == 9 and lrs[0] < lrs[1] < lrs[2]
    assert lrs[-1] < 0.1 * max(lrs)


# --- the loss ----------------------------------------------------------------------------------------------------
def test_label_smoothing_and_class_weights_reach_the_training_loss(tmp_path):
    folder = make_folder(tmp_path / "data", {"train": {"ant": 9, "bee": 3}, "val": {"ant": 3, "bee": 3}})
    cfg = compose_config(tmp_path, shrink(folder, recipe="strong", strategy="finetune",
                                          **{"dataset.balance": "loss", "recipe.label_smoothing": 0.2}))
    model, _ = _model(cfg)
    assert model.class_weights.tolist() == pytest.approx([12 / (2 * 9), 12 / (2 * 3)])
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1])
    model.log = lambda *a, **k: None
    torch.manual_seed(0)
    loss = model.training_step((images, targets), 0)
    with torch.no_grad():
        logits = model(images)  # the same logits: training mode, the same batch statistics, no dropout
    expected = F.cross_entropy(logits, targets, weight=model.class_weights, label_smoothing=0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-3)


def test_class_weights_are_balanced_and_cover_absent_classes():
    assert class_weights([0, 0, 0, 1], 3) == pytest.approx([4 / 6, 4 / 2, 0.0])


def test_mixing_trains_on_soft_targets_but_scores_accuracy_on_the_labels(tmp_path, tiny_folder):
    overrides = shrink(tiny_folder, strategy="finetune", **{"recipe.mixup_alpha": 1.0, "recipe.cutmix_alpha": 1.0})
    model, _ = _model(compose_config(tmp_path, overrides))
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1])
    torch.manual_seed(1)
    mixed_images, soft = model.mixer(images, targets)
    assert soft.shape == (4, 2) and torch.allclose(soft.sum(-1), torch.ones(4))
    assert not torch.equal(mixed_images, images) and ((soft > 0) & (soft < 1)).any()
    summary = train(compose_config(tmp_path, overrides))
    assert summary["status"] == "ok" and 0.0 <= summary["val/acc_best"] <= 1.0


# --- balanced sampling -------------------------------------------------------------------------------------------
def test_balanced_sampler_draws_classes_equally_and_replays_an_epoch():
    labels = torch.tensor([0] * 90 + [1] * 10)
    counts = torch.bincount(labels)
    sampler = EpochSampler(100, seed=3, weights=1.0 / counts[labels].double())
    drawn = torch.cat([labels[sampler.order(epoch)] for epoch in range(20)])
    assert 0.45 < drawn.float().mean().item() < 0.55  # unbalanced it would be 0.10
    assert sampler.order(4) == sampler.order(4) != sampler.order(5)
    sampler.set_epoch(4)
    sampler.resume(4, 30)
    assert list(sampler) == sampler.order(4)[30:]


def test_balance_sampler_runs_end_to_end(tmp_path):
    folder = make_folder(tmp_path / "data", {"train": {"ant": 10, "bee": 2}, "val": {"ant": 3, "bee": 3}})
    data = settings_of(compose_config(tmp_path, shrink(folder, **{"dataset.balance": "sampler"}))).build_datamodule()
    weights = data.sample_weights(data.train_labels)
    assert weights.tolist() == pytest.approx([0.1] * 10 + [0.5] * 2)
    summary = train(compose_config(tmp_path, shrink(folder, **{"dataset.balance": "sampler"})))
    assert summary["status"] == "ok"


# --- weight EMA --------------------------------------------------------------------------------------------------
def test_ema_warms_up_then_holds_its_decay():
    update = warmup_ema_avg_fn(0.99)
    averaged, current = torch.tensor([0.0]), torch.tensor([1.0])
    assert update(averaged, current, torch.tensor(1)).item() == pytest.approx(1 - 2 / 11)  # n=1: decay 2/11
    assert update(averaged, current, torch.tensor(10_000)).item() == pytest.approx(0.01)  # capped at 0.99
    assert warmup_ema_avg_fn(0.99, warmup=False)(averaged, current, torch.tensor(1)).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="recipe.ema_decay"):
        WarmupEMA(decay=1.5)


def test_ema_checkpoints_hold_the_average_and_the_live_weights(tmp_path, tiny_folder):
    overrides = shrink(tiny_folder, strategy="finetune", optimizer="adamw",
                       **{"recipe.ema_decay": 0.9, "trainer.max_epochs": 2, "optimizer.lr": 0.01})
    summary = train(compose_config(tmp_path, overrides))
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    average, live = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == live.keys()
    moved = [k for k in average if average[k].is_floating_point() and not torch.equal(average[k], live[k])]
    assert moved, "the EMA equals the live weights: it did not average"
    loaded = load_model(summary["last_checkpoint"])  # eval, predict and export use the average
    assert all(torch.equal(loaded.state_dict()[k], average[k]) for k in average)


def test_a_solved_head_ignores_the_ema(tmp_path, tiny_folder):
    summary = train(compose_config(tmp_path, shrink(tiny_folder, strategy="frozen", **{"recipe.ema_decay": 0.9})))
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert summary["head_fit"] is not None and "current_model_state" not in ckpt


# --- test-time augmentation --------------------------------------------------------------------------------------
def test_flip_tta_averages_an_image_and_its_mirror(trained_run):
    plain = load_classifier(trained_run["run_dir"], device="cpu")
    flipped = load_classifier(trained_run["run_dir"], device="cpu", tta="flip")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (plain.model(images).softmax(-1) + plain.model(images.flip(-1)).softmax(-1)) / 2
        assert torch.allclose(flipped.model.evaluate(images).softmax(-1), expected, atol=1e-6)
        symmetric = images + images.flip(-1)  # a mirror-symmetric image: the mirror changes nothing
        assert torch.allclose(flipped.model.evaluate(symmetric).softmax(-1), plain.model(symmetric).softmax(-1),
                              atol=1e-6)
    with pytest.raises(ValueError, match="tta='rotate'"):
        load_classifier(trained_run["run_dir"], device="cpu", tta="rotate")


def test_eval_and_predict_take_tta(trained_run, tmp_path, monkeypatch, capsys):
    run_dir = trained_run["run_dir"]
    code, err, _ = run_script("eval.py", f"ckpt_path={run_dir}", "tta=flip", f"hydra.run.dir={tmp_path / 'ev'}",
                           "progress=false", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["tta"] == "flip"
    out = tmp_path / "p.csv"
    code, err, _ = run_script("predict.py", f"ckpt_path={run_dir}", f"inputs={trained_run['data']}/val", "tta=flip",
                           f"output={out}", f"hydra.run.dir={tmp_path / 'pr'}", "progress=false", cwd=tmp_path,
                           monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 15
    flip = load_classifier(run_dir, device="cpu", tta="flip")
    expected = flip.probabilities([r["file"] for r in rows]).probs.max(-1).values
    plain = load_classifier(run_dir, device="cpu").probabilities([r["file"] for r in rows]).probs.max(-1).values
    written = torch.tensor([float(r["prob"]) for r in rows])
    assert torch.allclose(written, expected, atol=1e-5)
    assert not torch.allclose(written, plain, atol=1e-5)  # the flip changed them
