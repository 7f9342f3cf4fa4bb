"""How long does `strategy=frozen`'s head fit take once the features are cached, against the baseline probe?

    python bench/head_fit.py                                    # hymenoptera and flowers12, lite0/1/2
    python bench/head_fit.py --data /path/to/images --backbones efficientnet_lite0 --rounds 5

For every data folder and backbone, on the cached features of `strategy=frozen` (extracted first when missing),
alternating `--rounds` times in one process (run it alone: two processes on two cores thrash):

- `head fit`: `fit_linear_head` as a run calls it (the config's `strategy.head_fit`, the pretrained classifier's
  candidates included), on the probe's folds (seed 0; a run draws them with its `seed`);
- `features only`: the same with `strategy.head_fit.source_classes=[]`;
- `probe`: scikit-learn's `LogisticRegressionCV` as `bench/accuracy.py` runs it (its default tolerance), and once,
  untimed, its refit at the C it chose converged to tol 1e-8 (was the probe's edge its own early stop?);
- untimed, `head fit` again with the cross-validation's folds drawn from seeds 1..`--fold-seeds` (the timed fits
  use seed 0, the probe's folds): how much of a frozen head's val accuracy is the luck of one split.

Writes its entry of `bench/results/head_fit/latest.json` (+ `latest.md`): each arm's seconds (min and median over
the rounds), the val accuracy and what the fit chose. A script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from _results import write_latest
from accuracy import DEFAULT_DATA, frozen_features, probe_classifier

from transferlab.evaluation.stats import mean_std


def _accuracy(weight: torch.Tensor, bias: torch.Tensor, features) -> float:
    logits = features.val_features @ weight.T + bias
    return float((logits.argmax(1) == features.val_labels).float().mean())


def measure(data: str, backbone: str, rounds: int, fold_seeds: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    from transferlab.models.linear_fit import fit_linear_head

    model, features = frozen_features(data, backbone)
    settings = model.strategy.head_fit
    rows, labels, groups = features.fit_arrays()
    classes = len(model.class_names)

    def head_fit(source_classes, seed: int = 0) -> tuple[float, dict]:
        start = time.perf_counter()
        fit = fit_linear_head(rows, labels, classes, l2=settings["l2"], folds=settings["folds"],
                              max_iter=settings["max_iter"], groups=groups, source=model.source_head,
                              source_classes=source_classes, seed=seed)
        seconds = time.perf_counter() - start
        return seconds, {"val_acc": _accuracy(fit.weight, fit.bias, features), "l2": fit.l2, "inputs": fit.inputs,
                         "cv_accuracy": fit.cv_accuracy, "candidates": fit.candidates}

    def probe() -> tuple[float, dict]:
        x, y = features.train_features[0].numpy(), features.train_labels.numpy()
        start = time.perf_counter()
        clf = probe_classifier().fit(x, y)
        seconds = time.perf_counter() - start
        c = float(clf[-1].C_[0])
        exact = LogisticRegression(C=c, tol=1e-8, max_iter=100_000).fit(clf[0].transform(x), y)
        val_x, val_y = features.val_features.numpy(), features.val_labels.numpy()
        return seconds, {"val_acc": float((clf.predict(val_x) == val_y).mean()), "C": c,
                         "converged_val_acc": float((exact.predict(clf[0].transform(val_x)) == val_y).mean())}

    arms = {"head fit": lambda: head_fit(settings.get("source_classes") or ()),
            "features only": lambda: head_fit(()),
            "probe": probe}
    times: dict[str, list[float]] = {name: [] for name in arms}
    facts: dict[str, dict] = {}
    for _ in range(rounds):
        for name, arm in arms.items():
            seconds, facts[name] = arm()
            times[name].append(seconds)
    source_classes = settings.get("source_classes") or ()
    facts["head fit"]["fold_seeds_val_acc"] = [head_fit(source_classes, seed)[1]["val_acc"]
                                               for seed in range(1, fold_seeds + 1)]
    return [{"data": Path(data).name, "backbone": backbone, "arm": name, "seconds": times[name],
             "min_s": min(times[name]), "median_s": statistics.median(times[name]), **facts[name]} for name in arms]


def _chose(row: dict) -> str:
    if row["arm"] == "probe":
        return f"C={row['C']:g}; converged at that C: {row['converged_val_acc']:.4f}"
    cv = "" if row["cv_accuracy"] is None else f", CV {row['cv_accuracy']:.4f}"
    spread = row.get("fold_seeds_val_acc")
    if spread:
        mean, std, _ = mean_std(spread, ddof=0)  # the population std over the splits, as this table always had
        spread = (f"; folds drawn with seeds 1-{len(spread)}: val {mean:.4f} ± {std:.4f} "
                  f"({min(spread):.4f}-{max(spread):.4f})")
    return f"{row['inputs']}, l2 {row['l2']:g}{cv}{spread or ''}"


def table(rows: list[dict], command: str) -> list[str]:
    lines = [f"`{command}`", "", "| data | backbone | arm | seconds (min / median) | val acc | chose |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['backbone']} | {r['arm']} | {r['min_s']:.2f} / {r['median_s']:.2f} | "
                     f"{r['val_acc']:.4f} | {_chose(r)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None, help="an image folder (repeatable)")
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the arms (timings: min, median)")
    parser.add_argument("--fold-seeds", type=int, default=10, help="other CV splits to refit the head with")
    args = parser.parse_args()
    datasets = [str(Path(d).resolve()) for d in (args.data or [d for d in DEFAULT_DATA if d.is_dir()])]
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for data in datasets:
        for backbone in args.backbones.split(","):
            print(f"[head_fit] {Path(data).name} {backbone}", flush=True)
            rows += measure(data, backbone, args.rounds, args.fold_seeds)
    write_latest("head_fit", {"argv": sys.argv[1:], "rows": rows},
                 table(rows, f"python bench/head_fit.py {shlex.join(sys.argv[1:])}"), meta={"stamp": stamp})


if __name__ == "__main__":
    main()
