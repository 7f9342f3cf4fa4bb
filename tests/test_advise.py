"""The strategy advisor (`python -m transferlab.advise`, `strategy=auto`): exact size measures, the probe as
the head `strategy=frozen` fits, the recommendation table as a pure function, the command line, and a training
run that follows the advice; with -m slow, the advice on the real folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HYMENOPTERA, ROOT, compose_config, make_folder, shrink
from transferlab import advise
from transferlab.advise import RECOMMENDATIONS, SIMILARITIES, SIZES, Measures, Thresholds, recommend
from transferlab.advise import __main__ as advise_cli
from transferlab.config.schema import HeadFitConfig
from transferlab.config.settings import RunSettings
from transferlab.models.checkpoint import load_model


@pytest.fixture
def uneven_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", {"train": {"ant": 12, "bee": 6, "wasp": 9},
                                           "val": {"ant": 3, "bee": 3, "wasp": 3}})


# --- measures ---------------------------------------------------------------------------------------------------
def test_size_measures_are_exact_and_val_is_never_measured(tmp_path, uneven_folder):
    cfg = compose_config(tmp_path, shrink(uneven_folder))
    measures, datamodule = advise.measure(RunSettings.from_config(cfg), Thresholds())
    assert (measures.classes, measures.train_images) == (3, 27)
    assert (measures.per_class_min, measures.per_class_median, measures.imbalance) == (6, 9.0, 2.0)
    assert measures.chance == pytest.approx(12 / 27)
    assert measures.probe_images == 27  # the training pool, not a val image
    assert measures.folds == 5 and 0.0 <= measures.probe_acc <= 1.0 and 0.0 <= measures.knn_acc <= 1.0
    assert measures.imagenet_confidence is None  # a random tiny backbone has no ImageNet head
    assert Path(measures.feature_cache).is_file() and measures.cache_hit is False


def test_probe_and_neighbours_see_separable_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 16)) + 4.0 * np.eye(16)[y]  # class k lights up dimension k
    got = advise.probe_measures(x, y)
    assert got["probe_acc"] == 1.0 and got["knn_acc"] == 1.0 and got["folds"] == 5
    # strategy=frozen's head fit: an l2 of its grid, chosen on the features (no pretrained classifier given)
    assert got["probe_l2"] in HeadFitConfig().l2 and got["probe_inputs"] == "features"
    assert set(got["probe_candidates"]) == {"features"} and got["probe_balanced"] is False
    assert advise.probe_measures(x[:41], y[:41]) == {}  # class 2 has one image: nothing to cross-validate


def test_normalised_by_chance():
    m = _measures(per_class=100, probe=0.75, knn=0.5, classes=2)
    assert m.normalised(0.5) == 0.0 and m.probe_norm == pytest.approx(0.5) and m.knn_norm == 0.0


def test_normalised_by_the_chance_of_the_images_measured():
    """max_per_class can make the measured sample more balanced than the pool (elpv: 0.38 against 0.57); a
    probe scored by balanced accuracy (dataset.balance) has chance 1/classes."""
    m = _measures(per_class=100, probe=0.75, knn=0.5, classes=2)
    m.chance, m.measured_chance = 0.8, 0.5
    assert m.knn_norm == 0.0 and m.probe_norm == pytest.approx(0.5)
    m.measured_chance, m.probe_balanced = 0.6, True
    assert m.knn_norm == pytest.approx(-0.25) and m.probe_norm == pytest.approx(0.5)


def test_the_probe_samples_at_most_max_per_class_images_of_a_class():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), [30, 10])
    x = rng.normal(size=(40, 8)) + 3.0 * np.eye(8)[y]
    got = advise.probe_measures(x, y, Thresholds(max_per_class=10))
    assert got["probe_images"] == 20 and got["measured_chance"] == 0.5


@pytest.mark.parametrize("balance", ["none", "loss"])
def test_the_floor_is_the_cv_accuracy_of_the_head_strategy_frozen_fits(tmp_path, uneven_folder, balance):
    """The point of the probe: the advisor's floor is what a `strategy=frozen` run reports for its head fit on
    the same cached features (strength, inputs, CV accuracy; with dataset.balance, class-weighted alike)."""
    from transferlab.tasks.train import train

    overrides = shrink(uneven_folder, **{"dataset.balance": balance})
    summary = train(compose_config(tmp_path, [*overrides, "strategy=frozen"]))
    report = summary["head_fit"]
    measures, _ = advise.measure(RunSettings.from_config(compose_config(tmp_path, overrides)), Thresholds())
    assert measures.cache_hit is True  # the frozen run's cache entry: the same features
    assert measures.probe_acc == pytest.approx(report["cv_accuracy"], abs=1e-9)
    assert (measures.probe_l2, measures.probe_inputs, measures.folds) == (report["l2"], report["inputs"],
                                                                          report["folds"])
    assert measures.probe_balanced is (balance != "none") is report["balanced"]
    assert recommend(measures).floor == measures.probe_acc


# --- the recommendation, a pure function over measures ---------------------------------------------------------
def _measures(per_class: float, probe: float | None, knn: float | None, classes: int = 10,
              imbalance: float = 1.0) -> Measures:
    return Measures(classes=classes, train_images=int(per_class * classes), per_class_min=int(per_class),
                    per_class_median=per_class, imbalance=imbalance, chance=1 / classes, probe_acc=probe,
                    knn_acc=knn, knn_k=5, folds=5)


@pytest.mark.parametrize(("per_class", "probe", "knn", "case", "strategy", "settings"), [
    (120, 0.97, 0.96, ("small", "similar"), "frozen", {}),
    (120, 0.95, 0.85, ("small", "different"), "partial", {"trainable_stages": 2}),
    (120, 0.60, 0.40, ("small", "very different"), "partial", {"trainable_stages": 3}),
    (120, 0.80, 0.97, ("small", "different"), "partial", {"trainable_stages": 2}),  # neighbours agree, probe fails
    (10, 0.97, 0.96, ("few", "similar"), "frozen", {}),
    (10, 0.40, 0.30, ("few", "very different"), "frozen", {}),
    (800, 0.97, 0.96, ("large", "similar"), "finetune", {}),
    (800, 0.60, 0.40, ("large", "very different"), "finetune", {}),
])
def test_each_case_maps_to_its_strategy(per_class, probe, knn, case, strategy, settings):
    advice = recommend(_measures(per_class, probe, knn))
    assert (advice.size, advice.similarity) == case
    assert (advice.recommendation.strategy, advice.recommendation.settings) == (strategy, settings)
    assert advice.floor == probe and advice.reason
    assert advice.case.startswith(f"{case[0]} ({per_class:g} images/class), ")


def test_every_case_has_a_row_naming_a_strategy_option():
    for size in SIZES:
        for similarity in SIMILARITIES:
            rec = RECOMMENDATIONS[(size, similarity)]
            node = advise.strategy_option(rec.strategy, rec.settings)  # loads onto the schema: keys checked
            assert node.name == rec.strategy and rec.why


def test_thresholds_are_one_dataclass_and_configurable():
    m = _measures(120, 0.97, 0.96)
    assert recommend(m).recommendation.strategy == "frozen"
    assert recommend(m, Thresholds(large_per_class=100)).recommendation.strategy == "finetune"
    assert recommend(m, Thresholds.from_mapping({"similar": 0.99})).similarity == "different"
    with pytest.raises(ValueError, match="unknown setting"):
        Thresholds.from_mapping({"simlar": 0.9})


def test_unmeasurable_similarity_falls_back_to_size_and_imbalance_is_named():
    advice = recommend(_measures(1, None, None))
    assert advice.similarity is None and advice.recommendation.strategy == "frozen" and advice.floor is None
    reason = recommend(_measures(120, 0.97, 0.96, imbalance=5)).reason
    assert "imbalanced (5x)" in reason and "dataset.balance=loss" in reason


def test_strategy_option_is_read_as_data_onto_the_schema():
    node = advise.strategy_option("partial", {"trainable_stages": 3})
    assert (node.name, dict(node.train), node.trainable_stages, node.pretrained) == ("partial", {"head": 1.0}, 3, True)
    with pytest.raises(Exception, match="trainable_stage"):
        advise.strategy_option("partial", {"trainable_stage": 3})


# --- the command line ------------------------------------------------------------------------------------------
def test_cli_prints_case_recommendation_floor_and_sweep(tmp_path, uneven_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs/cache under the launch directory
    assert advise_cli.main([str(uneven_folder), "debug=tiny", "--json", str(tmp_path / "advice.json")]) == 0
    out = capsys.readouterr().out
    assert "Case:          few (9 images/class)" in out
    assert "Recommended:   strategy=frozen" in out
    assert "Floor to beat: " in out and "Linear probe:  " in out and "strategy=frozen's head fit" in out
    assert "Neighbours:    4-NN" in out  # k <= the fewest images of a class in a training fold (6 - 2)
    assert (f"python train.py -m experiment=strategy_check dataset=folder dataset.root={uneven_folder} "
            "debug=tiny\n") in out
    assert list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))  # under the launch directory
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert saved["strategy"] == "frozen" and saved["measures"]["per_class_min"] == 6


def test_cli_sweep_checks_non_default_settings_too():
    rec = RECOMMENDATIONS[("small", "very different")]
    first, second = advise.sweep_commands("data/x", ["backbone=resnet18", "strategy=finetune"], rec)
    assert first.endswith("-m experiment=strategy_check dataset=folder dataset.root=data/x backbone=resnet18")
    assert second.endswith("strategy=partial strategy.trainable_stages=3 seed=1,2,3")


def test_cli_bad_root_is_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        advise_cli.main([str(tmp_path / "nowhere"), "debug=tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere does not exist" in err and len(err.splitlines()) == 1


# --- strategy=auto ---------------------------------------------------------------------------------------------
def test_auto_trains_with_the_recommended_settings_and_records_the_advice(tmp_path, uneven_folder):
    from transferlab.tasks.train import train

    # nothing counts as similar here, so the advice is partial with 3 stages (not the option's default 2)
    cfg = compose_config(tmp_path, shrink(uneven_folder, strategy="auto", **{
        "+advise.few_per_class": 1, "+advise.similar": 1.01, "+advise.very_different": 1.01}))
    summary = train(cfg)
    strategy = load_model(summary["best_checkpoint"]).strategy  # what the model really trained under
    assert (strategy.name, strategy.trainable_stages, strategy.train) == ("partial", 3, {"head": 1.0})
    assert strategy.head_fit.seed == cfg.seed  # the chosen option follows the run's seed, as a composed one does
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for record in (summary["advice"], saved["advice"]):
        assert (record["strategy"], record["settings"]) == ("partial", {"trainable_stages": 3})
        assert record["case"].startswith("small (9 images/class), very different from ImageNet")
        assert record["measures"]["per_class_min"] == 6 and record["reason"]
    assert saved["status"] == "ok" and 0 < saved["trainable_params"] < saved["total_params"]


def test_auto_that_picks_frozen_reuses_the_advisor_features(tmp_path, uneven_folder, caplog):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(uneven_folder, strategy="auto"))
    with caplog.at_level("INFO"):
        summary = train(cfg)
    assert summary["advice"]["strategy"] == "frozen"
    assert load_model(summary["best_checkpoint"]).strategy.name == "frozen"
    assert [p["name"] for p in summary["phases"]] == ["fit_head"]
    assert len(list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))) == 1  # one entry, built once
    assert any("Loaded cached features" in r.getMessage() for r in caplog.records)


# --- the real folders (-m slow; each skipped when its data is absent) -----------------------------------------
DATASETS = (ROOT / ".." / "shared" / "datasets").resolve()
REAL = {  # folder -> (size, similarity, strategy, settings) with EfficientNet-Lite0 (README: the advisor's table)
    "hymenoptera_data": ("small", "similar", "frozen", {}),
    "flowers12": ("small", "similar", "frozen", {}),
    "elpv": ("small", "very different", "partial", {"trainable_stages": 3}),  # greyscale solar cells, imbalanced
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL))
def test_real_folders_get_the_documented_advice_and_frozen_reports_the_floor(tmp_path, name):
    """Lite0's real features: the case and the recommendation, and (where max_per_class keeps every image) the
    floor equal to the cross-validated accuracy the `strategy=frozen` run reports, pretrained candidates and all."""
    from transferlab.tasks.train import train

    root = HYMENOPTERA if name == "hymenoptera_data" else DATASETS / name
    if not (root / "train").is_dir():
        pytest.skip(f"{root} not found")
    overrides = ["dataset=folder", f"dataset.root={root}", "backbone=efficientnet_lite0", "dataset.num_workers=0",
                 "trainer.enable_progress_bar=false"]  # as `python -m transferlab.advise <root>` composes it
    measures, _ = advise.measure(RunSettings.from_config(compose_config(tmp_path, overrides)), Thresholds())
    advice = recommend(measures)
    size, similarity, strategy, settings = REAL[name]
    assert (advice.size, advice.similarity) == (size, similarity), advice.case
    assert (advice.recommendation.strategy, advice.recommendation.settings) == (strategy, settings)
    assert measures.imagenet_confidence is not None and len(measures.probe_candidates) == 3  # features, top 1, 5
    if measures.probe_images < measures.train_images:  # elpv: 500 of its 1131 and 537, all 222 and 80
        assert measures.probe_images == 1302 and measures.measured_chance == pytest.approx(500 / 1302)
        return
    report = train(compose_config(tmp_path, [*overrides, "strategy=frozen"]))["head_fit"]
    assert measures.probe_acc == pytest.approx(report["cv_accuracy"], abs=1e-3)  # threads: at most an image
    assert measures.probe_inputs == report["inputs"]
