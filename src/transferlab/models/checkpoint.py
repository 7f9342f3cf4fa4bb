"""Checkpoints, the one place that finds, reads, validates and rebuilds them.

A checkpoint (`.ckpt`) or an exported `.safetensors` file may come from someone else, so it is data: it is
read with `torch.load(weights_only=True)` (no unpickling) or safetensors, and only the model description is
read from it (backbone, head, strategy, class names, input spec). Each part is checked against its schema
and may name registry keys only (`BACKBONE_SOURCES`, `HEADS`, `Strategy` fields); a `_target_` anywhere,
an unknown key, a wrong type or a bad value is refused with an error naming the file and the field, before
anything is built. Optimizer and scheduler settings in a file are never read.

Files written before descriptions named registry keys (format 1: Hydra `_target_`s of the project's own
factories) are migrated: those known targets map to their keys, any other target is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from transferlab.errors import CheckpointError
from transferlab.models.backbones import BACKBONE_SOURCES, WEIGHTS_KEY_MAPS
from transferlab.models.classifier import DESCRIPTION_KEYS, DESCRIPTION_VERSION, TransferClassifier
from transferlab.models.heads import head_params
from transferlab.models.strategy import Strategy, strategy_data, strategy_from_config

SAFETENSORS_METADATA_KEY = "transferlab"  # JSON with the model description
# the best epoch's name, or lpft's fitted head, saved before fine-tuning (callbacks.head_baseline: epoch -1)
_BEST_NAME = re.compile(r"(?:epoch(?P<epoch>\d+)|head_fit)-acc(?P<acc>[0-9.]+?)(?:-v\d+)?\.ckpt$")

# Format 1 named the project's own factories by Python path; these, and only these, map to registry keys.
_LEGACY_BACKBONE_TARGETS = {"transferlab.models.create_backbone", "transferlab.models.backbones.create_backbone"}
_LEGACY_HEAD_TARGETS = {"transferlab.models.heads.linear_head": "linear", "transferlab.models.heads.mlp_head": "mlp"}
_LEGACY_STRATEGY_KEYS = {"cache_features", "feature_views"}  # moved to the data pipeline (dataset.*)
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


# --- finding -------------------------------------------------------------------------------------------
def _best_in(ckpt_dir: Path) -> Path | None:
    """The best checkpoint by the accuracy in its name (`epochNNN-accX.XXXX.ckpt`, `head_fit-accX.XXXX.ckpt`),
    latest epoch on ties."""
    scored = []
    for path in ckpt_dir.glob("*-acc*.ckpt"):
        m = _BEST_NAME.search(path.name)
        if m:
            scored.append((float(m["acc"].rstrip(".")), int(m["epoch"] or -1), path))
    return max(scored)[2] if scored else None


def _from_summary(run_dir: Path, which: str) -> Path | None:
    """The run's own record of its best/last checkpoint, looked up in this directory first (a moved or copied
    run dir uses its own files, not the original's), then at the recorded path."""
    summary = run_dir / "summary.json"
    try:
        recorded = json.loads(summary.read_text()).get(f"{which}_checkpoint") if summary.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(recorded, str) or not recorded:
        return None
    for candidate in (run_dir / "checkpoints" / Path(recorded).name, Path(recorded)):
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(spec: str | os.PathLike, default: str = "best") -> Path:
    """A `.ckpt`/`.safetensors` file, or a run directory: `<run>` (its `default` checkpoint), `<run>:best` or
    `<run>:last`. Evaluating and predicting default to the best checkpoint, resuming to the last."""
    text = os.path.expanduser(os.fspath(spec))
    which = default
    if not os.path.exists(text):
        base, sep, suffix = text.rpartition(":")
        if sep and suffix in ("best", "last") and base:
            text, which = base, suffix
            if os.path.isfile(text):
                raise CheckpointError(f"ckpt_path={spec!r}: ':{which}' applies to a run directory, not a file.")
    path = Path(text)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"ckpt_path={spec!r} does not exist. Pass a .ckpt file, or a run directory such as "
            "outputs/train/runs/<date>/<time> (its best checkpoint; add ':last' for the last one)."
        )
    ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = _from_summary(path, which)
    if found is None:
        found = _best_in(ckpt_dir) if which == "best" else (ckpt_dir / "last.ckpt")
    if found is None or not found.is_file():
        present = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
        other = "last" if which == "best" else "best"
        raise CheckpointError(
            f"ckpt_path={spec!r}: no {which} checkpoint in {ckpt_dir} (found: {present or 'no .ckpt files'}). "
            f"Pass one of those files, or '{path}:{other}'."
        )
    return found


def _is_intact(path: Path) -> bool:
    """Every member of the checkpoint's zip archive is present and passes its CRC (a truncated or scribbled
    file does not), without building a tensor."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def readable_checkpoint(path: Path) -> Path:
    """`path` if it is intact; otherwise an error naming it and offering the newest intact checkpoint beside it."""
    if _is_intact(path):
        return path
    others = sorted((p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    newest = next((p for p in others if _is_intact(p)), None)
    offer = (f"The newest readable checkpoint beside it is {newest}: resume with ckpt_path={newest}"
             if newest else f"No other readable checkpoint is in {path.parent}; start a new run")
    raise CheckpointError(f"{path} is unreadable (truncated or corrupt). {offer}.")


# --- validating ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDescription:
    """What rebuilds a model, validated: plain data naming registry keys only."""

    backbone: dict[str, Any]
    head: dict[str, Any]
    strategy: dict[str, Any]
    class_names: list[str]
    input_spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": DESCRIPTION_VERSION, **{k: getattr(self, k) for k in DESCRIPTION_KEYS}}


class _Invalid(Exception):
    """A field of the description is wrong; carries the field's dotted name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def _refuse_targets(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("_target_", "_partial_", "_args_"):
                raise _Invalid(f"{where}.{key}", f"{item!r} names code to run; a checkpoint may only name "
                                                 "registry keys, so it is refused")
            _refuse_targets(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_targets(item, f"{where}[{i}]")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(where, f"expected a mapping, got {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise _Invalid(where, "keys must be strings")
    return dict(value)


def _check(value: Any, types: tuple[type, ...], where: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    # bool is an int in Python; a number field must not accept True, a bool field must not accept 1.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        raise _Invalid(where, f"expected {names}, got {value!r}")
    return value


def _only_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise _Invalid(f"{where}.{unknown[0]}", f"unknown key (allowed: {sorted(allowed)})")


def _backbone(raw: Any) -> dict[str, Any]:
    d = _mapping(raw, "backbone")
    if d.get("_target_") in _LEGACY_BACKBONE_TARGETS:
        d.pop("_target_")
    _refuse_targets(d, "backbone")
    _only_keys(d, {"source", "name", "weights", "weights_key_map"}, "backbone")
    source = _check(d.get("source"), (str,), "backbone.source")
    if source not in BACKBONE_SOURCES:
        raise _Invalid("backbone.source", f"{source!r} is not a backbone source (known: {sorted(BACKBONE_SOURCES)})")
    name = _check(d.get("name"), (str,), "backbone.name")
    _check(d.get("weights"), (str,), "backbone.weights", optional=True)
    key_map = _check(d.get("weights_key_map", "name"), (str,), "backbone.weights_key_map")
    if key_map not in WEIGHTS_KEY_MAPS:
        raise _Invalid("backbone.weights_key_map", f"{key_map!r} (known: {list(WEIGHTS_KEY_MAPS)})")
    # The file carries the trained weights: the backbone is built empty, nothing is fetched or read.
    return {"source": source, "name": name, "weights": None, "weights_key_map": key_map}


def _head(raw: Any) -> dict[str, Any]:
    d = _mapping(raw, "head")
    target = d.get("_target_")
    if target in _LEGACY_HEAD_TARGETS and "kind" not in d:
        d.pop("_target_")
        d.pop("_partial_", None)
        d["kind"] = _LEGACY_HEAD_TARGETS[target]
    _refuse_targets(d, "head")
    kind = _check(d.get("kind"), (str,), "head.kind")
    try:
        allowed = head_params(kind)
    except ValueError as e:
        raise _Invalid("head.kind", str(e)) from None
    _only_keys(d, {"kind", *allowed}, "head")
    for key in allowed:
        if key in d:
            _check(d[key], (int, float), f"head.{key}", optional=True)
    return d


def _strategy(raw: Any) -> dict[str, Any]:
    d = _mapping(raw, "strategy")
    _refuse_targets(d, "strategy")
    for key in _LEGACY_STRATEGY_KEYS:
        d.pop(key, None)
    _only_keys(d, {f.name for f in fields(Strategy)}, "strategy")
    # The schema's own checks (StrategyConfig.__post_init__: types by the dataclass's annotations, ranges), not
    # OmegaConf's structured merge, which would also resolve `${...}` interpolations found in an untrusted file.
    try:
        return strategy_data(strategy_from_config(d))
    except ValueError as e:
        message = str(e)
        field_name = message.split("=", 1)[0] if "=" in message.split(":", 1)[0] else "strategy"
        raise _Invalid(field_name, message) from None


def _class_names(raw: Any) -> list[str]:
    if not isinstance(raw, list | tuple) or not all(isinstance(c, str) for c in raw):
        raise _Invalid("class_names", f"expected a list of strings, got {raw!r:.200}")
    if len(raw) < 2 or len(set(raw)) != len(raw):
        raise _Invalid("class_names", f"expected at least 2 distinct names, got {list(raw)!r:.200}")
    return list(raw)


def _input_spec(raw: Any) -> dict[str, Any]:
    d = _mapping(raw, "input_spec")
    _refuse_targets(d, "input_spec")
    _only_keys(d, {"image_size", "crop_pct", "mean", "std", "interpolation"}, "input_spec")
    size = _check(d.get("image_size"), (int,), "input_spec.image_size")
    crop = _check(d.get("crop_pct"), (int, float), "input_spec.crop_pct")
    if size < 1 or not 0 < crop <= 1:
        raise _Invalid("input_spec", f"image_size={size} must be >= 1 and crop_pct={crop} in (0, 1]")
    for key in ("mean", "std"):
        value = d.get(key)
        if not isinstance(value, list | tuple) or len(value) != 3 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise _Invalid(f"input_spec.{key}", f"expected 3 numbers, got {value!r:.100}")
    if d.get("interpolation") not in _INTERPOLATIONS:
        raise _Invalid("input_spec.interpolation", f"{d.get('interpolation')!r} (known: {list(_INTERPOLATIONS)})")
    return {**d, "mean": list(d["mean"]), "std": list(d["std"])}


def read_description(data: Mapping[str, Any], where: str | os.PathLike) -> ModelDescription:
    """Validate a model description (current or format 1); raise CheckpointError naming `where` and the field."""
    try:
        return ModelDescription(
            backbone=_backbone(data.get("backbone")),
            head=_head(data.get("head")),
            strategy=_strategy(data.get("strategy")),
            class_names=_class_names(data.get("class_names")),
            input_spec=_input_spec(data.get("input_spec")),
        )
    except _Invalid as e:
        raise CheckpointError(f"{where}: refused: {e}. Only files written by transferlab can be loaded.") from None


# --- loading -------------------------------------------------------------------------------------------
def _torch_load(path: Path, mmap: bool = False) -> dict[str, Any]:
    if not zipfile.is_zipfile(path):  # every torch.save since PyTorch 1.6 is a zip archive
        raise CheckpointError(f"{path}: unreadable checkpoint (not a PyTorch zip archive: truncated, or not a "
                              ".ckpt file). Pass a checkpoint written by `python train.py`.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects that only full unpickling could restore, and "
            "unpickling runs arbitrary code. Only checkpoints written by transferlab (plain tensors and data) load."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {e}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a transferlab checkpoint (no state_dict); train one with "
                              "`python train.py`.")
    return ckpt


def _description_of(ckpt: dict[str, Any], path: Path) -> ModelDescription:
    meta = ckpt.get("transferlab")
    if isinstance(meta, dict) and meta.get("format_version") == DESCRIPTION_VERSION:
        return read_description(meta, path)
    hparams = ckpt.get("hyper_parameters")  # format 1: the constructor arguments as Lightning saved them
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: not a transferlab checkpoint (no model description); train one with "
                              "`python train.py`.")
    return read_description(hparams, path)


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A checkpoint as a resume reads it, before anything trains: its validated description, the data it was
    trained on (`data_fingerprint`; None when written before checkpoints recorded it) and its weights."""

    path: Path
    description: ModelDescription
    data_fingerprint: dict[str, Any] | None
    state_dict: dict[str, torch.Tensor]


def _data_fingerprint(raw: Any) -> dict[str, Any] | None:
    """The checkpoint's `dataset` entry if it is what `data.folders.fingerprint` writes, else None."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("sha256"), str):
        return None
    counts = [raw.get(k) for k in ("train", "val")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        return None
    return {"sha256": raw["sha256"], "train": counts[0], "val": counts[1]}


def read_training_checkpoint(path: str | os.PathLike) -> TrainingCheckpoint:
    """A training checkpoint read for a resume (`weights_only`, the tensors memory-mapped: read when used)."""
    path = Path(path)
    ckpt = _torch_load(path, mmap=True)
    return TrainingCheckpoint(path, _description_of(ckpt, path), _data_fingerprint(ckpt.get("dataset")),
                              ckpt["state_dict"])


def build_model(description: ModelDescription) -> TransferClassifier:
    """An untrained model of the described architecture (the caller loads the weights)."""
    return TransferClassifier(backbone=description.backbone, head=description.head, strategy=description.strategy,
                              class_names=description.class_names, input_spec=description.input_spec)


def _load_state(model: TransferClassifier, load: Any, path: Path) -> TransferClassifier:
    try:
        load()
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: its weights do not fit the model it describes: {str(e).splitlines()[0]}"
                              ) from None
    return model.eval()


def _load_ckpt(path: Path) -> TransferClassifier:
    ckpt = _torch_load(path)
    model = build_model(_description_of(ckpt, path))
    return _load_state(model, lambda: model.load_state_dict(ckpt["state_dict"]), path)


def safetensors_metadata(model: TransferClassifier) -> dict[str, str]:
    """The metadata block an exported `.safetensors` file carries: the model description as JSON."""
    return {SAFETENSORS_METADATA_KEY: json.dumps(model.description())}


def _load_safetensors(path: Path) -> TransferClassifier:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model as load_weights

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(SAFETENSORS_METADATA_KEY)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from None
    if raw is None:
        raise CheckpointError(
            f"{path}: a safetensors file without transferlab metadata; only files written by "
            "`python export.py format=safetensors` can be rebuilt into a model."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its transferlab metadata is not JSON ({e}).") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its transferlab metadata is not a JSON object.")
    if meta.get("format_version") == 1:
        meta = meta.get("hyper_parameters")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: format 1 metadata without hyper_parameters.")
    model = build_model(read_description(meta, path))
    return _load_state(model, lambda: load_weights(model, str(path), strict=True, device="cpu"), path)


def load_model(path: str | os.PathLike) -> TransferClassifier:
    """Rebuild a trained model, in eval mode, from a `.ckpt` or an exported `.safetensors` file.

    The file is validated before anything is built; it cannot make the loader run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    return _load_safetensors(path) if path.suffix == ".safetensors" else _load_ckpt(path)
