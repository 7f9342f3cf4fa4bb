"""The strategy advisor (`python -m transferlab.advise`, `strategy=auto`): exact size measures, the
recommendation table as a pure function, the command line, and a training run that follows the advice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import compose_config, make_folder, shrink
from transferlab import advise as advise_cli
from transferlab.tasks import advise
from transferlab.tasks.advise import RECOMMENDATIONS, SIMILARITIES, SIZES, Measures, Thresholds, recommend


@pytest.fixture
def uneven_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", {"train": {"ant": 12, "bee": 6, "wasp": 9},
                                           "val": {"ant": 3, "bee": 3, "wasp": 3}})


# --- measures ---------------------------------------------------------------------------------------------------
def test_size_measures_are_exact_and_val_is_never_measured(tmp_path, uneven_folder):
    cfg = compose_config(tmp_path, shrink(uneven_folder))
    measures, datamodule = advise.measure(cfg, Thresholds())
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
    assert got["probe_acc"] == 1.0 and got["knn_acc"] == 1.0 and got["folds"] == 5 and len(got["probe_c"]) == 5
    assert advise.probe_measures(x[:41], y[:41]) == {}  # class 2 has one image: nothing to cross-validate


def test_normalised_by_chance():
    m = _measures(per_class=100, probe=0.75, knn=0.5, classes=2)
    assert m.normalised(0.5) == 0.0 and m.probe_norm == pytest.approx(0.5) and m.knn_norm == 0.0


# --- the recommendation, a pure function over measures ---------------------------------------------------------
def _measures(per_class: float, probe: float | None, knn: float | None, classes: int = 10,
              imbalance: float = 1.0) -> Measures:
    return Measures(classes=classes, train_images=int(per_class * classes), per_class_min=int(per_class),
                    per_class_median=per_class, imbalance=imbalance, chance=1 / classes, probe_acc=probe,
                    probe_std=0.0, knn_acc=knn, knn_k=5, folds=5)


@pytest.mark.parametrize(("per_class", "probe", "knn", "realm", "strategy", "settings"), [
    (120, 0.97, 0.96, ("small", "similar"), "frozen", {}),
    (120, 0.95, 0.85, ("small", "different"), "partial", {"trainable_stages": 2}),
    (120, 0.60, 0.40, ("small", "very different"), "partial", {"trainable_stages": 3}),
    (120, 0.80, 0.97, ("small", "different"), "partial", {"trainable_stages": 2}),  # neighbours agree, probe fails
    (10, 0.97, 0.96, ("few", "similar"), "frozen", {}),
    (10, 0.40, 0.30, ("few", "very different"), "frozen", {}),
    (800, 0.97, 0.96, ("large", "similar"), "finetune", {}),
    (800, 0.60, 0.40, ("large", "very different"), "finetune", {}),
])
def test_each_realm_maps_to_its_strategy(per_class, probe, knn, realm, strategy, settings):
    advice = recommend(_measures(per_class, probe, knn))
    assert (advice.size, advice.similarity) == realm
    assert (advice.recommendation.strategy, advice.recommendation.settings) == (strategy, settings)
    assert advice.floor == probe and advice.reason
    assert advice.realm.startswith(f"{realm[0]} ({per_class:g} images/class), ")


def test_every_realm_has_a_row_naming_a_strategy_option():
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
def test_cli_prints_realm_recommendation_floor_and_sweep(tmp_path, uneven_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs/cache under the launch directory
    assert advise_cli.main([str(uneven_folder), "debug=tiny", "--json", str(tmp_path / "advice.json")]) == 0
    out = capsys.readouterr().out
    assert "Realm:         few (9 images/class)" in out
    assert "Recommended:   strategy=frozen" in out
    assert "Floor to beat: " in out and "Linear probe:  " in out
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
    assert (cfg.strategy.name, cfg.strategy.trainable_stages, dict(cfg.strategy.train)) == ("partial", 3, {"head": 1.0})
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for record in (summary["advice"], saved["advice"]):
        assert (record["strategy"], record["settings"]) == ("partial", {"trainable_stages": 3})
        assert record["realm"].startswith("small (9 images/class), very different from ImageNet")
        assert record["measures"]["per_class_min"] == 6 and record["reason"]
    assert saved["status"] == "ok" and 0 < saved["trainable_params"] < saved["total_params"]


def test_auto_that_picks_frozen_reuses_the_advisor_features(tmp_path, uneven_folder, caplog):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(uneven_folder, strategy="auto"))
    with caplog.at_level("INFO"):
        summary = train(cfg)
    assert summary["advice"]["strategy"] == "frozen" and cfg.strategy.name == "frozen"
    assert len(list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))) == 1  # one entry, built once
    assert any("Loaded cached features" in r.getMessage() for r in caplog.records)
