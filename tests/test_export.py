"""Exports reproduce the PyTorch model: ONNX in onnxruntime and TorchScript, from raw RGB pixels (normalisation
inside the graph), on real images when available; safetensors rebuilds the model. Plus the train -> eval ->
predict -> export chain on hymenoptera (slow). The model is the session's shared `trained_run` (tests/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from tests.conftest import CLASSES, HYMENOPTERA, compose_config, requires_hymenoptera, run_script
from transferlab.data.images import load_rgb
from transferlab.data.input_spec import InputSpec
from transferlab.data.transforms import eval_transform
from transferlab.inference import load_classifier
from transferlab.models.checkpoint import CheckpointError
from transferlab.tasks.export import ExportMismatchError, export
from transferlab.tasks.export import run as export_run
from transferlab.tasks.predict import expand_inputs

TOLERANCE = 1e-4
# TorchScript still works in torch 2.x but warns on every jit.load; the export module silences its own calls.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _images(trained_run: dict) -> list[str]:
    """Real photos when the hymenoptera set is here (the tiny model still runs on them), else the synthetic."""
    synthetic = expand_inputs(Path(trained_run["data"], "val"))[::3]
    real = sorted(str(p) for p in (HYMENOPTERA / "val").glob("*/*.jpg"))[::20] if (HYMENOPTERA / "val").is_dir() \
        else []
    return synthetic + real


def _deployment_inputs(labels: dict, files: list[str]) -> torch.Tensor:
    """What a deployment does with labels.json alone: resize the short side, centre-crop, uint8 NCHW."""
    spec = InputSpec.from_dict(labels["input_spec"])
    tf = T.Compose([T.ToImage(), T.Resize(spec.resize_size, interpolation=InterpolationMode(spec.interpolation),
                                          antialias=True), T.CenterCrop(spec.image_size)])
    return torch.stack([tf(load_rgb(f)) for f in files]).as_subclass(torch.Tensor)


def _pytorch_logits(model, files: list[str]) -> torch.Tensor:
    tf = eval_transform(model.input_spec)
    with torch.no_grad():
        return model.eval()(torch.stack([tf(load_rgb(f)) for f in files]))


def test_onnx_takes_uint8_pixels_and_matches_pytorch(tmp_path, trained_run):
    out = export(trained_run["run_dir"], "onnx", tmp_path / "onnx")
    labels = json.loads(out.labels.read_text())
    assert labels["class_names"] == CLASSES and labels["input"]["dtype"] == "uint8"
    assert labels["input"]["shape"] == ["batch", 3, 32, 32]
    proto = onnx.load(str(out.path))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["labels"])["class_names"] == CLASSES
    assert not list(out.path.parent.glob("*.data"))  # one self-contained file

    files = _images(trained_run)
    pixels = _deployment_inputs(labels, files)
    session = ort.InferenceSession(str(out.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [3, 32, 32] and not isinstance(inp.shape[0], int)
    got = torch.from_numpy(session.run(["logits"], {inp.name: pixels.numpy()})[0])
    expected = _pytorch_logits(out.model, files)
    assert (got - expected).abs().max().item() < TOLERANCE
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()
    one = torch.from_numpy(session.run(["logits"], {inp.name: pixels[:1].numpy()})[0])  # dynamic batch axis
    assert (one - expected[:1]).abs().max().item() < TOLERANCE


def test_torchscript_matches_pytorch_from_pixels(tmp_path, trained_run):
    out = export(trained_run["run_dir"], "torchscript", tmp_path / "ts")
    extra = {"labels.json": ""}
    scripted = torch.jit.load(str(out.path), _extra_files=extra)
    assert json.loads(extra["labels.json"])["class_names"] == CLASSES
    files = _images(trained_run)
    with torch.no_grad():
        got = scripted(_deployment_inputs(json.loads(out.labels.read_text()), files))
    expected = _pytorch_logits(out.model, files)
    assert (got - expected).abs().max().item() < TOLERANCE
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


def test_safetensors_rebuilds_the_model_exactly(tmp_path, trained_run):
    out = export(trained_run["run_dir"], "safetensors", tmp_path / "st")
    assert json.loads(out.labels.read_text())["class_names"] == CLASSES
    rebuilt = load_classifier(out.path)
    assert rebuilt.class_names == CLASSES and rebuilt.input_spec == out.model.input_spec
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.model(x), out.model.eval()(x))
    files = _images(trained_run)
    assert [p.label for p in rebuilt.predict(files)] == [p.label for p in load_classifier(trained_run["run_dir"])
                                                        .predict(files)]
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="without transferlab metadata"):
        load_classifier(bare)


def test_export_cli_checks_float_onnx_on_images(tmp_path, trained_run, monkeypatch, capsys):
    val = Path(trained_run["data"], "val")
    code, err, out = run_script("export.py", f"ckpt_path={trained_run['run_dir']}", "format=onnx",
                                "input_dtype=float32", f"verify_inputs={val}", f"output_dir={tmp_path / 'out'}",
                                f"paths.root_dir={tmp_path}", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err[-3000:]
    m = re.search(r"Check \(onnxruntime vs PyTorch on 15 images\): max \|logit diff\| (\S+), same class 15/15", out)
    assert m and float(m.group(1)) < TOLERANCE, out
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["input"]["range"] == "0-1"


def test_an_export_that_disagrees_is_rejected(tmp_path, trained_run, monkeypatch):
    import transferlab.tasks.export as ex

    real = ex.run_exported
    monkeypatch.setattr(ex, "run_exported", lambda *a, **k: real(*a, **k) + 1e-3)
    cfg = OmegaConf.create({"ckpt_path": trained_run["run_dir"], "format": "safetensors", "input_dtype": "uint8",
                            "opset": None, "output_dir": str(tmp_path), "verify": True, "verify_inputs": None,
                            "verify_limit": 4, "tolerance": TOLERANCE})
    with pytest.raises(ExportMismatchError, match="Do not ship it"):
        export_run(cfg)
    monkeypatch.setattr(ex, "run_exported", real)
    assert export_run(cfg)["max_abs_diff"] < TOLERANCE


def test_unknown_format_is_named(tmp_path, trained_run):
    with pytest.raises(ValueError, match="format='tflite'"):
        export(trained_run["run_dir"], "tflite", tmp_path)


@pytest.mark.slow
@requires_hymenoptera
def test_hymenoptera_train_eval_predict_export_agree(tmp_path):
    """The issue's 'done when': train -> eval -> predict on val/ agrees -> ONNX in onnxruntime agrees."""
    from transferlab.tasks.evaluate import evaluate_checkpoint
    from transferlab.tasks.train import train

    cfg = compose_config(tmp_path, [
        "dataset=hymenoptera", f"dataset.root={HYMENOPTERA}", "backbone=efficientnet_lite0", "strategy=frozen",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "dataset.num_workers=0", "logger=none",
    ])
    dataset = cfg.dataset.copy()
    summary = train(cfg)
    ev = evaluate_checkpoint(summary["best_checkpoint"], dataset, output_dir=tmp_path / "eval", progress=False)
    assert ev.metrics["num_images"] == 153 and ev.metrics["accuracy"] >= 0.85, ev.metrics
    assert ev.metrics["accuracy"] == pytest.approx(summary["val/acc_best"], abs=1e-6)  # training's own val/acc

    clf = load_classifier(tmp_path / "run")
    preds = clf.predict(expand_inputs(HYMENOPTERA / "val"))
    folder_acc = sum(Path(p.source).parent.name == p.label for p in preds) / len(preds)
    assert len(preds) == 153 and folder_acc == pytest.approx(ev.metrics["accuracy"], abs=1e-6)

    files = sorted(str(p) for p in (HYMENOPTERA / "val").glob("*/*.jpg"))[::10]
    expected = _pytorch_logits(clf.model, files)
    for fmt in ("onnx", "torchscript"):
        out = export(tmp_path / "run", fmt, tmp_path / fmt)
        pixels = _deployment_inputs(json.loads(out.labels.read_text()), files)
        if fmt == "onnx":
            session = ort.InferenceSession(str(out.path), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(["logits"], {"image": pixels.numpy()})[0])
        else:
            with torch.no_grad():
                got = torch.jit.load(str(out.path))(pixels)
        assert (got - expected).abs().max().item() < TOLERANCE, fmt
        assert got.argmax(1).tolist() == expected.argmax(1).tolist(), fmt
