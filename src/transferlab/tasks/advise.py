"""The strategy advisor: measure what the seeds' "four realms" talk about, then recommend a strategy.

The tutorials (../shared/seeds) sort transfer learning into four realms, small or large data x similar to or
different from the pretraining data (ImageNet), and give each its recipe: train a new head on a frozen backbone,
retrain the top of the network, or fine-tune it all. They never say how to tell which realm a dataset is in.
`python -m transferlab.advise <root> [backbone=...]` measures it, in seconds to minutes on a CPU:

- **size**, from the dataset doctor's scan of the *training pool* (`FolderDataModule.scan`): classes, images per
  class (min, median), imbalance (largest / smallest class);
- **similarity to the pretraining data**, from the backbone's features of the training pool, computed once into
  the project's feature cache (`CachedFeatureDataModule`, the same entry a later `strategy=frozen` run on the
  same data and backbone loads):
  - the *linear probe*: a logistic regression on the standardised features, its C chosen by an inner
    cross-validation inside each fold of an outer stratified k-fold (nested, so the score is not tuned on the
    images it is measured on). It is what `strategy=frozen` can reach, so it is the **floor to beat**;
  - *nearest-neighbour consistency*: the cross-validated accuracy of a k-NN (cosine) on the same features. A
    probe can learn to read a few useful directions out of features that were never meant for these images; a
    k-NN cannot learn anything, so it only scores well when the pretrained feature space already puts images of
    one class together, which is what "similar to the pretraining data" means;
  - for timm backbones with pretrained weights, the *pretraining head's confidence*: the mean top-1 softmax of
    the weights' own (ImageNet) classifier on the images, and the commonest ImageNet class of each class. It is
    shown, not used: it is low for fine-grained classes ImageNet lacks even when the features separate them well.
  Validation images are never used by any measure (the cache also extracts them, so a later frozen run has them).

Accuracies are normalised by chance, `(acc - chance) / (1 - chance)`, chance being the share of the largest
class in the pool (= 1/classes on a balanced set): 0 is guessing, 1 is perfect, for 2 or 100 classes alike.

**Thresholds** (`Thresholds`, one place; CLI flags `--large-per-class 1000 ...`, or in a training run
`+advise.large_per_class=1000`):

- `few_per_class = 20`: with fewer than 20 training images per class (median), the folds of any estimate hold a
  handful of images per class, and moving even the top stage of a network on them memorises them; only the head
  trains (the seeds' "small" taken to its limit; `lpft` will be the alternative here).
- `large_per_class = 500`: from 500 images per class on, the data is "large": enough to fine-tune the whole
  network without it memorising the set (Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?",
  find full fine-tuning ahead of a frozen backbone on every one of 12 datasets of ~50-5000 images per class;
  the margin is largest where data is plentiful). Every set the project ships is below it (ants/bees 122 per
  class, flowers12 60, digits 144), where the seeds' advice is to keep most of the network.
- `similar = 0.90` and `very_different = 0.50`, on the chance-normalised k-NN accuracy: at 0.90 the pretrained
  feature space, with nothing trained, already gets 9 in 10 of the images that guessing gets wrong, and a small
  set has little to gain and much to overfit by moving it (measured with EfficientNet-Lite0: ants/bees 0.93,
  flowers12 0.94, flowers12 at 10 per class 0.92). Digits at 48 px score 0.88: a linear probe still reads them
  well (0.93), but their neighbours are often another digit, so the top stages should re-learn what to look at.
  Below 0.50 the space leaves most images wrong: more stages train. `probe_similar = 0.80`: the probe must also
  get 4 in 5 of them (a guard: a space whose neighbours agree but that a linear head cannot separate is not one
  to freeze; every set here passes it, ants/bees lowest at 0.90). These lines were placed on three data sets
  (digits is near the line); the repeated-seed sweeps will say where they belong.

**Recommendations** (`RECOMMENDATIONS`, one row per realm; a row names a `conf/strategy/<name>.yaml` option
and settings on it, so a new strategy such as `lpft` is a new row or a changed one):

| size \\ similarity | similar | different | very different |
| --- | --- | --- | --- |
| few (< 20/class) | frozen | frozen | frozen |
| small | frozen | partial, 2 stages | partial, 3 stages |
| large (>= 500/class) | finetune | finetune | finetune |

`strategy=auto` in a training run applies the recommendation (the option's YAML loaded onto the strategy schema,
then its settings; nothing in a file is instantiated) and records the advice in summary.json.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import statistics
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.callbacks.summary import RunSummary
from transferlab.config import register_resolvers, to_plain
from transferlab.config.schema import StrategyConfig
from transferlab.files import atomic_write_json
from transferlab.models.backbones import source_class_names

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the project's conf/ (src/transferlab/tasks/advise.py)


# --- thresholds -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Every number the advice depends on (the module docstring says why each has its value)."""

    few_per_class: int = 20  # median training images per class below this: "few"
    large_per_class: int = 500  # median training images per class at or above this: "large"
    similar: float = 0.90  # chance-normalised k-NN accuracy at or above: similar to the pretraining data
    probe_similar: float = 0.80  # ... and the chance-normalised probe accuracy at or above (a guard)
    very_different: float = 0.50  # chance-normalised k-NN accuracy below: very different
    folds: int = 5  # outer stratified folds of the probe and the k-NN (fewer when a class has fewer images)
    neighbours: int = 5  # k of the k-NN
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


# --- measures -------------------------------------------------------------------------------------------------
@dataclass
class Measures:
    """What the advice is computed from. Size measures are exact; accuracies are cross-validated on the
    training pool (None when a class has too few images to cross-validate)."""

    classes: int
    train_images: int
    per_class_min: int
    per_class_median: float
    imbalance: float  # largest / smallest class of the training pool
    chance: float  # share of the largest class: the accuracy of always answering it
    probe_acc: float | None = None  # linear probe, nested stratified k-fold CV: the floor to beat
    probe_std: float | None = None  # across the outer folds
    probe_c: list[float] = field(default_factory=list)  # the C each outer fold's inner CV chose
    knn_acc: float | None = None  # k-NN (cosine) cross-validated accuracy on the same folds
    knn_k: int | None = None
    folds: int | None = None
    probe_images: int | None = None  # images the probe and k-NN used (<= max_per_class per class)
    imagenet_confidence: float | None = None  # mean top-1 softmax of the pretrained head (timm weights only)
    imagenet_classes: dict[str, list] = field(default_factory=dict)  # class -> [commonest ImageNet label, share]
    backbone: str = ""
    feature_dim: int | None = None
    feature_cache: str | None = None
    cache_hit: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def normalised(self, acc: float | None) -> float | None:
        """(acc - chance) / (1 - chance): 0 = guessing the largest class, 1 = perfect."""
        if acc is None or self.chance >= 1:
            return None
        return (acc - self.chance) / (1 - self.chance)

    @property
    def probe_norm(self) -> float | None:
        return self.normalised(self.probe_acc)

    @property
    def knn_norm(self) -> float | None:
        return self.normalised(self.knn_acc)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["probe_norm"], d["knn_norm"] = _round(self.probe_norm), _round(self.knn_norm)
        return {k: _round(v) for k, v in d.items()}


def _round(v: Any, digits: int = 4) -> Any:
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


PROBE_CS = (0.001, 0.01, 0.1, 1.0)  # C of the logistic regression on standardised features (inner CV picks one)


def probe_measures(features: np.ndarray, labels: np.ndarray, thresholds: Thresholds = Thresholds(),
                   seed: int = 0) -> dict[str, Any]:
    """Linear-probe and k-NN accuracy under stratified k-fold cross-validation of the training pool.

    Probe: StandardScaler + LogisticRegression, C chosen by GridSearchCV (inner stratified folds) inside each
    outer fold. k-NN: cosine distance on the same outer folds. Empty when a class has fewer than 2 images."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, cross_validate
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    keep = _sample_per_class(labels, thresholds.max_per_class, seed)
    x, y = features[keep].astype(np.float64), labels[keep]
    smallest = int(np.bincount(y)[np.unique(y)].min())
    folds = min(thresholds.folds, smallest)
    if folds < 2 or len(np.unique(y)) < 2:
        return {}
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    train_smallest = smallest - math.ceil(smallest / folds)  # fewest images of a class in an outer training fold
    inner_folds = min(3, train_smallest)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if inner_folds >= 2:
        probe = GridSearchCV(probe, {"logisticregression__C": list(PROBE_CS)},
                             cv=StratifiedKFold(inner_folds, shuffle=True, random_state=seed))
    k = max(1, min(thresholds.neighbours, train_smallest))
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    # One BLAS/OpenMP thread: these fits are small, and with torch's thread pools alive beside numpy's, more threads
    # contend: measured 20x slower on 2 cores (a digits fit: 14.7 s with 2 threads, 0.7 s with 1).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_validate(probe, x, y, cv=outer, return_estimator=True)
        knn = cross_val_score(KNeighborsClassifier(n_neighbors=k, metric="cosine"), unit, y, cv=outer)
    chosen = [float(e.best_params_["logisticregression__C"]) for e in scores["estimator"]] if inner_folds >= 2 else []
    return {
        "probe_acc": float(scores["test_score"].mean()),
        "probe_std": float(scores["test_score"].std()),
        "probe_c": chosen,
        "knn_acc": float(knn.mean()),
        "knn_k": k,
        "folds": folds,
        "probe_images": len(y),
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
    probs = logits.softmax(dim=1)
    confidence, top = probs.max(dim=1)
    per_class = {}
    for c, name in enumerate(class_names):
        mine = top[labels == c].tolist()
        if mine:
            label, n = Counter(mine).most_common(1)[0]
            per_class[name] = [source_class_names([label], 1000)[0], round(n / len(mine), 2)]
    return {"imagenet_confidence": float(confidence.mean()), "imagenet_classes": per_class}


def backbone_cfg(cfg: DictConfig) -> dict[str, Any]:
    """The backbone as plain data, as the training task builds it (`tasks.train.backbone_description`, which
    this module cannot import: train imports this one); the cache key must be the training run's."""
    backbone = dict(to_plain(cfg.backbone))
    if not cfg.strategy.get("pretrained", True):
        backbone["weights"] = None
    return backbone


def measure(cfg: DictConfig, thresholds: Thresholds = Thresholds()) -> tuple[Measures, Any]:
    """Scan the data (the doctor), cache the backbone's features, and measure. Returns (measures, datamodule)."""
    from hydra.utils import instantiate

    from transferlab.data.features import CachedFeatureDataModule
    from transferlab.models.backbones import create_backbone

    start = time.perf_counter()
    datamodule = instantiate(cfg.dataset)  # the config's dataset option, as the training task builds it
    datamodule.prepare_data()
    splits = datamodule.scan()
    train_labels = [s.label for s in splits.train]
    sizes = size_measures(train_labels, len(splits.class_names))
    scanned = time.perf_counter()

    description = backbone_cfg(cfg)
    backbone = create_backbone(**description)
    datamodule.set_input_spec(backbone.input_spec.override(**datamodule.input_overrides))
    channels_last = bool(cfg.get("channels_last", False))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.module.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    features = CachedFeatureDataModule(datamodule, backbone.module, description, str(cfg.paths.cache_dir),
                                       views=0, seed=int(cfg.seed), channels_last=channels_last)
    features.setup("fit")
    backbone.module.to("cpu", memory_format=torch.contiguous_format)
    extracted = time.perf_counter()

    x, y = features.train_features[0], features.train_labels  # the training pool only; val is never read
    probe = probe_measures(x.numpy(), y.numpy(), thresholds, seed=int(cfg.seed))
    head = pretrained_head_measures(backbone.pretrained_classifier, x, y, splits.class_names)
    done = time.perf_counter()
    measures = Measures(
        **sizes, **probe, **head,
        backbone=f"{description['name']} ({description.get('weights')})",
        feature_dim=int(x.shape[1]) if x.ndim == 2 else None,
        feature_cache=str(features.cache_path), cache_hit=features.cache_hit,
        seconds={"scan": round(scanned - start, 1), "features": round(extracted - scanned, 1),
                 "probe": round(done - extracted, 1), "total": round(done - start, 1)},
    )
    return measures, datamodule


# --- the recommendation ---------------------------------------------------------------------------------------
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
        "them safely: train only a new head, on cached features (the seeds' realm 1)"),
    ("small", "different"): Recommendation(
        "partial", {"trainable_stages": 2}, "the features need adapting but the data is small: retrain only the "
        "last 2 stages, where the features are most specific to the pretraining classes, and keep the generic "
        "early ones (the seeds' realm 2)"),
    ("small", "very different"): Recommendation(
        "partial", {"trainable_stages": 3}, "the pretrained features barely group these images; retrain the last 3 "
        "stages, keeping the early, generic ones (edges, textures) that a small set could not learn (realm 2)"),
    ("large", "similar"): Recommendation(
        "finetune", {}, "with this much data fine-tuning the whole network adapts it without memorising the set, "
        "and usually beats a frozen backbone even on ImageNet-like images (realm 3)"),
    ("large", "different"): Recommendation(
        "finetune", {}, "much data, unlike the pretraining images: fine-tune everything, starting from the "
        "pretrained weights, which trains faster than random init and rarely worse (realm 4)"),
    ("large", "very different"): Recommendation(
        "finetune", {}, "much data, very unlike the pretraining images: fine-tune everything from the pretrained "
        "weights; `strategy=scratch` in the sweep shows whether pretraining still helps (realm 4)"),
}


def size_realm(m: Measures, t: Thresholds) -> str:
    if m.per_class_median < t.few_per_class:
        return "few"
    return "large" if m.per_class_median >= t.large_per_class else "small"


def similarity_realm(m: Measures, t: Thresholds) -> str | None:
    """None when nothing could be cross-validated (then size alone decides)."""
    knn, probe = m.knn_norm, m.probe_norm
    if knn is None or probe is None:
        return None
    if knn >= t.similar and probe >= t.probe_similar:
        return "similar"
    return "very different" if knn < t.very_different else "different"


@dataclass
class Advice:
    realm: str  # "small (58 images/class), similar to ImageNet (probe 0.96)"
    size: str
    similarity: str | None
    recommendation: Recommendation
    reason: str
    floor: float | None  # the probe's cross-validated accuracy
    measures: Measures
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        return {
            "realm": self.realm, "size": self.size, "similarity": self.similarity,
            "strategy": self.recommendation.strategy, "settings": dict(self.recommendation.settings),
            "overrides": self.recommendation.overrides(), "reason": self.reason,
            "floor": _round(self.floor), "measures": self.measures.to_dict(), "thresholds": asdict(self.thresholds),
        }


def recommend(m: Measures, t: Thresholds = Thresholds()) -> Advice:
    """The realm of the measures and its row of `RECOMMENDATIONS` (a pure function: no data, no model)."""
    size = size_realm(m, t)
    similarity = similarity_realm(m, t)
    per_class = f"{m.per_class_median:g} images/class"
    if similarity is None:  # too few images to cross-validate: "few" decides alone (always frozen)
        rec = RECOMMENDATIONS[(size, "different")] if size == "few" else RECOMMENDATIONS[(size, "similar")]
        realm = f"{size} ({per_class}), similarity not measurable (a class has < 2 images)"
        why = rec.why
    else:
        rec = RECOMMENDATIONS[(size, similarity)]
        like = {"similar": "similar to", "different": "different from", "very different": "very different from"}
        realm = (f"{size} ({per_class}), {like[similarity]} ImageNet "
                 f"(probe {m.probe_acc:.2f}, k-NN {m.knn_acc:.2f})")
        why = (f"{rec.why}. Chance-normalised k-NN {m.knn_norm:.2f} (similar >= {t.similar}), probe "
               f"{m.probe_norm:.2f} (>= {t.probe_similar})")
    if m.imbalance >= 3:
        why += (f"; classes are imbalanced ({m.imbalance:g}x): if every class matters alike, add "
                "dataset.balance=loss (class weights), or more images of the rarest")
    return Advice(realm, size, similarity, rec, why, m.probe_acc, m, t)


# --- strategy=auto --------------------------------------------------------------------------------------------
def conf_dir() -> Path:
    """The conf/ of the running Hydra app (its main config source), else the project's."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.get("config_sources", []):
            if source.get("provider") == "main" and source.get("schema") == "file":
                return Path(source.path)
    return CONF_DIR


def strategy_option(name: str, settings: dict[str, Any] | None = None, conf: Path | None = None) -> DictConfig:
    """`conf/strategy/<name>.yaml` read as data onto the strategy schema, then `settings`: a wrong key or type
    fails here. Nothing is instantiated (an option has no `_target_`; its `defaults` list is the schema)."""
    path = (conf or conf_dir()) / "strategy" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"strategy option {name!r}: no {path}")
    option = OmegaConf.load(path)
    with open_dict(option):
        option.pop("defaults", None)
    node = OmegaConf.merge(OmegaConf.structured(StrategyConfig), option, settings or {})
    if node.name != name:
        raise ValueError(f"{path} names itself {node.name!r}, not {name!r}.")
    return node


class AdviceRecord(L.Callback):
    """Adds `advice` to the run's summary (and its summary.json) once RunSummary has written it."""

    def __init__(self, advice: dict[str, Any]) -> None:
        self.advice = advice

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is None or not summary.summary:
            return
        summary.summary["advice"] = self.advice
        if trainer.is_global_zero and trainer.default_root_dir:
            atomic_write_json(os.path.join(trainer.default_root_dir, summary.filename), summary.summary)


def auto_strategy(cfg: DictConfig) -> list[L.Callback]:
    """`strategy=auto`: measure the data, replace `cfg.strategy` with the recommended option and its settings,
    and return the callback that records the advice in summary.json. Any other strategy: nothing, no cost.

    The features go to the feature cache, so when the advice is `frozen` the run loads them instead of
    extracting them again. Thresholds: `+advise.<name>=<value>` (see `Thresholds`)."""
    if cfg.strategy.get("name") != "auto":
        return []
    thresholds = Thresholds.from_mapping(cfg.get("advise"))
    measures, _ = measure(cfg, thresholds)
    advice = recommend(measures, thresholds)
    chosen = strategy_option(advice.recommendation.strategy, advice.recommendation.settings)
    with open_dict(cfg):
        cfg.strategy = chosen
    log.info("strategy=auto: %s -> %s: %s", advice.realm, " ".join(advice.recommendation.overrides()), advice.reason)
    return [AdviceRecord(advice.to_dict())]


# --- the command line -----------------------------------------------------------------------------------------
SWEPT = ("frozen", "partial", "finetune")  # the strategies conf/experiment/strategy_check.yaml compares


def sweep_commands(root: str, overrides: list[str], rec: Recommendation) -> list[str]:
    """The repeated-seed sweep that checks the advice against the alternatives (and its own settings, when they
    are not the option's defaults)."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("strategy", "seed", "dataset.root")
            and not o.startswith(("strategy.", "advise.", "+advise."))]
    data = [o for o in kept if o.startswith("dataset=")] or ["dataset=folder"]
    rest = [o for o in kept if not o.startswith("dataset=")]
    # conf/experiment/strategy_check.yaml: SWEPT x seeds 1,2,3, three epochs each, with the paired report
    base = ["python", "train.py", "-m", "experiment=strategy_check", *data, f"dataset.root={root}", *rest]
    commands = [base + ([f"strategy={','.join([*SWEPT, rec.strategy])}"] if rec.strategy not in SWEPT else [])]
    defaults = strategy_option(rec.strategy)
    if any(defaults.get(k) != v for k, v in rec.settings.items()):
        commands.append(base + [*rec.overrides(), "seed=1,2,3"])
    return [" ".join(shlex.quote(w) for w in c) for c in commands]


def _shown(path: str | None) -> str | None:
    """A path under the working directory relative to it (outputs/cache/...), else as it is."""
    if path and os.path.abspath(path).startswith(os.getcwd() + os.sep):
        return os.path.relpath(path)
    return path


def format_advice(advice: Advice, root: str, overrides: list[str]) -> str:
    m, t = advice.measures, advice.thresholds
    lines = [
        f"Strategy advisor: {os.path.abspath(root)}",
        f"Backbone:      {m.backbone}, {m.feature_dim} features "
        f"({'loaded from' if m.cache_hit else 'cached in'} {_shown(m.feature_cache)})",
        f"Size:          {m.classes} classes, {m.train_images} training images; per class: median "
        f"{m.per_class_median:g}, min {m.per_class_min}; imbalance {m.imbalance:g}x",
    ]
    if m.probe_acc is not None:
        cs = f", C {sorted(set(m.probe_c))}" if m.probe_c else ""
        lines += [
            f"Linear probe:  {m.probe_acc:.3f} +- {m.probe_std:.3f} ({m.folds}-fold CV on the training pool, "
            f"{m.probe_images} images{cs}); chance {m.chance:.2f}, normalised {m.probe_norm:.2f}",
            f"Neighbours:    {m.knn_k}-NN {m.knn_acc:.3f} (same folds, cosine); normalised {m.knn_norm:.2f}",
        ]
    else:
        lines.append("Linear probe:  not measurable (a class has fewer than 2 training images)")
    if m.imagenet_confidence is not None:
        shown = list(m.imagenet_classes.items())
        top = ", ".join(f"{c}: {label} ({share:.0%})" for c, (label, share) in shown[:6])
        more = f", ... ({len(shown) - 6} more)" if len(shown) > 6 else ""
        lines.append(f"ImageNet head: mean confidence {m.imagenet_confidence:.2f}; commonest class: {top}{more}")
    floor = "n/a" if advice.floor is None else f"{advice.floor:.3f}"
    lines += [
        "",
        f"Realm:         {advice.realm}",
        f"Recommended:   {' '.join(advice.recommendation.overrides())}",
        f"Why:           {advice.reason}",
        f"Floor to beat: {floor} (the linear probe's CV accuracy: what a head on frozen features reaches; "
        "a strategy that trains more should beat it on val)",
        "Check it:      " + "\n               ".join(sweep_commands(root, overrides, advice.recommendation)),
        f"(measured in {m.seconds.get('total', 0):.0f} s: scan {m.seconds.get('scan', 0):.0f} s, features "
        f"{m.seconds.get('features', 0):.0f} s, probe {m.seconds.get('probe', 0):.0f} s; thresholds: few < "
        f"{t.few_per_class}/class, large >= {t.large_per_class}/class, similar >= {t.similar}, very different < "
        f"{t.very_different}; validation images never used)",
    ]
    return "\n".join(lines)


def compose_train_config(root: str, overrides: list[str], config_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml composed as `python train.py dataset=folder dataset.root=<root> <overrides>` would be."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_resolvers()
    data = [] if any(o.startswith("dataset=") for o in overrides) else ["dataset=folder"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str((config_dir or CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("train", overrides=[*data, f"dataset.root={os.path.abspath(root)}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${launch_dir:} = this directory, as in a train.py job
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.advise",
        description="Measure a dataset's size and its similarity to the backbone's pretraining data (linear probe, "
                    "k-NN, ImageNet head) and recommend a transfer strategy, with the sweep that checks it.")
    parser.add_argument("root", help="the image folder: train/<class>/ + val/<class>/, or <class>/ folders")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides as for train.py: backbone=resnet18, "
                                                     "dataset=digits, dataset.input.image_size=160, debug=tiny ...")
    for f in fields(Thresholds):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                            help=f"(default {f.default})")
    parser.add_argument("--json", help="also write the advice and every measure to this JSON file")
    parser.add_argument("--config-dir", type=Path, default=None, help=f"the conf/ to compose (default {CONF_DIR})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transferlab.config.checks import check_train_config

    args = parse_args(argv)
    thresholds = Thresholds(**{f.name: getattr(args, f.name) for f in fields(Thresholds)})
    cfg = compose_train_config(args.root, list(args.overrides), args.config_dir)
    # A dataset option that prepares its data (dataset=digits writes it) may start from nothing.
    if not os.path.isdir(os.path.expanduser(args.root)) and not cfg.dataset.get("prepare"):
        what = "is a file" if os.path.exists(args.root) else "does not exist"
        raise FileNotFoundError(f"{args.root} {what}; point the advisor at a folder holding train/<class>/ and "
                                "val/<class>/ (or <class>/ folders).")
    check_train_config(cfg)
    measures, _ = measure(cfg, thresholds)
    advice = recommend(measures, thresholds)
    print(format_advice(advice, args.root, list(args.overrides)))
    if args.json:
        atomic_write_json(args.json, {"root": os.path.abspath(args.root), **advice.to_dict()})
    sys.stdout.flush()
    return 0
