"""The export task: `python export.py ckpt_path=... format=onnx|torchscript|safetensors`.

ONNX and TorchScript graphs take RGB images at the model's size (uint8 0-255 by default, or float 0-1) and
normalise inside the graph, so a runtime needs only resize + centre-crop, both described in `labels.json`.
Each export is checked against the PyTorch model before the command reports success.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.transforms import v2 as T

from transferlab.data.images import load_rgb
from transferlab.data.input_spec import InputSpec
from transferlab.data.transforms import eval_transform
from transferlab.inference import load_classifier
from transferlab.models.checkpoint import load_model, safetensors_metadata
from transferlab.models.classifier import TransferClassifier

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


class ExportMismatchError(RuntimeError):
    """The exported model does not reproduce the PyTorch model's outputs."""


class NormalizedClassifier(nn.Module):
    """RGB NCHW at the model's size (uint8 0-255, or float 0-1) -> logits, normalisation inside the graph."""

    def __init__(self, model: TransferClassifier, input_dtype: str = "uint8") -> None:
        super().__init__()
        if input_dtype not in INPUT_DTYPES:
            raise ValueError(f"input_dtype={input_dtype!r}: expected one of {sorted(INPUT_DTYPES)}.")
        spec = model.input_spec
        self.backbone, self.head = model.backbone, model.head
        self.scale = 255.0 if input_dtype == "uint8" else 1.0
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32) / self.scale
        return self.head(self.backbone((x - self.mean) / self.std))


def pixel_transform(spec: InputSpec) -> T.Compose:
    """The checkpoint's validation transform up to the crop: PIL -> uint8 CHW, what an exported graph takes."""
    steps = list(eval_transform(spec).transforms)
    if not (isinstance(steps[-2], T.ToDtype) and isinstance(steps[-1], T.Normalize)):
        raise RuntimeError("eval_transform no longer ends with ToDtype + Normalize; update pixel_transform.")
    return T.Compose(steps[:-2])


def labels_document(model: TransferClassifier, fmt: str, input_dtype: str | None) -> dict[str, Any]:
    """What a runtime needs besides the graph: class names and the exact preprocessing."""
    spec = model.input_spec
    doc: dict[str, Any] = {"class_names": list(model.class_names), "format": fmt, "input_spec": spec.to_dict()}
    if input_dtype is not None:
        doc["input"] = {
            "name": "image", "layout": "NCHW", "channels": "RGB", "dtype": input_dtype,
            "range": "0-255" if input_dtype == "uint8" else "0-1", "shape": ["batch", 3, spec.image_size,
                                                                           spec.image_size],
            "preprocess": (f"resize the short side to {spec.resize_size} ({spec.interpolation}, antialiased), "
                           f"centre-crop {spec.image_size}x{spec.image_size}; mean/std normalisation is in the graph"),
        }
        doc["output"] = {"name": "logits", "shape": ["batch", len(model.class_names)], "softmax": "not applied"}
    return doc


def _write_labels(doc: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "labels.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter logs every optimisation pass at INFO; keep warnings and errors only."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's notes on internal ops; the result is checked anyway
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _example(spec: InputSpec, input_dtype: str, batch: int = 2) -> torch.Tensor:
    x = torch.randint(0, 256, (batch, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    return x if input_dtype == "uint8" else x.float() / 255.0


def export_onnx(model: TransferClassifier, out_dir: Path, input_dtype: str = "uint8",
                opset: int | None = None) -> Path:
    """A single self-contained .onnx file with a dynamic batch axis; class names also in its metadata."""
    import onnx

    path = out_dir / FORMATS["onnx"]
    wrapper = NormalizedClassifier(model, input_dtype).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter():
        torch.onnx.export(wrapper, (_example(model.input_spec, input_dtype),), str(path), dynamo=True,
                          input_names=["image"], output_names=["logits"], dynamic_shapes=({0: batch},),
                          opset_version=opset, external_data=False, verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", json.dumps(labels_document(model, "onnx", input_dtype))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(model: TransferClassifier, out_dir: Path, input_dtype: str = "uint8") -> Path:
    """A traced TorchScript module (labels.json also embedded as an extra file)."""
    path = out_dir / FORMATS["torchscript"]
    wrapper = NormalizedClassifier(model, input_dtype).eval()
    extra = {"labels.json": json.dumps(labels_document(model, "torchscript", input_dtype))}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": still works; ONNX is preferred
        traced = torch.jit.trace(wrapper, _example(model.input_spec, input_dtype))
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def export_safetensors(model: TransferClassifier, out_dir: Path) -> Path:
    """The weights, plus the model description as metadata, so `load_classifier(file)` rebuilds the model."""
    from safetensors.torch import save_model

    path = out_dir / FORMATS["safetensors"]
    save_model(model, str(path), metadata=safetensors_metadata(model))
    return path


# --- verification -----------------------------------------------------------------------------------------
def reference_batch(spec: InputSpec, images: Sequence[str] = (), count: int = 8,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 pixels for the exported graph, normalised floats for PyTorch, sources).

    From image files when given (through the checkpoint's own eval transform), else seeded random pixels."""
    if images:
        pixels_tf, full_tf = pixel_transform(spec), eval_transform(spec)
        loaded = [load_rgb(p) for p in images]
        return (torch.stack([pixels_tf(im) for im in loaded]).as_subclass(torch.Tensor),
                torch.stack([full_tf(im) for im in loaded]).as_subclass(torch.Tensor), list(images))
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, 3, spec.image_size, spec.image_size), dtype=torch.uint8, generator=gen)
    normalised = T.Normalize(spec.mean, spec.std)(pixels.float() / 255.0)
    return pixels, normalised, [f"<random {i}>" for i in range(count)]


def run_exported(path: Path, pixels: torch.Tensor, input_dtype: str) -> torch.Tensor:
    """Logits from an exported file, run the way a deployment would (onnxruntime / torch.jit / rebuild)."""
    x = pixels if input_dtype == "uint8" else pixels.float() / 255.0
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    if path.suffix == ".pt":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            return torch.jit.load(str(path), map_location="cpu")(x)
    with torch.no_grad():  # safetensors: rebuild from the file alone, then the usual normalised input
        model = load_model(path)
        return NormalizedClassifier(model, input_dtype)(x)


def compare(path: Path, model: TransferClassifier, pixels: torch.Tensor, normalised: torch.Tensor,
            input_dtype: str) -> dict[str, Any]:
    """Max |logit difference| and top-1 agreement between the export and the PyTorch model."""
    with torch.no_grad():
        expected = model.eval().cpu()(normalised)
    got = run_exported(path, pixels, input_dtype)
    return {"max_abs_diff": float((got - expected).abs().max()), "same_class": int((got.argmax(1) ==
            expected.argmax(1)).sum()), "images": len(pixels)}


@dataclass
class Exported:
    path: Path
    labels: Path
    model: TransferClassifier
    checkpoint: Path


def export(ckpt_path: str | os.PathLike, fmt: str = "onnx", output_dir: str | os.PathLike = "export",
           input_dtype: str = "uint8", opset: int | None = None) -> Exported:
    """Python API of `export.py`: write the model file and labels.json into `output_dir`."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}.")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype={input_dtype!r}: expected one of {', '.join(INPUT_DTYPES)}.")
    clf = load_classifier(ckpt_path, device="cpu")
    model = clf.model
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        path = export_onnx(model, out_dir, input_dtype, opset)
    elif fmt == "torchscript":
        path = export_torchscript(model, out_dir, input_dtype)
    else:
        path = export_safetensors(model, out_dir)
    labels = _write_labels(labels_document(model, fmt, None if fmt == "safetensors" else input_dtype), out_dir)
    return Exported(path, labels, model, clf.checkpoint)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task: export, then check the export against PyTorch and fail loudly if they disagree."""
    from transferlab.tasks.predict import expand_inputs

    start = time.perf_counter()
    out = export(cfg.ckpt_path, cfg.format, cfg.output_dir, cfg.input_dtype, cfg.get("opset"))
    model, path, spec = out.model, out.path, out.model.input_spec
    print(f"Checkpoint: {out.checkpoint}")
    print(f"Exported {cfg.format}: {path} ({path.stat().st_size / 2**20:.1f} MB) "
          f"in {time.perf_counter() - start:.1f}s")
    if cfg.format != "safetensors":
        print(f"  input 'image': {cfg.input_dtype} RGB [batch, 3, {spec.image_size}, {spec.image_size}] "
              f"({'0-255' if cfg.input_dtype == 'uint8' else '0-1'}; resize {spec.resize_size} {spec.interpolation} "
              f"+ centre-crop before), output 'logits': [batch, {len(model.class_names)}]")
    print(f"Labels: {out.labels} ({', '.join(model.class_names)})")
    result: dict[str, Any] = {"path": str(path), "labels": str(out.labels)}
    if not cfg.verify:
        return result
    inputs = OmegaConf.to_container(cfg.verify_inputs) if OmegaConf.is_list(cfg.verify_inputs) else cfg.verify_inputs
    files = expand_inputs(inputs) if inputs else []
    files = files[:: max(1, len(files) // cfg.verify_limit)][: cfg.verify_limit]  # spread over every class folder
    pixels, normalised, sources = reference_batch(spec, files, count=cfg.verify_limit)
    check = compare(path, model, pixels, normalised, cfg.input_dtype)
    what = f"{len(sources)} images" if files else f"{len(sources)} random images"
    runtime = {"onnx": "onnxruntime", "torchscript": "torch.jit", "safetensors": "rebuilt model"}[cfg.format]
    print(f"Check ({runtime} vs PyTorch on {what}): max |logit diff| {check['max_abs_diff']:.2e}, "
          f"same class {check['same_class']}/{check['images']}")
    result.update(check)
    if check["max_abs_diff"] > cfg.tolerance or check["same_class"] != check["images"]:
        raise ExportMismatchError(
            f"{path} disagrees with the PyTorch model (max |logit diff| {check['max_abs_diff']:.2e}, tolerance "
            f"{cfg.tolerance}; same class {check['same_class']}/{check['images']}). Do not ship it.")
    return result
