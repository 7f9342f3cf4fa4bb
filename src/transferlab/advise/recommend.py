"""The cases and the recommendation table: a pure function from `Measures` (and `Thresholds`) to `Advice`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from transferlab.advise.measures import Measures, _round
from transferlab.advise.thresholds import Thresholds

SIZES = ("few", "small", "large")
SIMILARITIES = ("similar", "different", "very different")


@dataclass(frozen=True)
class Recommendation:
    """A strategy option (`conf/strategy/<strategy>.yaml`), settings on it, and why."""

    strategy: str
    settings: dict[str, Any] = field(default_factory=dict)
    why: str = ""

    def overrides(self) -> list[str]:
        """As command-line overrides: `strategy=partial strategy.trainable_stages=3`."""
        return [f"strategy={self.strategy}", *(f"strategy.{k}={v}" for k, v in self.settings.items())]


_FROZEN_FEW = Recommendation(
    "frozen", {}, "too few images per class to move any backbone weight without memorising them: train the head "
    "on the cached features, and collect more images before unfreezing anything")
# (size, similarity) -> what to train. A new strategy (lpft) is a changed or added row.
RECOMMENDATIONS: dict[tuple[str, str], Recommendation] = {
    ("few", "similar"): _FROZEN_FEW,
    ("few", "different"): _FROZEN_FEW,
    ("few", "very different"): _FROZEN_FEW,
    ("small", "similar"): Recommendation(
        "frozen", {}, "the pretrained features already separate the classes and the data is too small to improve "
        "them safely: train only a new head, on cached features"),
    ("small", "different"): Recommendation(
        "partial", {"trainable_stages": 2}, "the features need adapting but the data is small: retrain only the "
        "last 2 stages, where the features are most specific to the pretraining classes, and keep the generic "
        "early ones"),
    ("small", "very different"): Recommendation(
        "partial", {"trainable_stages": 3}, "the pretrained features barely group these images; retrain the last 3 "
        "stages, keeping the early, generic ones (edges, textures) that a small set could not learn"),
    ("large", "similar"): Recommendation(
        "finetune", {}, "with this much data fine-tuning the whole network adapts it without memorising the set, "
        "and usually beats a frozen backbone even on ImageNet-like images"),
    ("large", "different"): Recommendation(
        "finetune", {}, "much data, unlike the pretraining images: fine-tune everything, starting from the "
        "pretrained weights, which trains faster than random init and rarely worse"),
    ("large", "very different"): Recommendation(
        "finetune", {}, "much data, very unlike the pretraining images: fine-tune everything from the pretrained "
        "weights; `strategy=scratch` in the sweep shows whether pretraining still helps"),
}


def size_case(m: Measures, t: Thresholds) -> str:
    if m.per_class_median < t.few_per_class:
        return "few"
    return "large" if m.per_class_median >= t.large_per_class else "small"


def similarity_case(m: Measures, t: Thresholds) -> str | None:
    """None when nothing could be cross-validated (then size alone decides)."""
    knn, probe = m.knn_norm, m.probe_norm
    if knn is None or probe is None:
        return None
    if knn >= t.similar and probe >= t.probe_similar:
        return "similar"
    return "very different" if knn < t.very_different else "different"


@dataclass
class Advice:
    case: str  # "small (58 images/class), similar to ImageNet (probe 0.96, k-NN 0.94)"
    size: str
    similarity: str | None
    recommendation: Recommendation
    reason: str
    floor: float | None  # the probe's cross-validated accuracy: what strategy=frozen's head fit reaches
    measures: Measures
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case, "size": self.size, "similarity": self.similarity,
            "strategy": self.recommendation.strategy, "settings": dict(self.recommendation.settings),
            "overrides": self.recommendation.overrides(), "reason": self.reason,
            "floor": _round(self.floor), "measures": self.measures.to_dict(), "thresholds": asdict(self.thresholds),
        }


def recommend(m: Measures, t: Thresholds | None = None) -> Advice:
    """The case of the measures and its row of `RECOMMENDATIONS` (a pure function: no data, no model)."""
    t = t or Thresholds()
    size = size_case(m, t)
    similarity = similarity_case(m, t)
    per_class = f"{m.per_class_median:g} images/class"
    if similarity is None:  # too few images to cross-validate: "few" decides alone (always frozen)
        rec = RECOMMENDATIONS[(size, "different")] if size == "few" else RECOMMENDATIONS[(size, "similar")]
        case = f"{size} ({per_class}), similarity not measurable (a class has < 2 images)"
        why = rec.why
    else:
        rec = RECOMMENDATIONS[(size, similarity)]
        like = {"similar": "similar to", "different": "different from", "very different": "very different from"}
        case = (f"{size} ({per_class}), {like[similarity]} ImageNet "
                 f"(probe {m.probe_acc:.2f}, k-NN {m.knn_acc:.2f})")
        why = (f"{rec.why}. Chance-normalised k-NN {m.knn_norm:.2f} (similar >= {t.similar}), probe "
               f"{m.probe_norm:.2f} (>= {t.probe_similar})")
    if m.imbalance >= 3:
        why += (f"; classes are imbalanced ({m.imbalance:g}x): if every class matters alike, add "
                "dataset.balance=loss (class weights), or more images of the rarest")
    return Advice(case, size, similarity, rec, why, m.probe_acc, m, t)
