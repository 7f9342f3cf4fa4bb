"""k-fold cross-validation (dataset.folds, dataset.fold, dataset.cv_pool): folds partition the pool, are
stratified and seeded, keep byte-identical files together, and a training run validates on its fold."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import compose_config, make_folder, shrink
from transferlab.config.checks import ConfigValueError
from transferlab.data import FolderDataModule
from transferlab.data.folders import DatasetLayoutError, Sample, kfold_split, scan_folder


def _folds(splits, k: int, seed: int = 0, pool: str = "train", groups=None):
    return [kfold_split(splits, k, i, seed, pool, groups) for i in range(k)]


def _paths(samples) -> set[str]:
    return {s.path for s in samples}


@pytest.fixture
def uneven(tmp_path: Path) -> Path:
    """3 classes of 13, 7 and 9 training images (not multiples of the folds), plus a val/ folder."""
    return make_folder(tmp_path / "uneven", {"train": {"a": 13, "b": 7, "c": 9}, "val": {"a": 3, "b": 3, "c": 3}},
                       size=8)


def test_folds_partition_the_train_folder_and_are_stratified(uneven):
    splits = scan_folder(uneven)
    pool = _paths(splits.train)
    folds = _folds(splits, 5)
    vals = [_paths(f.val) for f in folds]
    assert set().union(*vals) == pool  # the validation folds cover the pool ...
    assert sum(len(v) for v in vals) == len(pool)  # ... and are pairwise disjoint
    for f, v in zip(folds, vals, strict=True):
        assert _paths(f.train) == pool - v  # training = every other fold
        assert f.fold is not None and f.class_names == splits.class_names
    assert not pool & _paths(splits.val)  # cv_pool=train leaves val/ out
    for label in range(3):  # per-class counts differ by at most one between folds
        per_fold = [sum(s.label == label for s in f.val) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (label, per_fold)


def test_folds_are_deterministic_for_a_seed_and_change_with_it(uneven):
    splits = scan_folder(uneven)
    first = [_paths(f.val) for f in _folds(splits, 3, seed=7)]
    assert first == [_paths(f.val) for f in _folds(scan_folder(uneven), 3, seed=7)]
    # the input order does not matter
    shuffled = type(splits)(splits.class_names, list(reversed(splits.train)), splits.val, splits.layout)
    assert first == [_paths(f.val) for f in _folds(shuffled, 3, seed=7)]
    assert first != [_paths(f.val) for f in _folds(splits, 3, seed=8)]


def test_cv_pool_all_includes_the_val_folder(uneven):
    splits = scan_folder(uneven)
    pool = _paths(splits.train) | _paths(splits.val)
    folds = _folds(splits, 4, pool="all")
    assert set().union(*(_paths(f.val) for f in folds)) == pool
    assert sum(len(f.val) for f in folds) == len(pool)
    assert all(_paths(f.train) | _paths(f.val) == pool for f in folds)


def test_a_folder_without_val_is_pooled_whole(tmp_path):
    root = make_folder(tmp_path / "flat", {".": {"a": 10, "b": 10}}, size=8)
    splits = scan_folder(root)  # its val_fraction holdout is not made when folding
    folds = _folds(splits, 4)
    assert set().union(*(_paths(f.val) for f in folds)) == _paths(splits.train) | _paths(splits.val)
    assert sum(len(f.val) for f in folds) == 20


def test_duplicate_groups_never_straddle_folds(uneven):
    splits = scan_folder(uneven)
    # class a: files 0-3 share one content, 5-6 another; class c: 0-2 another
    groups = {s.path: s.path for s in splits.train}
    for members, key in ((("a", range(4)), "dupA"), (("a", range(5, 7)), "dupA2"), (("c", range(3)), "dupC")):
        cls, numbers = members
        for n in numbers:
            groups[str(uneven / "train" / cls / f"{n:03d}.png")] = key
    for fold in _folds(splits, 3, groups=groups):
        for key in ("dupA", "dupA2", "dupC"):
            members = {p for p, k in groups.items() if k == key}
            assert members <= _paths(fold.val) or members <= _paths(fold.train), key


def test_the_datamodule_groups_byte_identical_files_from_the_doctors_hashes(tmp_path):
    root = make_folder(tmp_path / "dups", {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}}, size=8)
    for n in range(1, 4):  # a/000 = a/001 = a/002 = a/003 byte for byte; b/005 = b/006
        shutil.copyfile(root / "train" / "a" / "000.png", root / "train" / "a" / f"{n:03d}.png")
    shutil.copyfile(root / "train" / "b" / "005.png", root / "train" / "b" / "006.png")
    for seed in range(4):
        for fold in range(3):
            dm = FolderDataModule(str(root), folds=3, fold=fold, split_seed=seed, cv_pool="all")
            val = _paths(dm.scan().val)
            for copies in (["a/000", "a/001", "a/002", "a/003"], ["b/005", "b/006"]):
                inside = {str(root / "train" / f"{c}.png") in val for c in copies}
                assert len(inside) == 1, (seed, fold, copies)  # all in val, or all in train


def test_fold_settings_are_checked(uneven, tmp_path):
    with pytest.raises(ConfigValueError, match="at least 2 folds"):
        FolderDataModule(str(uneven), folds=1)
    with pytest.raises(ConfigValueError, match=r"dataset.fold=3 with dataset.folds=3: use a fold in 0..2"):
        FolderDataModule(str(uneven), folds=3, fold=3)
    with pytest.raises(ConfigValueError, match="dataset.cv_pool='both'"):
        FolderDataModule(str(uneven), folds=3, cv_pool="both")
    # class b has 7 training images: 8 folds cannot all hold it; the error names the class
    with pytest.raises(DatasetLayoutError, match=r"class\(es\) \{'b': 7\}"):
        FolderDataModule(str(uneven), folds=8).scan()
    FolderDataModule(str(uneven), folds=8, cv_pool="all").scan()  # with val/'s 3 more, b has 10


def test_kfold_split_takes_samples_in_any_order():
    from transferlab.data.folders import FolderSplits

    samples = [Sample(f"/x/{c}{i}", label) for label, c in enumerate("ab") for i in range(6)]
    splits = FolderSplits(["a", "b"], samples, [], "train_val")
    folds = _folds(splits, 3)
    assert [Counter(s.label for s in f.val) for f in folds] == [Counter({0: 2, 1: 2})] * 3


def test_training_on_fold_1_of_3_trains_and_validates_on_that_fold(tmp_path, tiny_folder, caplog):
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, shrink(tiny_folder, **{"dataset.folds": 3, "dataset.fold": 1,
                                                         "logger": "none", "callbacks.dashboards": "null"}))
    expected = kfold_split(scan_folder(tiny_folder, seed=cfg.seed), 3, 1, cfg.seed)
    with caplog.at_level(logging.INFO, logger="transferlab.data.datamodule"):
        summary = train(cfg)
    assert summary["status"] == "ok" and summary["val/acc_best"] is not None
    assert "fold 1/3: 16 train / 8 val" in caplog.text  # the 24 training images of tiny_folder
    report = json.loads((tmp_path / "run" / "dataset_report.json").read_text())
    assert report["samples"] == {"train": 16, "val": 8}
    assert report["cv"] == {"fold": 1, "folds": 3, "pool": "train", "seed": cfg.seed}
    assert len(expected.val) == 8 and not _paths(expected.val) & {str(p) for p in tiny_folder.glob("val/*/*")}


def test_each_fold_gets_its_own_feature_cache_entry(tmp_path, tiny_folder):
    from transferlab.tasks.train import train

    for fold in (0, 1, 0):
        cfg = compose_config(tmp_path, shrink(tiny_folder, **{"dataset.folds": 2, "dataset.fold": fold,
                                                             "strategy": "frozen", "logger": "none",
                                                             "callbacks.dashboards": "null"}))
        train(cfg)
    entries = list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))
    assert len(entries) == 2  # fold 0's entry was reused the second time
