"""strategy.head_fit: the linear head solved on cached features (L-BFGS, L2 by cross-validation on the training
features only) is scikit-learn's logistic regression at the same strength, and `strategy=frozen` is that fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from tests.conftest import compose_config, make_folder, shrink
from tests.test_dashboards import events
from transferlab.config.checks import ConfigValueError
from transferlab.data.features import load_features
from transferlab.models.checkpoint import load_model
from transferlab.models.feature_head import MIN_DELTA
from transferlab.models.linear_fit import SourceHead, fit_linear_head, penalised_loss


def _data(n=240, d=40, classes=3, seed=0):
    x, y = make_classification(n_samples=n, n_features=d, n_informative=10, n_classes=classes,
                               n_clusters_per_class=1, class_sep=0.8, random_state=seed)
    x = x * np.linspace(0.2, 5.0, d) + np.linspace(-3, 3, d)  # features of different scales and offsets
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.mark.parametrize("l2", [0.003, 0.3])
def test_the_fit_is_sklearns_logistic_regression_at_the_same_strength(l2):
    x, y = _data()
    fit = fit_linear_head(x, y, classes=3, l2=[l2])  # one strength: no cross-validation
    ours = torch.softmax(x @ fit.weight.T + fit.bias, dim=1).numpy()
    # sklearn minimises C * sum(CE) + |W|^2 / 2, i.e. mean(CE) + |W|^2 / (2 C n): C = 1 / (l2 * n)
    scaler = StandardScaler().fit(x.numpy())
    reference = LogisticRegression(C=1 / (l2 * len(y)), max_iter=5000, tol=1e-10).fit(scaler.transform(x.numpy()), y)
    theirs = reference.predict_proba(scaler.transform(x.numpy()))
    assert np.abs(ours - theirs).max() < 2e-3
    assert fit.cv_accuracy is None and fit.l2 == l2


def test_the_strength_is_the_cross_validated_best_of_the_grid():
    x, y = _data(seed=1)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    fit = fit_linear_head(x, y, classes=3, l2=grid, folds=4)
    assert sorted(fit.cv_scores) == sorted(grid) and fit.folds == 4
    assert fit.cv_accuracy == max(fit.cv_scores.values()) == fit.cv_scores[fit.l2]
    assert fit.cv_scores[100.0] < fit.cv_accuracy  # so strong a penalty underfits: the choice matters


def test_views_of_one_image_never_straddle_folds():
    """Four identical views of each image and labels that are pure noise: were a view of an image in the
    held-out fold while another is in the training folds, the weak penalties would score far above chance."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(60, 200, generator=gen)
    labels = torch.randint(0, 2, (60,), generator=gen)
    rows, row_labels, groups = images.repeat(4, 1), labels.repeat(4), torch.arange(60).repeat(4)
    grid = [1e-4, 1e-3]
    grouped = fit_linear_head(rows, row_labels, classes=2, l2=grid, groups=groups)
    ungrouped = fit_linear_head(rows, row_labels, classes=2, l2=grid)
    assert ungrouped.cv_accuracy > 0.95  # the leak this guards against
    assert grouped.cv_accuracy < 0.75


def test_one_row_per_image_cross_validates_on_the_probes_folds():
    """A run passes each row's image as its group; with one view per image the folds are the plain stratified
    ones (scikit-learn's StratifiedKFold, as the benchmark's probe uses), not a group splitter's other split."""
    x, y = _data(seed=2)
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    per_image = fit_linear_head(x, y, classes=3, l2=grid, groups=torch.arange(len(y)))
    plain = fit_linear_head(x, y, classes=3, l2=grid)
    assert per_image.cv_scores == plain.cv_scores
    assert torch.equal(per_image.weight, plain.weight)


def test_too_few_images_per_class_skip_cross_validation():
    x, y = _data(n=40)
    y[:] = 0
    y[0] = 1  # one image of class 1: no stratified split exists
    fit = fit_linear_head(x, y, classes=2, l2=[0.01, 0.1, 1.0])
    assert fit.cv_accuracy is None and fit.l2 == 0.1 and fit.folds == 0


def _imbalanced(seed=0):
    """Three classes, the last two kept at 40 and 15 of 160 rows: imbalance 5x."""
    x, y = _data(n=480, seed=seed)
    keep = torch.cat([torch.nonzero(y == c).flatten()[:n] for c, n in ((0, 160), (1, 40), (2, 15))])
    return x[keep], y[keep]


def _balanced_weights(y: torch.Tensor) -> torch.Tensor:
    """The weights a run passes for dataset.balance (scikit-learn's class_weight="balanced")."""
    from transferlab.tasks.train import class_weights

    return torch.tensor(class_weights(y.tolist(), int(y.max()) + 1))


@pytest.mark.parametrize("l2", [0.003, 0.3])
def test_class_weights_fit_sklearns_balanced_logistic_regression(l2):
    x, y = _imbalanced()
    weights = _balanced_weights(y)
    fit = fit_linear_head(x, y, classes=3, l2=[l2], class_weight=weights)
    ours = torch.softmax(x @ fit.weight.T + fit.bias, dim=1).numpy()
    scaler = StandardScaler().fit(x.numpy())
    # balanced weights sum to n over the rows, so sklearn's C = 1 / (l2 * n) still matches the weighted mean
    reference = LogisticRegression(C=1 / (l2 * len(y)), class_weight="balanced", max_iter=5000,
                                   tol=1e-10).fit(scaler.transform(x.numpy()), y)
    # within the solver's tolerance (gradient 1e-4): the weighted problem is stiffer, its weak-penalty optimum flatter
    assert np.abs(ours - reference.predict_proba(scaler.transform(x.numpy()))).max() < 5e-3
    assert fit.balanced and fit.report()["balanced"]
    plain = fit_linear_head(x, y, classes=3, l2=[l2])
    recall = {name: [float((f.weight @ x[y == c].T + f.bias[:, None]).argmax(0).eq(c).float().mean())
                     for c in range(3)] for name, f in (("balanced", fit), ("plain", plain))}
    assert np.mean(recall["balanced"]) > np.mean(recall["plain"]), recall  # the mean recall per class gains
    # the run's one L-BFGS check re-evaluates the weighted objective: at its minimum, it leaves the fit alone
    gradients = {}
    for name, class_weight in (("weighted", weights), ("unweighted", None)):
        weight, bias = fit.weight.clone().requires_grad_(), fit.bias.clone().requires_grad_()
        penalised_loss(weight, bias, x, y, fit.l2, fit.scale, class_weight=class_weight).backward()
        gradients[name] = max(weight.grad.abs().max(), bias.grad.abs().max())
    assert gradients["weighted"] < 5e-3 and gradients["unweighted"] > 10 * gradients["weighted"], gradients


def test_balanced_cross_validation_scores_balanced_accuracy_on_the_held_out_rows():
    from sklearn.model_selection import StratifiedKFold

    x, y = _imbalanced(seed=3)
    weights = _balanced_weights(y)
    grid = [1e-2, 3e-2, 1e-1]  # (much stronger: near-tied logits; much weaker: tolerance-bound solutions)
    fit = fit_linear_head(x, y, classes=3, l2=grid, folds=5, seed=4, class_weight=weights)
    assert sorted(fit.cv_scores) == grid
    scaled, w = StandardScaler().fit_transform(x.numpy()), weights[y].numpy()  # scaled once on all rows, as the fit
    folds = list(StratifiedKFold(5, shuffle=True, random_state=4).split(scaled, y.numpy()))
    for l2, score in fit.cv_scores.items():
        hits = np.zeros(len(y))
        for train, held_out in folds:  # each fold's weighted mean objective, in scikit-learn's terms
            fold = LogisticRegression(C=1 / (l2 * w[train].sum()), max_iter=5000, tol=1e-10).fit(
                scaled[train], y.numpy()[train], sample_weight=w[train])
            hits[held_out] = fold.predict(scaled[held_out]) == y.numpy()[held_out]
        balanced_accuracy = float((hits * w).sum() / w.sum())  # balanced weights: the mean recall per class
        one_rare_row = float(w.max() / w.sum())  # weak penalties: the solvers' tolerances may flip a borderline row
        assert score == pytest.approx(balanced_accuracy, abs=one_rare_row + 1e-6), l2
        assert abs(score - hits.mean()) > one_rare_row  # and it is not the plain accuracy


def _pretrained_space(n: int, seed: int, dim: int = 200, source_classes: int = 100):
    """Features of a network pretrained on `source_classes` classes, whose classes 3 and 7 are our two classes:
    an image of class c lies along its source class's row, buried in noise along many other directions."""
    gen = torch.Generator().manual_seed(0)  # the same pretrained head for every sample
    head = SourceHead(torch.randn(source_classes, dim, generator=gen) / dim ** 0.5, torch.zeros(source_classes))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = head.weight[torch.tensor([3, 7])[y]] + torch.randn(n, dim, generator=gen) * 0.5
    return x, y, head


def test_the_pretrained_classifiers_own_classes_win_when_they_are_the_folders_classes():
    x, y, head = _pretrained_space(30, seed=1)
    mapped = fit_linear_head(x, y, classes=2, source=head, source_classes=[1, 2, 5])
    plain = fit_linear_head(x, y, classes=2)
    assert mapped.inputs == "source top 1" and mapped.source_classes == [3, 7]
    assert set(mapped.candidates) == {"features", "source top 1", "source top 2", "source top 5"}
    assert mapped.cv_accuracy == max(mapped.candidates.values()) > mapped.candidates["features"]
    # one linear layer on the features, better on new images than the head fitted on the features alone
    x_new, y_new, _ = _pretrained_space(2000, seed=2)
    accuracy = {name: float(((x_new @ fit.weight.T + fit.bias).argmax(1) == y_new).float().mean())
                for name, fit in (("mapped", mapped), ("plain", plain))}
    assert accuracy["mapped"] > accuracy["plain"] + 0.03, accuracy
    # and a minimum of the objective the run's L-BFGS check re-evaluates, so that check leaves it as it is
    weight, bias = mapped.weight.clone().requires_grad_(), mapped.bias.clone().requires_grad_()
    penalised_loss(weight, bias, x, y, mapped.l2, mapped.scale, mapped.basis).backward()
    assert weight.grad.abs().max() < 1e-3 and bias.grad.abs().max() < 1e-3


def test_an_unrelated_pretrained_classifier_leaves_the_features():
    x, y = _data(seed=2)
    _, _, head = _pretrained_space(1, seed=0, dim=x.shape[1])
    fit = fit_linear_head(x, y, classes=3, source=head, source_classes=[1, 5])
    assert fit.inputs == "features" and fit.basis is None and fit.source_classes is None
    assert fit.candidates["features"] > max(fit.candidates["source top 1"], fit.candidates["source top 5"])


def test_frozen_run_is_the_fit_and_matches_sklearn_on_its_cached_features(tmp_path, tiny_folder):
    from transferlab.tasks.train import train

    overrides = shrink(tiny_folder, backbone="efficientnet_lite0", strategy="frozen",
                       **{"strategy.head_fit.source_classes": "[]",  # the features only: sklearn's problem
                          "paths.cache_dir": tmp_path / "cache", "trainer.limit_train_batches": "null",
                          "trainer.limit_val_batches": "null"})
    summary = train(compose_config(tmp_path / "frozen", overrides))
    report = summary["head_fit"]
    # one phase, no SGD epoch: the head solved, validated and checkpointed
    assert [p["name"] for p in summary["phases"]] == ["fit_head"] and summary["epochs"] == 0
    assert summary["best_epoch"] == -1 and Path(summary["best_checkpoint"]).name.startswith("head_fit-acc")
    assert report["folds"] == 5 and report["rows"] == report["images"] == 24
    assert report["l2"] in [float(v) for v in report["cv_scores"]]
    (cache,) = (tmp_path / "cache" / "features").glob("*.pt")
    data = load_features(cache)
    x, y = data["train"][0].numpy(), data["train_labels"].numpy()
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=1 / (report["l2"] * len(y)), max_iter=5000, tol=1e-10).fit(scaler.transform(x), y)
    expected = reference.score(scaler.transform(data["val"].numpy()), data["val_labels"].numpy())
    assert summary["val/acc_best"] == pytest.approx(expected, abs=1e-6)
    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["head_fit"]["l2"] == report["l2"]
    scalars = events(tmp_path / "frozen" / "run" / "tensorboard")
    assert scalars.Scalars("head_fit/l2")[-1].value == pytest.approx(report["l2"])
    assert scalars.Scalars("head_fit/cv_accuracy")[-1].value == pytest.approx(report["cv_accuracy"])
    assert not [t for t in scalars.Tags()["scalars"] if t.startswith("lr-")]


def test_a_balanced_frozen_run_is_sklearns_class_weighted_fit(tmp_path, capsys):
    """dataset.balance=sampler draws no batches for a solved head: its rows are weighed by class instead, as
    balance=loss weighs them, and the run's head is scikit-learn's class_weight="balanced" fit."""
    from transferlab.tasks.train import train

    folder = make_folder(tmp_path / "data", {"train": {"ant": 18, "bee": 6}, "val": {"ant": 6, "bee": 6}})
    overrides = shrink(folder, backbone="efficientnet_lite0", strategy="frozen",
                       **{"strategy.head_fit.source_classes": "[]", "dataset.balance": "sampler",
                          "paths.cache_dir": tmp_path / "cache", "trainer.limit_train_batches": "null",
                          "trainer.limit_val_batches": "null"})
    summary = train(compose_config(tmp_path / "balanced", overrides))
    report = summary["head_fit"]
    assert report["balanced"] is True and report["folds"] == 5
    (cache,) = (tmp_path / "cache" / "features").glob("*.pt")
    data = load_features(cache)
    x, y = data["train"][0].numpy(), data["train_labels"].numpy()
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=1 / (report["l2"] * len(y)), class_weight="balanced", max_iter=5000,
                                   tol=1e-10).fit(scaler.transform(x), y)
    model = load_model(summary["best_checkpoint"])
    with torch.no_grad():
        ours = torch.softmax(model.forward_head(data["val"]), 1).numpy()
    assert np.abs(ours - reference.predict_proba(scaler.transform(data["val"].numpy()))).max() < 2e-3
    assert "cross-validated class-balanced accuracy on train" in capsys.readouterr().out


def test_frozen_with_an_mlp_head_trains_it_on_the_cached_features_by_minibatch_epochs(tmp_path, tiny_folder):
    """head=mlp is not solved: it is trained on the cached features, its epochs chosen on held-out *training*
    images, and the checkpoint is that head on the frozen backbone."""
    from transferlab.tasks.train import train

    overrides = shrink(tiny_folder, strategy="frozen", head="mlp", **{
        "paths.cache_dir": tmp_path / "cache", "trainer.limit_val_batches": "null",
        "strategy.head_fit.training.max_epochs": 30, "strategy.head_fit.training.patience": 5})
    summary = train(compose_config(tmp_path / "mlp", overrides))
    report = summary["head_fit"]
    assert report["solver"] == "minibatch" and report["refit"] is True
    assert 1 <= report["epochs"] <= 30 and len(report["holdout_curve"]) >= report["epochs"]
    curve = report["holdout_curve"]  # the epochs of the lowest held-out loss (to within MIN_DELTA)
    assert curve[report["epochs"] - 1] == pytest.approx(min(curve), abs=MIN_DELTA + 1e-5)
    assert all(v > curve[report["epochs"] - 1] - MIN_DELTA - 1e-5 for v in curve[report["epochs"]:])
    assert report["rows"] == report["images"] == 24 and [p["name"] for p in summary["phases"]] == ["fit_head"]
    (cache,) = (tmp_path / "cache" / "features").glob("*.pt")
    data = load_features(cache)
    model = load_model(summary["best_checkpoint"])
    assert [type(m).__name__ for m in model.head if m.__class__.__name__ == "Linear"] == ["Linear", "Linear"]
    with torch.no_grad():  # the checkpoint's head on the raw cached features is the run's val accuracy
        accuracy = float((model.forward_head(data["val"]).argmax(1) == data["val_labels"]).float().mean())
    assert summary["val/acc_best"] == pytest.approx(accuracy, abs=1e-6)
    assert summary["val/acc_best"] > 0.9  # the tiny folder's colours separate


def test_frozen_without_head_fit_trains_its_head_by_sgd_epochs(tmp_path, tiny_folder):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy="frozen", **{
        "strategy.head_fit.enabled": "false", "trainer.max_epochs": 2, "callbacks.early_stopping": "null"}))
    summary = train(cfg)
    assert summary["epochs"] == 2 and summary["head_fit"] is None  # no fit: the head trained by SGD


class _HeadAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.weight = pl_module.head[-1].weight.detach().clone()


def test_lpft_fine_tunes_from_the_fitted_head_and_a_resumed_run_does_not_refit(tmp_path, tiny_folder, monkeypatch):
    from transferlab.tasks.train import train
    from transferlab.training import fit_head as fit_head_phase

    settings = {"paths.cache_dir": tmp_path / "cache", "callbacks.early_stopping": "null", "trainer.max_epochs": 1,
                "strategy.head_fit.source_classes": "[]",  # the features only, as `expected` below
                "strategy.head_fit.max_logit_std": 0.05}  # below any fitted head's spread: it is tempered
    overrides = shrink(tiny_folder, backbone="efficientnet_lite0", strategy="lpft", **settings)
    start = _HeadAtStart()
    first = train(compose_config(tmp_path, overrides), extra_callbacks=[start])
    (cache,) = (tmp_path / "cache" / "features").glob("*.pt")  # phase 1's features, shared with strategy=frozen
    data = load_features(cache)
    expected = fit_linear_head(data["train"][0], data["train_labels"], classes=2, groups=torch.arange(24),
                               seed=first["seed"])  # the run's seed draws the CV folds
    assert expected.l2 == first["head_fit"]["l2"]
    # phase 2 began at the phase-1 solution, tempered (divided by one factor) to logit std head_fit.max_logit_std
    tempered, temperature = expected.tempered(data["train"][0], 0.05)
    assert temperature > 1 and first["head_fit"]["temperature"] == pytest.approx(temperature, rel=1e-4)
    assert torch.allclose(start.weight, tempered.weight, rtol=1e-4, atol=1e-6)
    before = ((data["val"] @ expected.weight.T + expected.bias).argmax(1) == data["val_labels"]).float().mean()
    assert first["head_fit"]["val_accuracy"] == pytest.approx(float(before))  # what fine-tuning had to beat
    assert first["trainable_params"] == first["total_params"]  # then the whole network trained

    def refit(*args, **kwargs):
        raise AssertionError("a resumed LP-FT run fitted its head again")

    monkeypatch.setattr(fit_head_phase, "fit_linear_head", refit)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = train(compose_config(tmp_path, [*overrides, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert resumed["epochs"] == 2 and resumed["head_fit"] == first["head_fit"]


def test_a_tempered_head_predicts_as_fitted_with_its_logit_spread_capped():
    x, y = _data()
    fit = fit_linear_head(x, y, classes=3)
    spread = float((x @ fit.weight.T + fit.bias).std())
    tempered, temperature = fit.tempered(x, spread / 4)
    logits, tempered_logits = (x @ f.weight.T + f.bias for f in (fit, tempered))
    assert float(tempered_logits.std()) == pytest.approx(spread / 4, rel=1e-4)
    assert torch.equal(tempered_logits.argmax(1), logits.argmax(1))  # every prediction as it was
    assert temperature == pytest.approx(4.0, rel=1e-4)
    unchanged, temperature = fit.tempered(x, spread * 2)  # a cap, not a target: a calmer head is left as it is
    assert temperature == 1.0 and torch.equal(unchanged.weight, fit.weight)


def test_a_head_that_is_never_fine_tuned_is_not_tempered(tmp_path, tiny_folder):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy="frozen", **{"strategy.head_fit.max_logit_std": 1}))
    with pytest.raises(ConfigValueError, match=r"^strategy.head_fit.max_logit_std=1.0: .*Drop strategy.head_fit"):
        train(cfg)


def test_a_head_fit_uses_every_training_row_whatever_limit_train_batches_says(tmp_path, tiny_folder):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(tiny_folder, strategy="frozen", **{"trainer.limit_train_batches": 0.25}))
    assert train(cfg)["head_fit"]["rows"] == 24  # all of them (a quarter of one full batch would be an error)


def test_the_runs_seed_draws_the_cross_validation_folds(tmp_path, tiny_folder, monkeypatch):
    """`seed=1,2,3` must vary a frozen head's CV split too, or `frozen` shows no spread over seeds at all."""
    from transferlab.tasks.train import train
    from transferlab.training import fit_head as fit_head_phase

    seeds = []

    def recording(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return fit_linear_head(*args, **kwargs)

    monkeypatch.setattr(fit_head_phase, "fit_linear_head", recording)
    for seed in (7, 8):
        train(compose_config(tmp_path / str(seed), shrink(tiny_folder, strategy="frozen", seed=seed)))
    assert seeds == [7, 8]


def test_a_checkpoints_head_fit_report_is_data_checked_before_it_is_kept():
    from transferlab.models.classifier import head_fit_report_from

    report = {"l2": 0.01, "cv_accuracy": 0.9, "val_accuracy": 0.95, "candidates": {"features": 0.9},
              "source_names": ["bee", "ant"], "inputs": "source top 1"}
    assert head_fit_report_from(report) == report and head_fit_report_from(None) is None
    for damaged in ({**report, "l2": "0.01"}, {**report, "candidates": {"features": [0.9]}},
                    {**report, "source_names": [309]}, ["l2", 0.01]):
        assert head_fit_report_from(damaged) is None  # dropped: the summary never prints it


class _WholeHeadAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        import copy

        self.head = copy.deepcopy(pl_module.head).eval().cpu()


def test_lpft_with_an_mlp_head_fits_it_on_the_features_then_fine_tunes_from_it(tmp_path, tiny_folder):
    """strategy=lpft head=mlp: the fit_head phase trains the MLP by minibatch epochs, tempers its last layer to
    the logit spread asked for, enters it as the score to beat; then the fit phase trains the whole network."""
    from transferlab.tasks.train import train

    start = _WholeHeadAtStart()
    overrides = shrink(tiny_folder, strategy="lpft", head="mlp", **{
        "paths.cache_dir": tmp_path / "cache", "callbacks.early_stopping": "null", "trainer.max_epochs": 1,
        "strategy.head_fit.training.max_epochs": 20, "strategy.head_fit.max_logit_std": 0.05,
        "trainer.limit_val_batches": "null"})  # the head is scored on the whole val set, so every epoch must be
    summary = train(compose_config(tmp_path, overrides), extra_callbacks=[start])
    report = summary["head_fit"]
    assert report["solver"] == "minibatch" and report["temperature"] > 1
    assert [p["name"] for p in summary["phases"]] == ["fit_head", "fit"] and summary["epochs"] == 1
    assert summary["val_history"][0]["epoch"] == -1  # the fitted head, the score fine-tuning had to beat
    assert summary["val_history"][0]["val_acc"] == pytest.approx(report["val_accuracy"])
    assert summary["trainable_params"] == summary["total_params"]  # then everything trained
    (cache,) = (tmp_path / "cache" / "features").glob("*.pt")
    data = load_features(cache)
    with torch.no_grad():  # fine-tuning began at the tempered head, on the raw features (standardisation folded in)
        logits = start.head(data["train"][0])
        val_accuracy = float((start.head(data["val"]).argmax(1) == data["val_labels"]).float().mean())
    assert float(logits.std()) == pytest.approx(0.05, rel=1e-3)
    assert val_accuracy == pytest.approx(report["val_accuracy"])
