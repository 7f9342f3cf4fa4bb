"""What accuracy can a folder give, and at what cost? The baseline probe and transferlab's strategies, side by side.

    python bench/accuracy.py                                   # hymenoptera and flowers12 from ../shared/datasets
    python bench/accuracy.py --data /path/to/images --backbones efficientnet_lite0,efficientnet_lite2
    python bench/accuracy.py --arms probe,frozen,lpft,finetune --seeds 1,2,3 --epochs 10
    python bench/accuracy.py --arms finetune,finetune+strong,lpft+strong,no-ema:finetune+strong \
        --arm-extra 'no-ema=recipe.ema_decay=null'

For every data folder and backbone, one after the other (run it alone: two trainings on two cores thrash):

- `probe`, the baseline: scikit-learn's `LogisticRegressionCV` (standardised features, C by 5-fold CV on the
  training features) on the same cached features `strategy=frozen` uses, scored on val;
- every other arm, `[label:]strategy[+recipe]`, is `python train.py dataset=folder dataset.root=<data> backbone=<b>
  strategy=<strategy> recipe=<recipe>` (recipe tutorial when not named; plus `--extra` overrides and the
  `--arm-extra` of its label) in its own process, once per seed, reading its `summary.json`.

Writes the entry of these arguments in `bench/results/accuracy/latest.json` (+ `latest.md`; bench/_results.py):
best val accuracy (mean ± std over seeds, and each seed's), wall time (with `--cold-cache`, feature extraction
included), the time at which a run's val accuracy first reached the probe's (and, with a `finetune` arm, that
arm's mean best), training images/s, and for head fits the fit's own seconds. A script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _results import write_latest

from transferlab.evaluation.stats import format_mean_std

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT_DATA = [SHARED / "hymenoptera_data", SHARED / "flowers12"]
PROBE_C = [10.0 ** (e / 2) for e in range(-8, 5)]  # the probe's grid: C 1e-4 .. 100 in half-decades


def frozen_features(data: str, backbone: str):
    """(model, cached features) of `strategy=frozen` on `data` with `backbone`: the features are built and cached
    when missing, exactly as a run would."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from transferlab.config import register_resolvers
    from transferlab.tasks.train import build, feature_data

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=folder", f"dataset.root={data}", f"backbone={backbone}",
                                          "strategy=frozen", f"paths.root_dir={ROOT}",
                                          f"paths.output_dir={ROOT / 'outputs' / 'bench' / 'probe'}"])
    built = build(cfg)
    return built.model, feature_data(built.settings, built.model, built.datamodule, torch.device("cpu"))


def probe_classifier(tol: float = 1e-4):
    """The baseline: standardised features, LogisticRegressionCV over PROBE_C, 5 stratified folds (seed 0),
    scikit-learn's default tolerance."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=PROBE_C, cv=StratifiedKFold(5, shuffle=True, random_state=0), max_iter=5000, scoring="accuracy", tol=tol))


def probe(data: str, backbone: str) -> dict:
    """The baseline on the cached features of `strategy=frozen` (built here when missing)."""
    _, features = frozen_features(data, backbone)
    x, y = features.train_features[0].numpy(), features.train_labels.numpy()
    start = time.perf_counter()
    clf = probe_classifier().fit(x, y)
    seconds = time.perf_counter() - start
    acc = float((clf.predict(features.val_features.numpy()) == features.val_labels.numpy()).mean())
    return {"val_acc": acc, "fit_s": round(seconds, 2), "C": float(clf[-1].C_[0]),
            "train_images": int(len(y)), "val_images": int(len(features.val_labels)), "cache_hit": features.cache_hit}


def parse_arm(arm: str) -> tuple[str, str, str]:
    """`[label:]strategy[+recipe]` -> (label, strategy, recipe)."""
    label, _, spec = arm.rpartition(":")
    strategy, _, recipe = spec.partition("+")
    return label or arm, strategy, recipe or "tutorial"


def run_arm(data: str, backbone: str, arm: str, seed: int, epochs: int | None, extra: list[str], workdir: Path) -> dict:
    _, strategy, recipe = parse_arm(arm)
    dataset = [] if any(o.startswith("dataset=") for o in extra) else ["dataset=folder"]
    overrides = [*dataset, f"dataset.root={data}", f"backbone={backbone}", f"strategy={strategy}", f"recipe={recipe}",
                 f"seed={seed}", "logger=none", "callbacks.dashboards.max_images=0", f"hydra.run.dir={workdir}", *extra]
    if epochs is not None:
        overrides.append(f"trainer.max_epochs={epochs}")
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    print("  $", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    summary_file = workdir / "summary.json"
    if proc.returncode != 0 or not summary_file.is_file():
        return {"status": "failed", "error": proc.stderr.strip().splitlines()[-1:] or ["?"], "command": shlex.join(cmd)}
    summary = json.loads(summary_file.read_text())
    return {"status": summary.get("status"), "val_acc": summary["val/acc_best"], "wall_s": summary["wall_time_s"],
            "images_per_s": summary.get("train_images_per_s"), "history": summary.get("val_history", []),
            "head_fit_s": (summary.get("head_fit") or {}).get("seconds"), "command": shlex.join(cmd)}


def reached(history: list[dict], target: float) -> float | None:
    """Seconds on the run's clock at which val accuracy first reached `target` (None: never)."""
    return next((h["elapsed_s"] for h in history if h["val_acc"] >= target - 1e-9), None)


def mark_finetune_best(rows: list[dict]) -> None:
    """The issue's LP-FT yardstick: when did each run first reach the `finetune` arm's mean best accuracy?"""
    finetune = next((r for r in rows if r["arm"] == "finetune"), None)
    ok = [x for x in (finetune or {}).get("runs", []) if x.get("status") == "ok"]
    if not ok:
        return
    target = statistics.mean(x["val_acc"] for x in ok)
    for row in rows:
        for run in row["runs"]:
            if run.get("history"):
                run["reached_finetune_s"] = reached(run["history"], target)


HEADER = ["data", "backbone", "arm", "best val acc", "per seed", "wall time (s)", "reached probe at (s)",
          "reached finetune's best at (s)", "images/s", "head fit (s)"]


def table(results: list[dict], command: str) -> list[str]:
    """The Markdown table: one row per data x backbone x arm, seeds aggregated."""
    lines = [f"`{command}`", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in results:
        ok = [x for x in r["runs"] if x.get("status", "ok") == "ok"]
        if r["arm"] == "probe":
            p = ok[0]
            cells = [f"probe (sklearn, C={p['C']:.3g})", f"{p['val_acc']:.4f}", "", "", "", "", "", str(p["fit_s"])]
        else:
            accs = [x["val_acc"] for x in ok]
            reach = [x["reached_probe_s"] for x in ok if "reached_probe_s" in x]
            reach_ft = [x["reached_finetune_s"] for x in ok if "reached_finetune_s" in x]
            fits = [x["head_fit_s"] for x in ok if x.get("head_fit_s") is not None]
            cells = [r["arm"] + ("" if len(ok) == len(r["runs"]) else f" ({len(r['runs']) - len(ok)} failed)"),
                     format_mean_std(accs), ", ".join(f"{a:.4f}" for a in accs),
                     format_mean_std([x["wall_s"] for x in ok], 1),
                     ", ".join("never" if v is None else f"{v:.0f}" for v in reach),
                     ", ".join("never" if v is None else f"{v:.0f}" for v in reach_ft),
                     format_mean_std([x["images_per_s"] or 0.0 for x in ok], 1),
                     format_mean_std(fits, 2) if fits else ""]
        lines.append("| " + " | ".join([r["data"], r["backbone"], *cells]) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None, help="an image folder (repeatable)")
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--arms", default="probe,frozen,lpft,finetune")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the config's)")
    parser.add_argument("--extra", default="", help="overrides for every train.py arm, e.g. 'dataset.batch_size=16'")
    parser.add_argument("--arm-extra", action="append", default=[],
                        help="overrides for one arm: 'lpft=trainer.max_epochs=5 ...' (repeatable)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="every run builds its feature cache in its own directory, so the wall time of a head "
                             "fit (frozen, lpft) includes the feature extraction a first run pays")
    parser.add_argument("--worker-probe", nargs=2, metavar=("DATA", "BACKBONE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_probe:
        print(json.dumps(probe(*args.worker_probe)))
        return

    datasets = [str(Path(d).resolve()) for d in (args.data or [d for d in DEFAULT_DATA if d.is_dir()])]
    backbones = args.backbones.split(",")
    arms = args.arms.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    arm_extra = {a: shlex.split(o) for a, _, o in (s.partition("=") for s in args.arm_extra)}
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    results = []
    for data in datasets:
        for backbone in backbones:
            base = {"data": Path(data).name, "backbone": backbone}
            probe_acc = None
            if "probe" in arms:
                print(f"[accuracy] {base['data']} {backbone} probe", flush=True)
                proc = subprocess.run([sys.executable, __file__, "--worker-probe", data, backbone], cwd=ROOT,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-2000:])
                p = json.loads(proc.stdout.strip().splitlines()[-1])
                probe_acc = p["val_acc"]
                results.append({**base, "arm": "probe", "runs": [p]})
            for arm in (a for a in arms if a != "probe"):
                runs = []
                for seed in seeds:
                    print(f"[accuracy] {base['data']} {backbone} {arm} seed {seed}", flush=True)
                    label = parse_arm(arm)[0]
                    workdir = ROOT / "outputs" / "bench" / f"accuracy-{stamp}" / base["data"] / backbone
                    workdir = workdir / label.replace("+", "_") / str(seed)
                    overrides = shlex.split(args.extra) + arm_extra.get(label, [])
                    if args.cold_cache:
                        overrides.append(f"paths.cache_dir={workdir / 'cache'}")
                    run = run_arm(data, backbone, arm, seed, args.epochs, overrides, workdir)
                    if probe_acc is not None and run.get("history"):
                        run["reached_probe_s"] = reached(run["history"], probe_acc)
                    runs.append(run)
                    print(f"    -> {json.dumps({k: v for k, v in run.items() if k not in ('history', 'command')})}",
                          flush=True)
                results.append({**base, "arm": arm, "runs": runs})
            mark_finetune_best([r for r in results if r["data"] == base["data"] and r["backbone"] == backbone])

    write_latest("accuracy", {"argv": sys.argv[1:], "results": results},
                 table(results, f"python bench/accuracy.py {shlex.join(sys.argv[1:])}"), meta={"stamp": stamp})


if __name__ == "__main__":
    main()
