"""Folder scanning: one class mapping from train/, imposed on val/; deterministic splits."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import make_folder
from transferlab.data.folders import DatasetLayoutError, scan_folder, sort_class_names


def test_mapping_comes_from_train_and_val_missing_class_warns(tmp_path, caplog):
    root = make_folder(tmp_path, {"train": {"ant": 2, "bee": 2, "wasp": 2}, "val": {"ant": 1, "wasp": 1}})
    with caplog.at_level(logging.WARNING):
        splits = scan_folder(root)
    assert splits.class_names == ["ant", "bee", "wasp"]
    # ImageFolder on val/ alone would call wasp label 1; the train mapping keeps it at 2.
    val_labels = {s.path.split("/")[-2]: s.label for s in splits.val}
    assert val_labels == {"ant": 0, "wasp": 2}
    assert "bee" in caplog.text and "no validation folder" in caplog.text


def test_val_class_unknown_to_train_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path, {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1, "moth": 1}})
    with pytest.raises(DatasetLayoutError, match="moth"):
        scan_folder(root)


def test_hidden_and_tool_dirs_never_become_classes(tmp_path):
    root = make_folder(tmp_path, {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "__pycache__").mkdir()
    assert scan_folder(root).class_names == ["ant", "bee"]


def test_numeric_class_names_sort_numerically():
    assert sort_class_names(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_class_names(["b", "a10", "a2"]) == ["a10", "a2", "b"]


def test_root_without_val_is_split_deterministically_and_stratified(tmp_path):
    root = make_folder(tmp_path, {"all": {"ant": 10, "bee": 10}}) / "all"
    a, b = scan_folder(root, val_fraction=0.2, seed=3), scan_folder(root, val_fraction=0.2, seed=3)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert sorted(s.label for s in a.val) == [0, 0, 1, 1]
    assert not {s.path for s in a.val} & {s.path for s in a.train}
    assert {s.path for s in scan_folder(root, 0.2, seed=4).val} != {s.path for s in a.val}


def test_missing_root_and_empty_class_are_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match="nowhere"):
        scan_folder(tmp_path / "nowhere")
    root = make_folder(tmp_path / "d", {"train": {"ant": 2, "bee": 2}})
    (root / "train" / "wasp").mkdir()
    with pytest.raises(DatasetLayoutError, match="wasp"):
        scan_folder(root)
