"""Nearest neighbours of image features by cosine similarity, exact, with faiss.

Features are centred on the folder's mean before normalising: a CNN's pooled features are non-negative and
share a large common direction, so raw cosines crowd near 1 and hide which images are alike (on hymenoptera,
Lite0: a re-encoded twin's raw cosine can be below an unrelated image's; centred, the twin is the nearest
neighbour of its original every time). Why faiss (`IndexFlatIP`, exact inner product) and not scikit-learn's
`NearestNeighbors(metric="cosine")`: 20k x 1280 features, all against all, 11.6 s against 21.6 s on 2 cores
(the same BLAS product in faiss, plus a top-k that does not sort every row); torch's chunked matmul ties
faiss but needs a hand-written top-k merge.
"""

from __future__ import annotations

import numpy as np


def normalised(features: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows centred on `mean` (default: their own) and scaled to unit length, float32 C-contiguous (faiss)."""
    x = np.asarray(features, dtype=np.float32)
    x = x - (x.mean(0) if mean is None else mean)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def nearest(query: np.ndarray, base: np.ndarray, k: int, same: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (Q, k), indices into `base` (Q, k)) of each query row's k most similar base rows, best
    first; with `same` (query is base), a row is not its own neighbour. Rows must be `normalised`."""
    import faiss

    k = min(k, len(base) - (1 if same else 0))
    if k <= 0 or len(query) == 0:
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    sims, idx = index.search(query, k + 1 if same else k)
    if same:  # drop each row itself (normally first; an exact duplicate may tie with it)
        keep = idx != np.arange(len(query))[:, None]
        sims = np.stack([s[m][:k] for s, m in zip(sims, keep, strict=True)])
        idx = np.stack([i[m][:k] for i, m in zip(idx, keep, strict=True)])
    return sims, idx
