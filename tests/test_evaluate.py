"""Evaluation: metrics checked against scikit-learn, refusal of a shifted class set, the files eval.py writes.
The model is the session's shared `trained_run` (tests/conftest.py); the tests that edit its run directory copy it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn import metrics as skm

from tests.conftest import CLASSES, compose_config, copy_run, make_folder, run_script, shrink
from transferlab.evaluation.metrics import compute_metrics
from transferlab.inference import load_classifier
from transferlab.tasks.evaluate import (
    ClassMismatchError,
    RunDirError,
    check_classes,
    evaluate_checkpoint,
    training_data,
)
from transferlab.tasks.predict import expand_inputs, folder_labels


def _folder_dataset(tmp_path: Path, root: Path):
    """The dataset node eval.py composes for `dataset=folder dataset.root=<root>`."""
    return compose_config(tmp_path, shrink(root)).dataset


def test_metrics_agree_with_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    n, c = 400, 4
    targets = torch.randint(0, c, (n,), generator=gen)
    logits = torch.randn(n, c, generator=gen) + 2.0 * torch.nn.functional.one_hot(targets, c)
    logits[targets == 3] = torch.randn(int((targets == 3).sum()), c, generator=gen)  # a hard class
    probs = logits.softmax(-1)
    names = ["a", "b", "c", "d"]
    m, per_class, confusion, bins = compute_metrics(probs, targets, names, top_k=2, n_bins=10)
    y, p = targets.numpy(), probs.argmax(-1).numpy()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert m["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, probs.numpy(), k=2), abs=1e-6)
    for avg in ("macro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert (m[f"precision_{avg}"], m[f"recall_{avg}"], m[f"f1_{avg}"]) == pytest.approx((prec, rec, f1), abs=1e-5)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, p, zero_division=0)
    assert [r["class"] for r in per_class] == names
    assert [r["support"] for r in per_class] == support.tolist()
    assert [r["f1"] for r in per_class] == pytest.approx(f1.tolist(), abs=1e-5)
    assert [r["recall"] for r in per_class] == pytest.approx(rec.tolist(), abs=1e-5)
    assert confusion.tolist() == skm.confusion_matrix(y, p).tolist()
    # The reliability bins reproduce torchmetrics' ECE, computed independently here by hand.
    conf = probs.max(-1).values.numpy()
    correct = (p == y).astype(float)
    edges = np.linspace(0, 1, 11)
    ece = sum(abs(correct[(conf > lo) & (conf <= hi)].mean() - conf[(conf > lo) & (conf <= hi)].mean())
              * ((conf > lo) & (conf <= hi)).mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)
              if ((conf > lo) & (conf <= hi)).any())
    assert m["ece"] == pytest.approx(ece, abs=1e-4)
    assert sum(b["count"] for b in bins) == n
    assert sum(abs(b["accuracy"] - b["confidence"]) * b["count"] / n for b in bins if b["count"]) == pytest.approx(
        m["ece"], abs=1e-4)


def test_top_k_is_left_out_when_it_means_nothing():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    m, *_ = compute_metrics(probs, torch.tensor([0, 0]), ["x", "y"], top_k=5)
    assert not [k for k in m if k.startswith("top")]
    assert m["accuracy"] == 0.5


def test_class_sets_are_matched_by_name_and_differences_refused():
    assert check_classes(["a", "b"], ["a", "b"], "d") == [0, 1]
    assert check_classes(["b", "a"], ["a", "b"], "d") == [1, 0]
    with pytest.raises(ClassMismatchError, match=r"does not know: \['moth'\].*absent from the dataset: \['wasp'\]"):
        check_classes(["ant", "bee", "moth"], ["ant", "bee", "wasp"], "dataset.root=/x")


def test_eval_refuses_a_dataset_with_other_classes(tmp_path, trained_run):
    other = make_folder(tmp_path / "other", {"train": {"ant": 2, "bee": 2, "moth": 2}, "val": {"ant": 1, "moth": 1}})
    with pytest.raises(ClassMismatchError) as err:
        evaluate_checkpoint(trained_run["run_dir"], _folder_dataset(tmp_path, other), output_dir=tmp_path / "out")
    assert "moth" in str(err.value) and "wasp" in str(err.value) and str(other) in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing scored, nothing written


def test_eval_cli_uses_the_runs_own_data_and_writes_every_output(tmp_path, trained_run, monkeypatch, capsys):
    code, err, stdout = run_script("eval.py", f"ckpt_path={trained_run['run_dir']}", "top_k=2", "mistakes=4",
                              f"paths.root_dir={tmp_path}", "progress=false", "device=cpu", cwd=tmp_path,
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err[-3000:]
    out = next((tmp_path / "outputs" / "eval" / "runs").glob("*/*"))
    expected = {"metrics.json", "per_class.csv", "per_class.md", "confusion_matrix.csv", "confusion_matrix.png",
                "calibration.png", "confident_mistakes.png", "predictions.csv"}
    assert expected <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "metrics.json").read_text())
    val_files = expand_inputs(Path(trained_run["data"], "val"))
    assert doc["checkpoint"] == trained_run["best_checkpoint"]
    assert doc["split"] == "val" and doc["metrics"]["num_images"] == len(val_files) == 15
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(r["file"] for r in rows) == sorted(val_files)
    assert all(r["true"] == Path(r["file"]).parent.name for r in rows)
    assert doc["metrics"]["accuracy"] == pytest.approx(sum(int(r["correct"]) for r in rows) / len(rows))
    assert "top2_accuracy" in doc["metrics"]
    confusion = list(csv.reader((out / "confusion_matrix.csv").open()))
    assert confusion[0][1:] == CLASSES and sum(int(v) for row in confusion[1:] for v in row[1:]) == 15
    assert (out / "per_class.md").read_text().startswith("| class | precision | recall | f1 | support |")
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class"] for r in per_class] == [*CLASSES, "macro avg", "weighted avg"]
    wrong = [r for r in rows if r["correct"] == "0"]
    assert len(doc["confident_mistakes"]) == min(4, len(wrong))
    assert [m["prob"] for m in doc["confident_mistakes"]] == sorted((m["prob"] for m in doc["confident_mistakes"]),
                                                                    reverse=True)
    for png in ("confusion_matrix.png", "calibration.png", "confident_mistakes.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 200 and im.size[1] > 100
    assert f"accuracy            {doc['metrics']['accuracy']:.4f}" in stdout
    assert "| macro avg |" in stdout and "ECE (15 bins)" in stdout


def test_predict_on_val_agrees_with_eval(tmp_path, trained_run):
    ev = evaluate_checkpoint(trained_run["run_dir"], progress=False, batch_size=4)
    clf = load_classifier(trained_run["run_dir"])
    files = expand_inputs(Path(trained_run["data"], "val"))
    preds = clf.predict(files, batch_size=7)
    truth = folder_labels([p.source for p in preds], clf.class_names)
    folder_acc = sum(t == p.label for t, p in zip(truth, preds, strict=True)) / len(preds)
    assert folder_acc == pytest.approx(ev.metrics["accuracy"], abs=1e-6)  # torchmetrics: float32
    by_file = {p.source: p.label for p in preds}
    assert {f: ev.class_names[int(i)] for f, i in zip(ev.files, ev.preds, strict=True)} == by_file


def test_explicit_dataset_split_all_and_skipped_files(tmp_path, trained_run):
    data = tmp_path / "copy"
    shutil.copytree(trained_run["data"], data)
    (data / "val" / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ev = evaluate_checkpoint(trained_run["best_checkpoint"], _folder_dataset(tmp_path, data), split="all",
                             progress=False)
    assert ev.metrics["num_images"] == 3 * 12 + 3 * 5
    # Left out by the dataset's own checks, or skipped when classified: either way reported, never fatal.
    reported = [s.source for s in ev.skipped] + ev.dataset_skipped
    assert [Path(p).name for p in reported] == ["broken.png"]
    with pytest.raises(ValueError, match="split='test'"):
        evaluate_checkpoint(trained_run["best_checkpoint"], _folder_dataset(tmp_path, data), split="test")


def test_a_checkpoint_outside_its_run_needs_a_dataset(tmp_path, trained_run):
    lone = tmp_path / "lone.ckpt"
    shutil.copy(trained_run["best_checkpoint"], lone)
    with pytest.raises(FileNotFoundError, match="dataset=folder dataset.root="):
        evaluate_checkpoint(lone)


def test_training_dataset_is_found_from_another_working_directory(tmp_path, trained_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = training_data(Path(trained_run["best_checkpoint"]))
    assert Path(data["root"]) == Path(trained_run["data"])
    assert data["split_seed"] == 42


def test_someone_elses_run_directory_is_data_nothing_in_it_runs(tmp_path, trained_run):
    """eval.py reads a run dir's .hydra/config.yaml for the data only; its `_target_`s are never called."""
    run = copy_run(trained_run, tmp_path / "theirs")
    marker = tmp_path / "pwned"
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.dataset._target_ = "builtins.open"
    cfg.dataset.prepare = {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "x"}
    cfg.callbacks = {"evil": {"_target_": "pathlib.Path.touch", "self": str(marker)}}
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    ev = evaluate_checkpoint(str(run), output_dir=None, progress=False)
    assert not marker.exists()
    assert ev.metrics["num_images"] > 0


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "not-a-number"])
def test_a_run_directory_with_bad_data_settings_is_named(tmp_path, trained_run, value):
    run = copy_run(trained_run, tmp_path / "bad")
    config = run / ".hydra" / "config.yaml"
    key = "root" if value != "not-a-number" else "val_fraction"
    cfg = OmegaConf.load(config)
    cfg.dataset[key] = OmegaConf.create({"v": __import__("yaml").safe_load(value)}).v
    OmegaConf.save(cfg, config)
    with pytest.raises(RunDirError, match=f"dataset.{key}") as err:
        evaluate_checkpoint(str(run), output_dir=None, progress=False)
    assert str(config) in str(err.value)
