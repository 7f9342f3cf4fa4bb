"""What a backbone expects at its input (size, crop, mean, std, interpolation).

It lives with the data layer because transforms are built from it; models produce one from their weights
(timm's `pretrained_cfg`, torchvision's `weights.transforms()`) and checkpoints carry it, so prediction never
needs the training config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects at its input; travels with the model into checkpoints and transforms."""

    image_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        return int(round(self.image_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def override(self, **changes: Any) -> InputSpec:
        """Apply non-null overrides (e.g. from the dataset config)."""
        changes = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in changes.items() if v is not None}
        return replace(self, **changes)
