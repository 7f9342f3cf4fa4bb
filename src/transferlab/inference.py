"""Use a trained model: load it from its checkpoint and classify images in batches.

Everything a prediction needs (class names, the validation transform) comes from the checkpoint itself, so
this works without the training config. Files that cannot be decoded are reported and skipped, never fatal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from transferlab.data.images import load_rgb, to_rgb
from transferlab.data.input_spec import InputSpec
from transferlab.data.transforms import eval_transform
from transferlab.models.checkpoint import load_model, resolve_checkpoint
from transferlab.models.classifier import TransferClassifier

log = logging.getLogger(__name__)

def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --- predictions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image: the top class, its probability and the top-k list."""

    source: str
    label: str
    prob: float
    index: int
    top_k: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.source, "label": self.label, "prob": self.prob,
                "top_k": [{"label": lbl, "prob": p} for lbl, p in self.top_k]}


@dataclass(frozen=True)
class Skipped:
    """An input that could not be classified, and why."""

    source: str
    error: str


class Predictions(list):
    """A list of `Prediction` (in input order, bad inputs left out) with the bad inputs in `.skipped`."""

    def __init__(self, items: Iterable[Prediction] = (), skipped: Sequence[Skipped] = ()) -> None:
        super().__init__(items)
        self.skipped: list[Skipped] = list(skipped)


@dataclass
class Probabilities:
    """Softmax outputs for the inputs that could be read: `probs[j]` belongs to `inputs[kept[j]]`."""

    probs: torch.Tensor
    kept: list[int]
    skipped: list[Skipped] = field(default_factory=list)


def _source_name(item: Any, index: int) -> str:
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    return getattr(item, "filename", "") or f"<image {index}>"


class _Inputs(Dataset):
    """Paths or PIL images -> (index, tensor or None, error or None); a bad input never raises.

    An image whose shorter side is under `min_side` is classified, with a warning: upscaled that far, its
    prediction says little (a 1x1 image becomes a flat colour)."""

    def __init__(self, items: Sequence[Any], transform, min_side: int = 0) -> None:
        self.items = items
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            image = load_rgb(os.fspath(item)) if isinstance(item, str | os.PathLike) else to_rgb(item)
            if min(image.size) < self.min_side:
                log.warning("%s is %dx%d px, far below the model's %d px input: it is upscaled, so its prediction "
                            "is unreliable.", _source_name(item, index), *image.size, self.min_side * 4)
            return index, self.transform(image), None
        except Exception as e:  # decoding, truncated files, degenerate sizes: report and go on
            message = str(e) if isinstance(e, OSError) and _source_name(item, index) in str(e) else (
                f"Cannot read image {_source_name(item, index)}: {type(e).__name__}: {e}")
            return index, None, message


def _collate(batch):
    good = [(i, t) for i, t, err in batch if err is None]
    bad = [(i, err) for i, t, err in batch if err is not None]
    images = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], images, bad


TTA = ("none", "flip")  # test-time augmentation (eval.py and predict.py `tta=`)


class Classifier:
    """A trained model ready for inference: `predict(paths | PIL images)` with the checkpoint's transform."""

    def __init__(self, model: TransferClassifier, device: str | torch.device = "auto",
                 checkpoint: str | os.PathLike | None = None, tta: str = "none") -> None:
        if tta not in TTA:
            raise ValueError(f"tta={tta!r}; use one of {list(TTA)} (flip: average each image with its mirror).")
        self.device = pick_device(device)
        self.model = model.eval().to(self.device)
        self.model.tta = tta
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.transform = eval_transform(model.input_spec)

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def input_spec(self) -> InputSpec:
        return self.model.input_spec

    def __repr__(self) -> str:
        return (f"Classifier({self.checkpoint or 'in-memory model'}, classes={self.class_names}, "
                f"input={self.input_spec.image_size}px, device={self.device})")

    def probabilities(self, inputs: Sequence[Any], batch_size: int = 32, num_workers: int = 0,
                      progress: bool = False, desc: str = "predict") -> Probabilities:
        """Batched softmax over `inputs` (paths or PIL images); unreadable inputs are reported, not raised."""
        items = list(inputs)
        for i, item in enumerate(items):
            if not isinstance(item, str | os.PathLike | Image.Image):
                raise TypeError(f"inputs[{i}] is a {type(item).__name__}; pass file paths or PIL images.")
        dataset = _Inputs(items, self.transform, min_side=self.input_spec.image_size // 4)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_collate, shuffle=False)
        chunks, kept, skipped = [], [], []
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        with torch.inference_mode(), logging_redirect_tqdm(), tqdm(
            total=len(items), unit="img", disable=not progress, desc=desc
        ) as bar:
            for indices, images, bad in loader:
                for i, err in bad:
                    log.warning("%s (skipped)", err)
                    skipped.append(Skipped(_source_name(items[i], i), err))
                if images is not None:
                    logits = self.model.evaluate(images.to(self.device, non_blocking=True))
                    chunks.append(logits.float().softmax(dim=-1).cpu())
                    kept.extend(indices)
                bar.update(len(indices) + len(bad))
        probs = torch.cat(chunks) if chunks else torch.empty(0, len(self.class_names))
        return Probabilities(probs, kept, skipped)

    def predict(self, inputs: Any, top_k: int = 3, batch_size: int = 32, num_workers: int = 0,
                progress: bool = False) -> Predictions:
        """Classify one or many images (paths or PIL images). Returns `Predictions` in input order, with
        unreadable inputs left out and listed in `.skipped`."""
        if isinstance(inputs, str | os.PathLike | Image.Image):
            inputs = [inputs]
        items = list(inputs)
        out = self.probabilities(items, batch_size=batch_size, num_workers=num_workers, progress=progress)
        k = max(1, min(int(top_k), len(self.class_names)))
        names = self.class_names
        preds = []
        if len(out.kept):
            top_p, top_i = out.probs.topk(k, dim=-1)
            for row, i in enumerate(out.kept):
                pairs = [(names[c], float(p)) for p, c in zip(top_p[row].tolist(), top_i[row].tolist(), strict=True)]
                preds.append(Prediction(_source_name(items[i], i), pairs[0][0], pairs[0][1], int(top_i[row, 0]),
                                        pairs))
        return Predictions(preds, out.skipped)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "auto", tta: str = "none") -> Classifier:
    """Load a trained classifier from a checkpoint file, a run directory (`<run>`, `<run>:last`) or an
    exported `.safetensors` file. No training config and no download needed. `tta="flip"`: each prediction is
    the mean probability of the image and its horizontal mirror (twice the compute)."""
    resolved = resolve_checkpoint(path)
    return Classifier(load_model(resolved), device=device, checkpoint=resolved, tta=tta)
