"""evaluation/stats.py against direct computations: paired bootstrap, exact McNemar, the verdict sentence, the
whole paired comparison, and the mean ± std of repetitions."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy.stats import binomtest

from transferlab.evaluation.stats import (
    PairedComparison,
    discordant,
    format_mean_std,
    format_p,
    mcnemar_exact,
    mean_std,
    paired_bootstrap_ci,
    paired_comparison,
    predictions_csv,
    read_predictions,
    verdict,
)


def pair(n=200, a_only=15, b_only=5, both=150, seed=0):
    """Correctness of A and B on n images: A alone right on a_only, B alone on b_only, both on `both`."""
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:a_only] = True
    b[a_only:a_only + b_only] = True
    a[a_only + b_only:a_only + b_only + both] = b[a_only + b_only:a_only + b_only + both] = True
    order = np.random.default_rng(seed).permutation(n)
    return a[order], b[order]


def test_mcnemar_is_the_two_sided_binomial_test_on_discordant_images():
    a, b = pair()
    assert discordant(a, b) == (15, 5)
    assert mcnemar_exact(a, b) == pytest.approx(binomtest(5, 20, 0.5).pvalue, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(mcnemar_exact(a, b), rel=1e-12)  # symmetric
    assert mcnemar_exact(a, a) == 1.0  # no discordant image


def test_bootstrap_matches_a_direct_numpy_bootstrap_with_the_same_seed():
    a, b = pair()
    diff, lo, hi = paired_bootstrap_ci(a, b, n_boot=5000, seed=7)
    d = a.astype(float) - b.astype(float)
    idx = np.random.default_rng(7).integers(0, len(d), size=(5000, len(d)))
    direct = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    assert diff == pytest.approx(10 / 200)
    assert (lo, hi) == pytest.approx(tuple(direct), abs=1e-12)
    assert lo < diff < hi


def test_bootstrap_is_drawn_in_chunks_without_changing_the_stream():
    a, b = pair(n=3000, a_only=100, b_only=80, both=2500)
    # 4,000,000 // 3000 = 1333 resamples per chunk: 2000 take two chunks
    got = paired_bootstrap_ci(a, b, n_boot=2000, seed=1)
    d = a.astype(float) - b.astype(float)
    idx = np.random.default_rng(1).integers(0, len(d), size=(2000, len(d)))
    assert got[1:] == pytest.approx(tuple(np.percentile(d[idx].mean(axis=1), [2.5, 97.5])), abs=1e-12)


def test_repetitions_on_the_same_images_resample_repetitions_then_shared_images():
    reps = [pair(seed=s) for s in range(3)]
    a = np.stack([r[0] for r in reps]).astype(float)
    b = np.stack([r[1] for r in reps]).astype(float)
    b[2] = a[2]  # the third seed: no difference at all
    diff, lo, hi = paired_bootstrap_ci(a, b, n_boot=3000, seed=3)
    assert diff == pytest.approx((0.05 + 0.05 + 0.0) / 3)
    # the scheme, written out: draw repetitions, then one image resample shared by the drawn repetitions
    rng = np.random.default_rng(3)
    d = a - b
    stats = []
    drawn = rng.integers(0, 3, size=(3000, 3))
    idx = rng.integers(0, 200, size=(3000, 200))
    for k in range(3000):
        stats.append(d[drawn[k]][:, idx[k]].mean())
    assert (lo, hi) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])), abs=1e-12)
    # pooled McNemar: repetition i with repetition i
    assert discordant(a, b) == (30, 10)
    assert mcnemar_exact(a, b) == pytest.approx(binomtest(10, 40, 0.5).pvalue)


def test_repetitions_on_different_images_folds():
    a1, b1 = pair(n=100, a_only=10, b_only=0, both=80)
    a2, b2 = pair(n=120, a_only=0, b_only=0, both=100)
    diff, lo, hi = paired_bootstrap_ci([a1, a2], [b1, b2], n_boot=2000, seed=0, val_sets=["fold0", "fold1"])
    assert diff == pytest.approx((0.1 + 0.0) / 2)
    assert lo <= diff <= hi
    with pytest.raises(ValueError, match="same val set"):
        paired_bootstrap_ci([a1, a2], [b1, b2], val_sets=["x", "x"])


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same repetitions on the same images"):
        paired_bootstrap_ci(np.ones(10), np.ones(11))
    with pytest.raises(ValueError, match="no images"):
        mcnemar_exact(np.ones(0), np.ones(0))


def test_verdict_sentences():
    assert verdict("frozen", "finetune", 0.007, -0.019, 0.033, 0.69) == (
        "`frozen` vs `finetune`: +0.7 points, 95% CI [-1.9, +3.3], p = 0.69: no evidence of a difference on "
        "this val set")
    better = verdict("frozen", "finetune", 0.05, 0.02, 0.08, 0.003)
    assert better.endswith("p = 0.003: `frozen` is better on this val set")
    assert verdict("a", "b", -0.05, -0.08, -0.02, 0.0001).endswith("p < 0.001: `b` is better on this val set")
    assert "borderline" in verdict("a", "b", 0.03, 0.001, 0.06, 0.07)
    assert format_p(0.6912) == "0.69" and format_p(0.00312) == "0.003" and format_p(2e-5) == "< 0.001"


def test_predictions_csv_round_trip(tmp_path):
    path = tmp_path / "val_predictions.csv"
    path.write_text(predictions_csv([("a, b.png", "ant", "bee", 0.75, 0.25), ("c.png", "bee", "bee", 0.5, 0.5)]))
    assert read_predictions(path) == {"a, b.png": ("ant", "bee"), "c.png": ("bee", "bee")}
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a val_predictions.csv"):
        read_predictions(tmp_path / "other.csv")


def test_paired_comparison_is_the_interval_the_test_the_counts_and_the_sentence_at_once():
    reps = [pair(seed=s) for s in range(3)]
    a, b = [r[0] for r in reps], [r[1] for r in reps]
    got = paired_comparison(a, b, "frozen", "finetune", n_boot=2000, seed=5, level=0.9, what="these images")
    assert isinstance(got, PairedComparison)
    diff, lo, hi = paired_bootstrap_ci(a, b, n_boot=2000, seed=5, level=0.9)
    assert (got.diff, got.lo, got.hi) == (diff, lo, hi)
    assert (got.a_only, got.b_only) == (45, 15)
    assert got.p == pytest.approx(binomtest(15, 60, 0.5).pvalue, rel=1e-12)  # reference: scipy, not our code
    assert got.sentence == verdict("frozen", "finetune", diff, lo, hi, got.p, level=0.9, what="these images")
    assert got.sentence.startswith("`frozen` vs `finetune`: +5.0 points, 90% CI [")
    with pytest.raises(AttributeError):
        got.p = 0.5  # frozen: a result, not a scratch pad


def test_paired_comparison_with_folds_passes_the_val_sets_on():
    a1, b1 = pair(n=100, a_only=10, b_only=0, both=80)
    a2, b2 = pair(n=120, a_only=0, b_only=4, both=100)
    got = paired_comparison([a1, a2], [b1, b2], n_boot=1000, val_sets=["fold0", "fold1"])
    assert (got.diff, got.lo, got.hi) == paired_bootstrap_ci([a1, a2], [b1, b2], n_boot=1000,
                                                             val_sets=["fold0", "fold1"])
    assert (got.a_only, got.b_only) == (10, 4)
    assert got.p == pytest.approx(binomtest(10, 14, 0.5).pvalue, rel=1e-12)
    assert got.sentence.startswith("`A` vs `B`: ")


@pytest.mark.parametrize("values", [[0.9903, 0.9879, 0.9927], [1.0, 2.0], [0.1, 0.2, 0.3, 0.4, 0.55, 0.7]])
def test_mean_std_is_the_mean_and_the_sample_std(values):
    mean, std, n = mean_std(values)
    assert n == len(values)
    assert mean == statistics.fmean(values) and mean == pytest.approx(sum(values) / len(values), rel=1e-15)
    assert std == statistics.stdev(values)
    assert std == pytest.approx(float(np.std(values, ddof=1)), rel=1e-12)  # n - 1, not n
    assert mean_std(values, ddof=0)[1] == pytest.approx(float(np.std(values)), rel=1e-12)
    assert mean_std(iter(values)) == (mean, std, n)  # any iterable


def test_mean_std_of_one_value_has_std_zero_and_of_none_refuses():
    assert mean_std([0.75]) == (0.75, 0.0, 1)
    assert mean_std([3]) == (3.0, 0.0, 1) and isinstance(mean_std([3])[0], float)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
    with pytest.raises(ValueError, match="ddof"):
        mean_std([1.0, 2.0], ddof=2)


def test_format_mean_std():
    values = [0.9903, 0.9879, 0.9927]
    assert format_mean_std(values) == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
    assert format_mean_std(values) == "0.9903 ± 0.0024"
    assert format_mean_std([100.0, 110.0, 120.0], 1) == "110.0 ± 10.0"
    assert format_mean_std([0.5]) == "0.5000"
    assert format_mean_std([]) == "n/a"
