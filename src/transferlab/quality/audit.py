"""`audit`: near-duplicates, suspected label errors and outliers of one folder, from its backbone features and
out-of-sample class probabilities (the head fit's), as a `QualityReport`.

One neighbour search over every image (train and val together) serves the duplicate check and the outlier
scores; cleanlab judges the labels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from transferlab.quality.duplicates import NEIGHBOURS, near_duplicates
from transferlab.quality.labels import label_issues
from transferlab.quality.neighbours import nearest, normalised
from transferlab.quality.outliers import K, energy_scores, flagged, knn_scores
from transferlab.quality.report import QualityFinding, QualityReport


def audit(root: str, class_names: Sequence[str], paths: Sequence[str], splits: Sequence[str],
          labels: np.ndarray, features: np.ndarray, probs: np.ndarray | None,
          source_logits: np.ndarray | None = None) -> QualityReport:
    """`paths` relative to `root` (a split's folder first, e.g. `train/ants/1.jpg`), `splits` ("train"/"val")
    and `labels` per image, `features` (N, D) from the backbone, `probs` (N, classes) out-of-sample class
    probabilities (None: no label check), `source_logits` (N, source classes) the pretrained classifier's
    logits (None: outliers by k-NN distance)."""
    times = {}
    start = time.perf_counter()
    x = normalised(features)
    sims, idx = nearest(x, x, max(NEIGHBOURS, K), same=True)
    times["neighbours"] = time.perf_counter() - start
    report = QualityReport(root, {s: int(sum(1 for v in splits if v == s)) for s in ("train", "val")})

    start = time.perf_counter()
    absolute = [f"{root}/{p}" for p in paths]
    duplicates = near_duplicates(x, absolute, knn=(sims, idx))
    report.duplicates_inconclusive = duplicates.inconclusive
    for group in _groups(duplicates.pairs, len(paths)):
        members, score = group
        kinds = {splits[i] for i in members}
        ordered = sorted(members, key=lambda i: (splits[i] != "val", paths[i]))  # a leak's val file first
        kind = "leak" if kinds == {"train", "val"} else "duplicate"
        if kind == "duplicate":
            ordered = sorted(members, key=lambda i: paths[i])
        report.findings.append(QualityFinding(kind, [paths[i] for i in ordered], score,
                                              splits=[splits[i] for i in ordered]))
    times["duplicates"] = time.perf_counter() - start

    start = time.perf_counter()
    if probs is not None:
        for issue in label_issues(labels, probs):
            report.findings.append(QualityFinding("label", [paths[issue.index]], issue.quality,
                                                  class_names[issue.given], class_names[issue.suggested]))
    times["labels"] = time.perf_counter() - start
    scores = knn_scores(sims) if source_logits is None else energy_scores(source_logits)
    for i in flagged(scores):
        report.findings.append(QualityFinding("outlier", [paths[i]], float(scores[i])))
    report.findings.sort(key=lambda f: ({"leak": 0, "duplicate": 1, "label": 2, "outlier": 3}[f.kind],
                                        -f.score if f.kind in ("leak", "duplicate", "outlier") else f.score))
    report.seconds = {k: round(v, 3) for k, v in times.items()}
    report.outlier_ranking = [paths[i] for i in np.argsort(-scores)]  # every image, most outlying first
    return report


def _groups(pairs, n: int) -> list[tuple[list[int], float]]:
    """Connected groups of the pairs (a twin of a twin is one group), each with its best pixel similarity."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    best: dict[int, float] = {}
    for p in pairs:
        parent[find(p.a)] = find(p.b)
    members: dict[int, list[int]] = {}
    for p in pairs:
        for i in (p.a, p.b):
            members.setdefault(find(i), [])
    for i in range(n):
        r = find(i)
        if r in members:
            members[r].append(i)
    for p in pairs:
        r = find(p.a)
        best[r] = max(best.get(r, 0.0), p.pixel_similarity)
    return [(sorted(m), best[r]) for r, m in members.items()]
