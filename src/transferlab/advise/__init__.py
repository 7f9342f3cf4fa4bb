"""The strategy advisor: measure which case of transfer learning a folder is, then recommend a strategy.

Transfer-learning guides (the PyTorch and Keras tutorials, CS231n's notes) sort the problem into four cases, small
or large data x similar to or different from the pretraining data (ImageNet), and give each its recipe: train a new
head on a frozen backbone, retrain the top of the network, or fine-tune it all. They never say how to tell which
case a dataset is in.
`python -m transferlab.advise <root> [backbone=...]` measures it, in seconds to minutes on a CPU
(`measures.py`):

- **size**, from the dataset doctor's scan of the *training pool* (`FolderDataModule.scan`): classes, images per
  class (min, median), imbalance (largest / smallest class);
- **similarity to the pretraining data**, from the backbone's features of the training pool, computed once into
  the project's feature cache (`CachedFeatureDataModule`, the same entry a later `strategy=frozen` run on the
  same data and backbone loads):
  - the *linear probe*: the head `strategy=frozen` fits, by the same code (`models.linear_fit.fit_linear_head`:
    L-BFGS on the standardised features, the L2 strength chosen by stratified k-fold CV on the training
    features, the pretrained classifier's top-m source-class logits as competing inputs), with frozen's head_fit
    settings (`HeadFitConfig`) and the run's seed. Its cross-validated accuracy is the **floor to beat**: what
    frozen reaches, as frozen's own report gives it (the accuracy at the selected strength, so slightly
    optimistic: the selection saw those folds);
  - *nearest-neighbour consistency*: the cross-validated accuracy of a k-NN (cosine) on the same folds. A
    probe can learn to read a few useful directions out of features that were never meant for these images; a
    k-NN cannot learn anything, so it only scores well when the pretrained feature space already puts images of
    one class together, which is what "similar to the pretraining data" means;
  - for timm backbones with pretrained weights, the *pretraining head's confidence*: the mean top-1 softmax of
    the weights' own (ImageNet) classifier on the images, and the commonest ImageNet class of each class. It is
    shown, not used: it is low for fine-grained classes ImageNet lacks even when the features separate them well.
  Validation images are never used by any measure (the cache also extracts them, so a later frozen run has them).
  Above `max_per_class` images of a class, the probe and the k-NN use a seeded sample of that many.

Accuracies are normalised by chance, `(acc - chance) / (1 - chance)`, chance being the share of the largest
class among the images measured (= 1/classes on a balanced set; a probe scored by balanced accuracy, under
`dataset.balance`, has chance 1/classes): 0 is guessing, 1 is perfect, for 2 or 100 classes alike.

**Thresholds** (`Thresholds`, one place, `thresholds.py`; CLI flags `--large-per-class 1000 ...`, or in a
training run `+advise.large_per_class=1000`):

- `few_per_class = 20`: with fewer than 20 training images per class (median), the folds of any estimate hold a
  handful of images per class, and moving even the top stage of a network on them memorises them; only the head
  trains (the seeds' "small" taken to its limit; `lpft` will be the alternative here).
- `large_per_class = 500`: from 500 images per class on, the data is "large": enough to fine-tune the whole
  network without it memorising the set (Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?",
  find full fine-tuning ahead of a frozen backbone on every one of 12 datasets of ~50-5000 images per class;
  the margin is largest where data is plentiful). Every set the project ships is below it (ants/bees 122 per
  class, flowers12 60, digits 144, elpv 380), where the seeds' advice is to keep most of the network.
- `similar = 0.90` and `very_different = 0.50`, on the chance-normalised k-NN accuracy: at 0.90 the pretrained
  feature space, with nothing trained, already gets 9 in 10 of the images that guessing gets wrong, and a small
  set has little to gain and much to overfit by moving it (measured with EfficientNet-Lite0: ants/bees 0.93,
  flowers12 0.94, flowers12 at 10 per class 0.92). Digits at 48 px score 0.88: a linear probe still reads them
  well (0.94), but their neighbours are often another digit, so the top stages should re-learn what to look at.
  Below 0.50 the space leaves most images wrong: more stages train (the greyscale solar cells of elpv: 0.39).
  `probe_similar = 0.80`: the probe must also get 4 in 5 of them (a guard: a space whose neighbours agree but
  that a linear head cannot separate is not one to freeze). Every similar set here passes it easily, flowers12
  at 10 per class lowest at 0.96 (the scikit-learn probe this one replaced put the ants and bees lowest, at
  0.90: it could not use ImageNet's own "ant" and "bee" outputs, 0.98 here); elpv, far below, scores 0.51 on
  its sample (0.43 on all its images). These lines were placed on three data sets (digits is near the line);
  the repeated-seed sweeps will say where they belong.

**Recommendations** (`RECOMMENDATIONS` in `recommend.py`, one row per case; a row names a
`conf/strategy/<name>.yaml` option and settings on it, so a new strategy such as `lpft` is a new row or a
changed one):

| size \\ similarity | similar | different | very different |
| --- | --- | --- | --- |
| few (< 20/class) | frozen | frozen | frozen |
| small | frozen | partial, 2 stages | partial, 3 stages |
| large (>= 500/class) | finetune | finetune | finetune |

`strategy=auto` in a training run applies the recommendation (`auto.py`: the option's YAML loaded onto the
strategy schema, then its settings; nothing in a file is instantiated); the run records the advice in its
summary.json (`advice`).
`report.py` prints the advice and the sweep that checks it; `__main__.py` is the command line.

Importing this package loads neither Lightning, timm, torchvision nor scikit-learn: the measures import them
when they run.
"""

from __future__ import annotations

from transferlab.advise.auto import auto_strategy
from transferlab.advise.measures import (
    Measures,
    measure,
    pretrained_head_measures,
    probe_measures,
    size_measures,
)
from transferlab.advise.options import CONF_DIR, conf_dir, strategy_option
from transferlab.advise.recommend import (
    RECOMMENDATIONS,
    SIMILARITIES,
    SIZES,
    Advice,
    Recommendation,
    recommend,
    similarity_case,
    size_case,
)
from transferlab.advise.report import SWEPT, format_advice, sweep_commands
from transferlab.advise.thresholds import Thresholds

__all__ = [
    "CONF_DIR", "RECOMMENDATIONS", "SIMILARITIES", "SIZES", "SWEPT", "Advice", "Measures",
    "Recommendation", "Thresholds", "auto_strategy", "conf_dir", "format_advice", "measure",
    "pretrained_head_measures", "probe_measures", "recommend", "similarity_case", "size_measures", "size_case",
    "strategy_option", "sweep_commands",
]
