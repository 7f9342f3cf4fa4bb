"""Is one configuration better than another on the same validation images? Small pure functions.

- `paired_bootstrap_ci(correct_a, correct_b, n_boot, seed)` -> (diff, lo, hi): the accuracy difference A - B
  and its percentile bootstrap interval, resampling images *paired* (the same resampled images for A and B), and
  repetitions (seeds, folds) too when there are several;
- `mcnemar_exact(correct_a, correct_b)` -> p: the exact McNemar test, a two-sided binomial test on the
  discordant images (`scipy.stats.binomtest`);
- `verdict(...)` -> one sentence saying what the two mean together;
- `paired_comparison(correct_a, correct_b, name_a, name_b)` -> `PairedComparison`: all of the above at once
  (interval, test, discordant counts, sentence), what the sweep report and the benchmarks print;
- `mean_std(values)` -> (mean, sample standard deviation, n) and `format_mean_std(values)` -> "0.9903 ± 0.0024":
  the spread of a metric over repetitions (seeds, folds);
- the `val_predictions.csv` format every training job writes (`PREDICTION_COLUMNS`, `predictions_csv`,
  `read_predictions`), so the writer (a callback) and the reader (the sweep report) share one definition.

`correct_*` are 0/1 (or boolean) arrays: 1 where the configuration classified the image correctly. One
repetition: shape (n_images,). Several repetitions on the same images (seeds): shape (n_reps, n_images), row i
of A paired with row i of B. Repetitions on different images (folds): a list of 1-D arrays, one per
repetition, with `val_sets` naming which image set each repetition used.

Why a paired analysis: both configurations classified the very same images, so most of the image-to-image
variation (easy and hard images) cancels in the difference; two separate intervals per configuration would be
much wider and would not answer "is A better than B on this val set".
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- val_predictions.csv ----------------------------------------------------------------------------------
PREDICTION_COLUMNS = ("file", "true", "predicted", "probability", "true_probability")


def predictions_csv(rows: Sequence[tuple[str, str, str, float, float]]) -> str:
    """The text of a val_predictions.csv: one row (file, true class, predicted class, probability of the
    predicted class, probability of the true class) per validation image."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for file, true, predicted, p_pred, p_true in rows:
        writer.writerow([file, true, predicted, f"{p_pred:.6f}", f"{p_true:.6f}"])
    return out.getvalue()


def read_predictions(path: str | Path) -> dict[str, tuple[str, str]]:
    """{file: (true class, predicted class)} from a val_predictions.csv; ValueError when it is not one."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"file", "true", "predicted"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a val_predictions.csv (no column {', '.join(sorted(missing))})")
        out: dict[str, tuple[str, str]] = {}
        for row in reader:
            if row["file"] in out:
                raise ValueError(f"{path}: {row['file']} appears twice")
            out[row["file"]] = (row["true"], row["predicted"])
    return out


# --- statistics -------------------------------------------------------------------------------------------
def _repetitions(correct: np.ndarray | Sequence) -> list[np.ndarray]:
    """One 1-D float array per repetition."""
    if isinstance(correct, np.ndarray) or (len(correct) and np.isscalar(correct[0])):
        arr = np.asarray(correct, dtype=float)
        if arr.ndim == 1:
            return [arr]
        if arr.ndim == 2:
            return list(arr)
        raise ValueError(f"correctness must be 1-D (images) or 2-D (repetitions x images), not {arr.shape}")
    return [np.asarray(c, dtype=float).ravel() for c in correct]


def _paired(correct_a, correct_b) -> tuple[list[np.ndarray], list[np.ndarray]]:
    a, b = _repetitions(correct_a), _repetitions(correct_b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError("paired comparison: A and B need the same repetitions on the same images "
                         f"({[x.size for x in a]} vs {[y.size for y in b]} images per repetition)")
    if not a or any(x.size == 0 for x in a):
        raise ValueError("paired comparison: no images")
    return a, b


def discordant(correct_a, correct_b) -> tuple[int, int]:
    """(images only A got right, images only B got right), pooled over repetitions (repetition i of A with
    repetition i of B)."""
    a, b = _paired(correct_a, correct_b)
    a_only = sum(int(np.sum((x > 0.5) & (y < 0.5))) for x, y in zip(a, b, strict=True))
    b_only = sum(int(np.sum((x < 0.5) & (y > 0.5))) for x, y in zip(a, b, strict=True))
    return a_only, b_only


def mcnemar_exact(correct_a, correct_b) -> float:
    """Two-sided exact McNemar test: under "A and B are equally accurate", each image that exactly one of
    them got right is A's with probability 1/2, so the number of A-only images among the discordant ones is
    Binomial(discordant, 1/2) (`scipy.stats.binomtest`). No discordant image: p = 1.

    With repetitions, the discordant images are pooled: repetition i of A is paired with repetition i of B and
    their discordant counts are added. With seeds the same image then counts once per repetition; those counts
    are not independent (an image hard for A tends to be hard for A under every seed), so the pooled p-value
    reads as "how consistently does A beat B over these runs", and is optimistic as a statement about
    new images; the bootstrap interval, which resamples images once per draw for all repetitions, is the
    more careful of the two."""
    from scipy.stats import binomtest  # here, not at import: scipy.stats costs most of a second

    a_only, b_only = discordant(correct_a, correct_b)
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_ci(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0, level: float = 0.95,
                        val_sets: Sequence[Hashable] | None = None) -> tuple[float, float, float]:
    """(diff, lo, hi): accuracy of A minus accuracy of B, and its `level` percentile bootstrap interval.

    diff is the mean over repetitions of each repetition's accuracy difference (one repetition: just the
    accuracy difference).

    The bootstrap scheme (hand-written with numpy: scipy.stats.bootstrap resamples one level only, and a
    vectorised draw keeps 10,000 resamples of a few thousand images well under a second):

    - one repetition: draw n image indices with replacement, the same ones for A and B (paired), and take
      the mean of correct_a - correct_b over them; `rng = np.random.default_rng(seed)`, the indices are
      `rng.integers(0, n, size=(n_boot, n))` (drawn in chunks, which yields the same stream);
    - several repetitions (two levels): first draw the repetitions with replacement (pairs: repetition i of A
      stays with repetition i of B), then the images. Repetitions that used the same images (seeds on one val
      set) share one image resample per draw, because their images are the same sample of the world: resampling
      them independently would pretend that R seeds had seen R times as many images. Repetitions on different
      images (`val_sets`: folds) each get their own. The statistic is the mean over the drawn repetitions of
      the accuracy difference on the drawn images. This carries both sources of uncertainty: which images
      ended up in the val set, and which seeds were run. With few repetitions (3-5) the repetition level is
      coarse and the interval is, if anything, narrow; treat it as indicative.

    `val_sets`: one label per repetition naming its image set (default: all the same). Interval: the
    (1-level)/2 and (1+level)/2 percentiles of the resampled statistic (numpy's default linear interpolation).
    """
    a, b = _paired(correct_a, correct_b)
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot={n_boot} (>= 1), level={level} (between 0 and 1)")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    reps = len(diffs)
    labels = list(val_sets) if val_sets is not None else [0] * reps
    if len(labels) != reps:
        raise ValueError(f"val_sets: {len(labels)} labels for {reps} repetitions")
    groups: dict[Hashable, list[int]] = {}
    for r, label in enumerate(labels):
        groups.setdefault(label, []).append(r)
    for members in groups.values():
        if len({diffs[r].size for r in members}) != 1:
            raise ValueError("repetitions labelled with the same val set have different numbers of images")
    diff = float(np.mean([d.mean() for d in diffs]))

    rng = np.random.default_rng(seed)
    largest = max(d.size for d in diffs)
    chunk = max(1, min(n_boot, 4_000_000 // max(largest, 1)))  # bounds memory: chunk x images indices
    stats = np.empty(n_boot)
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        if reps == 1:
            weights = np.ones((size, 1))
        else:  # how often each repetition is drawn, / reps
            drawn = rng.integers(0, reps, size=(size, reps))
            weights = np.stack([(drawn == r).sum(axis=1) for r in range(reps)], axis=1) / reps
        total = np.zeros(size)
        for members in groups.values():
            d = np.stack([diffs[r] for r in members])  # (reps in group, n)
            n = d.shape[1]
            idx = rng.integers(0, n, size=(size, n))
            per_image = weights[:, members] @ d  # (size, n): the drawn repetitions' weighted differences
            total += np.take_along_axis(per_image, idx, axis=1).mean(axis=1)
        stats[done:done + size] = total
        done += size
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return diff, float(lo), float(hi)


def format_p(p: float) -> str:
    """0.6912 -> '0.69', 0.00312 -> '0.003', 2e-05 -> '< 0.001'."""
    if not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def verdict(name_a: str, name_b: str, diff: float, lo: float, hi: float, p: float, level: float = 0.95,
            alpha: float = 0.05, what: str = "this val set") -> str:
    """One sentence, e.g. "`frozen` vs `finetune`: +0.7 points, 95% CI [-1.9, +3.3], p = 0.69: no evidence
    of a difference on this val set". Points are percentage points of accuracy (A - B).

    The conclusion needs both the test (p < alpha) and the interval (excluding 0) to agree; when they do not
    (it happens near the threshold: they are different procedures) it says so rather than picking one."""
    p_text = format_p(p)
    p_text = f"p {p_text}" if p_text.startswith("<") else f"p = {p_text}"
    numbers = (f"`{name_a}` vs `{name_b}`: {diff * 100:+.1f} points, {level:.0%} CI "
               f"[{lo * 100:+.1f}, {hi * 100:+.1f}], {p_text}")
    significant = p < alpha
    excludes_zero = lo > 0 or hi < 0
    if significant and excludes_zero:
        better = name_a if diff > 0 else name_b
        return f"{numbers}: `{better}` is better on {what}"
    if not significant and not excludes_zero:
        return f"{numbers}: no evidence of a difference on {what}"
    return (f"{numbers}: borderline (the test and the interval disagree); more images or repetitions "
            f"would tell")


@dataclass(frozen=True)
class PairedComparison:
    """A against B on the same images: `diff`, [`lo`, `hi`] (accuracy A - B and its bootstrap interval), `p` (exact
    McNemar), `a_only`/`b_only` (images only A, only B got right, pooled over repetitions) and `sentence` (the
    `verdict`)."""

    diff: float
    lo: float
    hi: float
    p: float
    a_only: int
    b_only: int
    sentence: str


def paired_comparison(correct_a, correct_b, name_a: str = "A", name_b: str = "B", *, n_boot: int = 10_000,
                      seed: int = 0, level: float = 0.95, val_sets: Sequence[Hashable] | None = None,
                      alpha: float = 0.05, what: str = "this val set") -> PairedComparison:
    """The whole paired comparison of A and B: `paired_bootstrap_ci`, `mcnemar_exact`, `discordant` and the
    `verdict` sentence naming them `name_a` and `name_b` (arguments as those functions take them)."""
    diff, lo, hi = paired_bootstrap_ci(correct_a, correct_b, n_boot=n_boot, seed=seed, level=level, val_sets=val_sets)
    p = mcnemar_exact(correct_a, correct_b)
    a_only, b_only = discordant(correct_a, correct_b)
    sentence = verdict(name_a, name_b, diff, lo, hi, p, level=level, alpha=alpha, what=what)
    return PairedComparison(diff, lo, hi, p, a_only, b_only, sentence)


# --- a metric over repetitions ------------------------------------------------------------------------------
def mean_std(values: Iterable[float], ddof: int = 1) -> tuple[float, float, int]:
    """(mean, standard deviation, n) of `values`: the sample standard deviation (n - 1; `ddof=0`: the population
    one, n), 0.0 for a single value. ValueError when there is none.

    The standard library's `statistics.fmean` and `statistics.stdev`/`pstdev` (exactly rounded), so that a
    job's summary.json mean and std are the numbers they always were."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std: no values")
    if ddof not in (0, 1):
        raise ValueError(f"mean_std: ddof={ddof} (0 or 1)")
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return mean, 0.0, 1
    return mean, statistics.stdev(vals) if ddof == 1 else statistics.pstdev(vals), len(vals)


def format_mean_std(values: Sequence[float], digits: int = 4, ddof: int = 1) -> str:
    """'0.9903 ± 0.0024' (mean ± std, `mean_std`); one value alone: '0.9903'; none: 'n/a'."""
    if not len(values):
        return "n/a"
    mean, std, n = mean_std(values, ddof=ddof)
    if n == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
