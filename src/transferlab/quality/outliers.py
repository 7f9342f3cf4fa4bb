"""Outliers: images unlike anything the backbone was pretrained on, relative to the rest of the folder.

The score is the energy of the pretrained classifier's logits (-logsumexp; Liu et al., "Energy-based
Out-of-distribution Detection", NeurIPS 2020): a photo of an ant gets large ImageNet logits, a screenshot, a
blank frame or a digit small ones. Measured on hymenoptera with 5 planted digit images (bench/data_quality.py):
energy ranked them 1st-5th of 403, the pretrained head's max softmax probability likewise, while the k-NN
distance on centred features ranked them 376th-398th (the five digits are each other's nearest neighbours, so
they look typical to k-NN) and k-NN variants 7th-43rd. Without a pretrained classifier (random init, a
backbone without one) the k-NN distance is the fallback.

An image is flagged when its score is above the folder's typical one by FAR robust standard deviations (1.4826
MAD) and it is among the top TOP_SHARE of the ranking: energies are bounded above (near-uniform logits), so
outliers do not stand far out (hymenoptera: the digits at 1.7-1.9, the placeholder GIF at 1.6, the next photos
at 1.5); the cap keeps a folder unlike ImageNet, where every image has a low energy, from being flagged whole.
The whole ranking is kept (the report's JSON).
"""

from __future__ import annotations

import numpy as np

K, FAR, TOP_SHARE = 10, 1.5, 0.02


def energy_scores(source_logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the pretrained classifier's logits: higher = less like the pretraining data."""
    z = np.asarray(source_logits, dtype=np.float64)
    top = z.max(1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(z - top).sum(1)))


def knn_scores(sims: np.ndarray, k: int = K) -> np.ndarray:
    """Mean cosine distance to the k nearest images (rows of `sims`: similarities, best first)."""
    k = max(1, min(k, sims.shape[1]))
    return 1.0 - sims[:, :k].mean(1)


def flagged(scores: np.ndarray, far: float = FAR, top_share: float = TOP_SHARE) -> np.ndarray:
    """Indices of the scores above median + far robust stds and in the top `top_share`, most outlying first."""
    if len(scores) < 5:
        return np.zeros(0, dtype=np.int64)
    median = np.median(scores)
    spread = 1.4826 * np.median(np.abs(scores - median)) or scores.std() or 1.0
    out = np.flatnonzero(scores > median + far * spread)
    return out[np.argsort(-scores[out])][:max(1, round(top_share * len(scores)))]
