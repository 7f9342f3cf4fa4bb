"""Suspected label errors, by confident learning (cleanlab), from out-of-sample predicted probabilities.

Training images are scored by the head fit's out-of-fold predictions (a head that never saw them), validation
images by the head fitted on the training split. cleanlab's `find_label_issues` estimates each class's noise
from these probabilities and flags the images whose given label the evidence contradicts; we only rank and
word what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssue:
    index: int
    given: int
    suggested: int
    quality: float  # cleanlab's label quality score (self-confidence): low = likely wrong


def label_issues(labels: np.ndarray, probs: np.ndarray) -> list[LabelIssue]:
    """The images whose label cleanlab finds at issue, worst first. Needs every class with 2+ rows."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(1, keepdims=True)
    if len(labels) < 2 or np.bincount(labels, minlength=probs.shape[1]).min() < 2:
        return []
    # prune_by_class: per given class, the images with the lowest probability of it, as many as cleanlab estimates
    # are mislabelled in that class. On planted flips (bench/data_quality.py, 3 seeds on each of two folders) it
    # finds 0.83 (flowers12) and 0.89 (hymenoptera) of them, where "prune_by_noise_rate" finds 0.77 and 0.89 and
    # "both" 0.71 and 0.89, at a precision >= 0.8 on both folders.
    # n_jobs=1: cleanlab would fork a worker pool, and a fork of a process running torch threads can deadlock
    flagged = find_label_issues(labels, probs, filter_by="prune_by_class", n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    suggested = probs.argmax(1)
    issues = [LabelIssue(int(i), int(labels[i]), int(suggested[i]), float(quality[i]))
              for i in np.flatnonzero(flagged)]
    return sorted(issues, key=lambda x: x.quality)
