"""Inference from a checkpoint alone: finding it, loading it safely, predicting, skipping bad files, the CLI.
The model is the session's shared `trained_run` (tests/conftest.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import CLASSES, make_folder, run_script
from transferlab.data.images import load_rgb
from transferlab.data.transforms import eval_transform
from transferlab.inference import load_classifier
from transferlab.models.checkpoint import CheckpointError, resolve_checkpoint
from transferlab.tasks.predict import expand_inputs, folder_labels
from transferlab.tasks.predict import run as predict_run


def _manual_probs(model, paths) -> torch.Tensor:
    tf = eval_transform(model.input_spec)
    with torch.no_grad():
        return model.eval()(torch.stack([tf(load_rgb(str(p))) for p in paths])).softmax(-1)


# --- finding checkpoints -----------------------------------------------------------------------------------
def test_run_dir_resolves_to_best_and_last(trained_run):
    run = trained_run["run_dir"]
    assert resolve_checkpoint(run) == Path(trained_run["best_checkpoint"])
    assert resolve_checkpoint(f"{run}:best") == Path(trained_run["best_checkpoint"])
    assert resolve_checkpoint(f"{run}:last") == Path(run) / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(trained_run["best_checkpoint"]) == Path(trained_run["best_checkpoint"])


def test_run_dir_without_summary_picks_the_best_accuracy_in_the_names(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("epoch001-acc0.5000.ckpt", "epoch003-acc0.7500.ckpt", "epoch002-acc0.6250.ckpt", "last.ckpt"):
        (ckpts / name).write_bytes(b"x")
    assert resolve_checkpoint(tmp_path / "run").name == "epoch003-acc0.7500.ckpt"
    assert resolve_checkpoint(f"{tmp_path / 'run'}:last").name == "last.ckpt"


def test_unresolvable_checkpoints_say_what_exists(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    only_last = tmp_path / "r" / "checkpoints"
    only_last.mkdir(parents=True)
    (only_last / "last.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"no best checkpoint.*last\.ckpt.*:last"):
        resolve_checkpoint(tmp_path / "r")
    with pytest.raises(CheckpointError, match="applies to a run directory"):
        resolve_checkpoint(f"{trained_run['best_checkpoint']}:last")


# --- loading safely ----------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint's code ran."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_pickled_objects_is_refused_without_running_them(tmp_path, trained_run):
    ckpt = torch.load(trained_run["best_checkpoint"], map_location="cpu", weights_only=True)
    payload = _Payload()
    payload.marker = str(tmp_path / "code_ran")
    ckpt["extra"] = payload
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load"):
        load_classifier(evil)
    assert not (tmp_path / "code_ran").exists()


def test_foreign_or_broken_files_are_named(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt: not a transferlab checkpoint"):
        load_classifier(foreign)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a zip archive at all")
    with pytest.raises(CheckpointError, match="broken.ckpt: unreadable checkpoint"):
        load_classifier(broken)


# --- predicting ----------------------------------------------------------------------------------------------
def test_checkpoint_alone_predicts_like_the_model_with_its_eval_transform(tmp_path, trained_run):
    lone = tmp_path / "elsewhere" / "model.ckpt"  # no run dir, no config, no summary next to it
    lone.parent.mkdir()
    shutil.copy(trained_run["best_checkpoint"], lone)
    clf = load_classifier(lone, device="cpu")
    assert clf.class_names == CLASSES
    assert clf.input_spec.image_size == 32
    files = sorted(Path(trained_run["data"], "val").rglob("*.png"))
    preds = clf.predict(files, top_k=2, batch_size=4)
    expected = _manual_probs(clf.model, files)
    assert [p.source for p in preds] == [str(f) for f in files]
    assert [p.index for p in preds] == expected.argmax(1).tolist()
    for p, row in zip(preds, expected, strict=True):
        assert p.prob == pytest.approx(float(row.max()), abs=1e-5)
        assert len(p.top_k) == 2 and p.top_k[0] == (p.label, p.prob) and p.top_k[0][1] >= p.top_k[1][1]
    # PIL images go through the same transform
    from_pil = clf.predict([Image.open(f) for f in files[:3]])
    assert [p.label for p in from_pil] == [p.label for p in preds[:3]]
    assert from_pil[0].prob == pytest.approx(preds[0].prob, abs=1e-6)
    assert load_classifier(trained_run["run_dir"]).predict(files[0])[0].label == preds[0].label  # one path


def test_bad_files_are_reported_and_skipped_never_crashing_the_batch(tmp_path, trained_run):
    good = sorted(Path(trained_run["data"], "val", "ant").glob("*.png"))[:3]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(os.urandom(300))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:60])
    missing = tmp_path / "missing.png"
    inputs = [good[0], corrupt, good[1], truncated, missing, good[2]]
    preds = load_classifier(trained_run["run_dir"]).predict(inputs, batch_size=2)
    assert [p.source for p in preds] == [str(g) for g in good]
    assert [s.source for s in preds.skipped] == [str(corrupt), str(truncated), str(missing)]
    for s in preds.skipped:
        assert s.source in s.error
    with pytest.raises(TypeError, match="inputs\\[0\\]"):
        load_classifier(trained_run["run_dir"]).predict([123])


def test_expand_inputs_files_folders_globs(tmp_path):
    folder = make_folder(tmp_path / "d", {"val": {"ant": 2, "bee": 2}})
    (folder / "val" / "notes.txt").write_text("not an image")
    (folder / "val" / ".ipynb_checkpoints").mkdir()
    (folder / "val" / ".ipynb_checkpoints" / "x.png").write_bytes(b"")
    all_val = expand_inputs(folder / "val")
    assert [Path(p).relative_to(folder / "val").as_posix() for p in all_val] == [
        "ant/000.png", "ant/001.png", "bee/000.png", "bee/001.png"]
    assert expand_inputs(str(folder / "val" / "*" / "001.png")) == [all_val[1], all_val[3]]
    assert expand_inputs([all_val[0], folder / "val" / "ant"]) == all_val[:2]  # de-duplicated
    assert expand_inputs(folder / "val" / "notes.txt") == [str(folder / "val" / "notes.txt")]  # explicit: tried
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_inputs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="matched no image files"):
        expand_inputs(str(tmp_path / "*.jpeg"))
    assert folder_labels(all_val, ["ant", "bee"]) == ["ant", "ant", "bee", "bee"]
    assert folder_labels(all_val, ["ant", "wasp"]) is None


def _predict_cfg(**values):
    base = {"top_k": 3, "batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False}
    return OmegaConf.create({**base, **values})


def test_predict_json_lists_predictions_and_skipped(tmp_path, trained_run, capsys):
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG garbage")
    good = sorted(Path(trained_run["data"], "val", "bee").glob("*.png"))
    for f in good:
        shutil.copy(f, tmp_path / "in" / f.name)
    out = tmp_path / "p.json"
    summary = predict_run(_predict_cfg(ckpt_path=trained_run["run_dir"], inputs=str(tmp_path / "in"), output=str(out),
                                       top_k=5))
    doc = json.loads(out.read_text())
    assert doc["classes"] == CLASSES and doc["checkpoint"] == trained_run["best_checkpoint"]
    assert len(doc["predictions"]) == len(good) == summary["predicted"]
    assert [s["file"] for s in doc["skipped"]] == [str(bad)]
    first = doc["predictions"][0]
    assert len(first["top_k"]) == 3  # top_k=5 is clipped to the 3 classes
    assert sum(t["prob"] for t in first["top_k"]) == pytest.approx(1.0, abs=1e-4)
    assert f"  skipped: Cannot read image {bad}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="output='p.txt'"):
        predict_run(_predict_cfg(ckpt_path=trained_run["run_dir"], inputs=str(tmp_path / "in"), output="p.txt"))


def test_predict_cli_writes_csv_and_reports_folder_accuracy(tmp_path, trained_run, monkeypatch, capsys):
    val = Path(trained_run["data"], "val")
    out = tmp_path / "preds.csv"
    code, err, stdout = run_script("predict.py", f"ckpt_path={trained_run['run_dir']}:last", f"inputs={val}",
                                   "top_k=2", f"output={out}", f"paths.root_dir={tmp_path}", "progress=false",
                                   "device=cpu", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err[-3000:]
    rows = list(csv.DictReader(out.open()))
    files = expand_inputs(val)
    assert [r["file"] for r in rows] == files
    assert {r["label"] for r in rows} <= set(CLASSES)
    assert all(len(json.loads(r["top_k"])) == 2 for r in rows)
    assert all(json.loads(r["top_k"])[0] == [r["label"], float(r["prob"])] for r in rows)
    correct = sum(Path(r["file"]).parent.name == r["label"] for r in rows)
    assert f"accuracy {correct / len(rows):.4f} ({correct}/{len(rows)})" in stdout
    assert f"Wrote {out}" in stdout
    assert list((tmp_path / "outputs" / "predict").rglob("predict.log"))  # Hydra's run dir for this job


@pytest.mark.slow  # a fresh interpreter
def test_import_transferlab_is_light_and_exports_load_classifier():
    code = ("import sys, transferlab; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
            "from transferlab import load_classifier; assert callable(load_classifier)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
