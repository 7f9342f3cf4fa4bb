"""What the advice is computed from: the training pool's size, and how the backbone's features see it.

- `size_measures`: exact counts of the training pool (the dataset doctor's scan).
- `probe_measures`: the **linear probe** and the **k-NN**, cross-validated on the same folds of the training
  pool's cached features. The probe is `fit_linear_head`, the solver `strategy=frozen` runs, with frozen's
  head_fit settings (`HeadFitConfig`: the L2 grid, folds, L-BFGS iterations, the pretrained classifier's top-m
  logits as candidate inputs) and the run's seed, and, with `dataset.balance`, the same balanced class weights.
  So the floor the advice quotes is the cross-validated accuracy of the head `strategy=frozen` fits, not a
  different estimator's: a strategy that trains more must beat *that*. The accuracy is the one frozen's own
  report gives, the mean held-out accuracy at the selected strength (and inputs): the selection saw those folds,
  so it is slightly optimistic (a nested CV would not be; it is not what frozen reports). The k-NN (cosine,
  scikit-learn) learns nothing, so it only scores well when the pretrained feature space already puts each
  class together: the measure of "similar to the pretraining data".
- `pretrained_head_measures`: the weights' own (ImageNet) classifier's confidence, shown, not used.
- `measure(settings)`: all of them for a training run's settings, the features from the project's feature cache.

Heavy libraries (scikit-learn, timm through the models, Lightning) are imported inside the functions that use
them: importing `transferlab.advise` stays cheap.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from transferlab.advise.thresholds import Thresholds
from transferlab.config.schema import HeadFitConfig

if TYPE_CHECKING:
    from transferlab.config.settings import RunSettings
    from transferlab.models.linear_fit import SourceHead


@dataclass
class Measures:
    """What the advice is computed from. Size measures are exact; accuracies are cross-validated on the
    training pool (None when a class has too few images to cross-validate)."""

    classes: int
    train_images: int
    per_class_min: int
    per_class_median: float
    imbalance: float  # largest / smallest class of the training pool
    chance: float  # share of the largest class of the pool: the accuracy of always answering it
    # The probe: strategy=frozen's head fit (`fit_linear_head`), its cross-validated accuracy the floor to beat
    probe_acc: float | None = None  # mean held-out accuracy at the selected l2 and inputs (balanced: balanced acc.)
    probe_l2: float | None = None  # the L2 strength the cross-validation chose
    probe_inputs: str | None = None  # "features", or "source top m" (the pretrained classifier's top-m logits)
    probe_source_classes: list[str] | None = None  # their pretraining class names, when the logits won
    probe_candidates: dict[str, float] = field(default_factory=dict)  # every input tried -> its best CV accuracy
    probe_balanced: bool = False  # fitted and scored with balanced class weights (dataset.balance)
    knn_acc: float | None = None  # k-NN (cosine) cross-validated accuracy on the same folds
    knn_k: int | None = None
    folds: int | None = None
    probe_images: int | None = None  # images the probe and k-NN used (<= max_per_class per class)
    measured_chance: float | None = None  # share of the largest class among those images (None: as `chance`)
    imagenet_confidence: float | None = None  # mean top-1 softmax of the pretrained head (timm weights only)
    imagenet_classes: dict[str, list] = field(default_factory=dict)  # class -> [commonest ImageNet label, share]
    backbone: str = ""
    feature_dim: int | None = None
    feature_cache: str | None = None
    cache_hit: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def normalised(self, acc: float | None, chance: float | None = None) -> float | None:
        """(acc - chance) / (1 - chance): 0 = guessing the largest class, 1 = perfect (`chance`: the pool's)."""
        chance = self.chance if chance is None else chance
        if acc is None or chance >= 1:
            return None
        return (acc - chance) / (1 - chance)

    @property
    def knn_chance(self) -> float:
        """Chance on the rows the k-NN scored: max_per_class sampling can make them more balanced than the pool."""
        return self.chance if self.measured_chance is None else self.measured_chance

    @property
    def probe_chance(self) -> float:
        """Chance of the probe's score: as the k-NN's, or 1/classes for balanced accuracy (class weights)."""
        return 1 / self.classes if self.probe_balanced else self.knn_chance

    @property
    def probe_norm(self) -> float | None:
        return self.normalised(self.probe_acc, self.probe_chance)

    @property
    def knn_norm(self) -> float | None:
        return self.normalised(self.knn_acc, self.knn_chance)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["probe_norm"], d["knn_norm"] = self.probe_norm, self.knn_norm
        return {k: _round(v) for k, v in d.items()}


def _round(v: Any, digits: int = 4) -> Any:
    if isinstance(v, dict):
        return {k: _round(x, digits) for k, x in v.items()}
    return round(v, digits) if isinstance(v, float) else v


def size_measures(labels: list[int] | np.ndarray, classes: int) -> dict[str, Any]:
    """Exact counts of the training pool: per-class min and median, imbalance, chance."""
    counts = Counter(int(y) for y in labels)
    sizes = [counts.get(c, 0) for c in range(classes)]
    nonzero = [n for n in sizes if n > 0] or [0]
    total = sum(sizes)
    return {
        "classes": classes,
        "train_images": total,
        "per_class_min": min(sizes) if sizes else 0,
        "per_class_median": float(statistics.median(sizes)) if sizes else 0.0,
        "imbalance": round(max(nonzero) / min(nonzero), 2) if min(nonzero) > 0 else math.inf,
        "chance": max(sizes) / total if total else 1.0,
    }


def _sample_per_class(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices keeping at most `limit` items per class (a seeded sample), in the original order."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(idx if len(idx) <= limit else rng.choice(idx, limit, replace=False))
    return np.sort(np.concatenate(keep))


def balanced_class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """n / (present classes * count) per class, 0 for an absent one: scikit-learn's "balanced" weights, as the
    training task gives a head fit under `dataset.balance`."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return torch.as_tensor(weights.tolist(), dtype=torch.float32)


def probe_measures(features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                   thresholds: Thresholds | None = None, seed: int = 0, classes: int | None = None,
                   source: SourceHead | None = None, balanced: bool = False,
                   head_fit: HeadFitConfig | None = None) -> dict[str, Any]:
    """The linear probe and the k-NN, cross-validated on the same stratified folds of (a max_per_class sample
    of) the training pool. Empty when a class has fewer than 2 images.

    Probe: `fit_linear_head` with `head_fit`'s l2 grid, folds, max_iter and source_classes (default
    `HeadFitConfig()`: strategy=frozen's), `seed` for its folds, the pretrained classifier `source` as
    candidate inputs, balanced class weights when `balanced`: the head strategy=frozen fits on these rows,
    and its cross-validated accuracy at the selected strength (slightly optimistic, as frozen's own report).
    k-NN: cosine distance on the same folds, k <= the fewest images of a class in a training fold."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    from transferlab.models.linear_fit import fit_linear_head

    thresholds = thresholds or Thresholds()
    settings = head_fit or HeadFitConfig()
    y_all = np.asarray(labels, dtype=np.int64)
    classes = int(y_all.max()) + 1 if classes is None else classes
    keep = _sample_per_class(y_all, thresholds.max_per_class, seed)
    y = y_all[keep]
    x = torch.as_tensor(np.asarray(features) if isinstance(features, np.ndarray) else features,
                        dtype=torch.float32)[torch.as_tensor(keep)]
    counts = np.bincount(y, minlength=classes)
    smallest = int(counts[counts > 0].min())
    folds = min(int(settings.folds), smallest)  # as fit_linear_head chooses them
    if folds < 2 or (counts > 0).sum() < 2:
        return {}
    # One thread (torch's and BLAS/OpenMP's): these fits are small, and on 2 shared cores two threads contend.
    # Measured on Lite0's cached features, the machine busy: ants/bees 0.3 s against 2.8-5 s, flowers12 3.0 s
    # against 17 s, digits 12 s against 93 s (the thread count can move a float reduction, and once the digits
    # score by one image of 1438; the old scikit-learn probe measured the same contention, 20x).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            fit = fit_linear_head(x, torch.as_tensor(y), classes, l2=list(settings.l2), folds=int(settings.folds),
                                  seed=seed, max_iter=int(settings.max_iter), source=source,
                                  source_classes=list(settings.source_classes or ()),
                                  class_weight=balanced_class_weights(y, classes) if balanced else None)
            train_smallest = smallest - math.ceil(smallest / folds)  # fewest images of a class in a training fold
            k = max(1, min(thresholds.neighbours, train_smallest))
            unit = x.double().numpy()
            unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
            # the probe's splits (fit_linear_head: StratifiedKFold(folds, shuffle, seed) on these labels)
            knn = cross_val_score(KNeighborsClassifier(n_neighbors=k, metric="cosine"), unit, y,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    finally:
        torch.set_num_threads(threads)
    names = None
    if fit.source_classes is not None and source is not None:
        from transferlab.models.backbones import source_class_names

        names = source_class_names(fit.source_classes, len(source.bias))
    return {
        "probe_acc": fit.cv_accuracy,
        "probe_l2": fit.l2,
        "probe_inputs": fit.inputs,
        "probe_source_classes": names,
        "probe_candidates": dict(fit.candidates),
        "probe_balanced": fit.balanced,
        "knn_acc": float(knn.mean()),
        "knn_k": k,
        "folds": fit.folds or folds,
        "probe_images": len(y),
        "measured_chance": float(counts.max() / len(y)),
    }


@torch.no_grad()
def pretrained_head_measures(classifier: torch.nn.Module | None, features: torch.Tensor, labels: torch.Tensor,
                             class_names: list[str]) -> dict[str, Any]:
    """The weights' own classifier on the features: mean top-1 softmax, and each class's commonest label.

    Only for a 1000-way (ImageNet) head; empty otherwise."""
    if classifier is None or len(features) == 0:
        return {}
    logits = classifier(features.float())
    if logits.ndim != 2 or logits.shape[1] != 1000:
        return {}
    from transferlab.models.backbones import source_class_names

    probs = logits.softmax(dim=1)
    confidence, top = probs.max(dim=1)
    per_class = {}
    for c, name in enumerate(class_names):
        mine = top[labels == c].tolist()
        if mine:
            label, n = Counter(mine).most_common(1)[0]
            per_class[name] = [source_class_names([label], 1000)[0], round(n / len(mine), 2)]
    return {"imagenet_confidence": float(confidence.mean()), "imagenet_classes": per_class}


def measure(settings: RunSettings, thresholds: Thresholds | None = None) -> tuple[Measures, Any]:
    """Scan the data (the doctor), cache the backbone's features (the entry a training run of these settings
    uses), and measure. Returns (measures, datamodule)."""
    thresholds = thresholds or Thresholds()
    from transferlab.models.linear_fit import SourceHead
    from transferlab.training.features import folder_features

    found = folder_features(settings)
    datamodule, backbone, features = found.datamodule, found.backbone, found.features
    splits = datamodule.scan()
    train_labels = [s.label for s in splits.train]
    sizes = size_measures(train_labels, len(splits.class_names))
    description = settings.backbone_description()
    extracted = time.perf_counter()

    x, y = features.train_features[0], features.train_labels  # the training pool only; val is never read
    classifier = backbone.pretrained_classifier
    # strategy=frozen's inputs: its head fit sees the pretrained classifier as a SourceHead (an nn.Linear only)
    source = SourceHead(classifier.weight.detach(), classifier.bias.detach()) \
        if isinstance(classifier, torch.nn.Linear) else None
    probe = probe_measures(x, y.numpy(), thresholds, seed=settings.seed, classes=len(splits.class_names),
                           source=source, balanced=settings.dataset.balance != "none")
    head = pretrained_head_measures(classifier, x, y, splits.class_names)
    done = time.perf_counter()
    measures = Measures(
        **sizes, **probe, **head,
        backbone=f"{description['name']} ({description.get('weights')})",
        feature_dim=int(x.shape[1]) if x.ndim == 2 else None,
        feature_cache=str(features.cache_path), cache_hit=features.cache_hit,
        seconds={"scan": round(found.scanned_s, 1), "features": round(found.extracted_s, 1),
                 "probe": round(done - extracted, 1),
                 "total": round(found.scanned_s + found.extracted_s + done - extracted, 1)},
    )
    return measures, datamodule
