"""Every number the advice depends on, in one dataclass (the package docstring says why each has its value)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from transferlab.config import to_plain


@dataclass(frozen=True)
class Thresholds:
    """Where the cases' lines are, and how much of the training pool the probe and the k-NN use. CLI flags
    `--large-per-class 1000 ...`; in a training run `+advise.large_per_class=1000`."""

    few_per_class: int = 20  # median training images per class below this: "few"
    large_per_class: int = 500  # median training images per class at or above this: "large"
    similar: float = 0.90  # chance-normalised k-NN accuracy at or above: similar to the pretraining data
    probe_similar: float = 0.80  # ... and the chance-normalised probe accuracy at or above (a guard)
    very_different: float = 0.50  # chance-normalised k-NN accuracy below: very different
    neighbours: int = 5  # k of the k-NN (fewer when a class has fewer images in a training fold)
    max_per_class: int = 500  # images per class the probe and the k-NN use (a seeded sample above it)

    @classmethod
    def from_mapping(cls, values: Any) -> Thresholds:
        """From a mapping (e.g. a config's `advise` node); unknown keys are an error naming them."""
        values = dict(to_plain(values) or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"advise: unknown setting(s) {unknown}; known: {sorted(known)}.")
        return replace(cls(), **values)
