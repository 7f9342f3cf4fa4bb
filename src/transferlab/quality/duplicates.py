"""Near-duplicate pairs: candidates from backbone features, each confirmed by its pixels.

Every image's nearest neighbours by centred cosine (neighbours.py) are candidates; a candidate is a duplicate
only if its pixels agree too (thumbnails.py), so another photo of the same scene, close in features, is not
called one. Thumbnails are decoded only for images that are in some candidate pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transferlab.quality.neighbours import nearest
from transferlab.quality.thumbnails import similarity, thumbnails

# Candidates: each image's NEIGHBOURS nearest others at centred cosine >= MIN_FEATURE (hymenoptera, Lite0: a
# perturbed twin's cosine to its original 0.455-1.0, and it was the nearest neighbour every time).
NEIGHBOURS, MIN_FEATURE = 5, 0.35
# Confirmed: thumbnail similarity >= MIN_PIXEL (twins >= 0.905, other photos <= 0.683 in a controlled test; on
# the whole of hymenoptera two different photos reach 0.80 and 0.74) and at least MARGIN above what each image
# typically reaches with its feature neighbours (the median over them): in a folder whose images all look alike
# at thumbnail scale (elpv's solar cells: different cells correlate at 0.98-0.998) pixels cannot confirm
# anything, and nothing is called a duplicate there (`inconclusive` counts the images this applies to).
MIN_PIXEL, MARGIN = 0.88, 0.15


@dataclass(frozen=True)
class Pair:
    a: int  # indices into the image list, a < b
    b: int
    feature_similarity: float
    pixel_similarity: float


@dataclass
class Duplicates:
    pairs: list[Pair]  # confirmed, most alike first
    inconclusive: int  # images whose typical neighbour is already within MARGIN of MIN_PIXEL: pixels cannot tell


def near_duplicates(features: np.ndarray, paths: Sequence[str], neighbours: int = NEIGHBOURS,
                    min_feature: float = MIN_FEATURE, min_pixel: float = MIN_PIXEL, margin: float = MARGIN,
                    knn: tuple[np.ndarray, np.ndarray] | None = None) -> Duplicates:
    """Confirmed near-duplicate pairs among `paths` (features: `normalised` rows in the same order). `knn`: the
    rows' (similarities, indices) against themselves, if already searched."""
    sims, idx = knn if knn is not None else nearest(features, features, neighbours, same=True)
    candidates: dict[tuple[int, int], float] = {}
    neighbours_of: dict[int, list[int]] = {}
    for i in range(len(paths)):
        for s, j in zip(sims[i, :neighbours], idx[i, :neighbours], strict=True):
            if j < 0:
                continue
            neighbours_of.setdefault(i, []).append(int(j))
            if s >= min_feature:
                key = (min(i, int(j)), max(i, int(j)))
                candidates[key] = max(candidates.get(key, -1.0), float(s))
    thumbs: dict[int, np.ndarray | None] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in thumbs:
            try:
                thumbs[i] = thumbnails(paths[i])
            except OSError:  # unreadable now: the doctor's bad-file checks report it
                thumbs[i] = None
        return thumbs[i]

    pixel: dict[tuple[int, int], float] = {}
    for a, b in candidates:
        ta, tb = thumb(a), thumb(b)
        if ta is not None and tb is not None:
            pixel[a, b] = similarity(ta, tb)

    def typical(i: int) -> float:  # the median pixel similarity of i to its feature neighbours
        ti = thumb(i)
        values = [pixel.get((min(i, j), max(i, j))) if (min(i, j), max(i, j)) in pixel else
                  (similarity(ti, thumb(j)) if ti is not None and thumb(j) is not None else None)
                  for j in neighbours_of.get(i, [])]
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else -1.0

    typicals = {i: typical(i) for i in {i for pair in pixel for i in pair}}
    pairs = [Pair(a, b, candidates[a, b], ps) for (a, b), ps in pixel.items()
             if ps >= min_pixel and ps - max(typicals[a], typicals[b]) >= margin]
    inconclusive = sum(1 for v in typicals.values() if v > min_pixel - margin)
    return Duplicates(sorted(pairs, key=lambda p: (-p.pixel_similarity, -p.feature_similarity)), inconclusive)
