"""Planted faults: how well the deep quality check finds them (`python -m transferlab.data.doctor ROOT --deep`).

For each public folder and planting seed, a copy of the folder gets: 5% of its training images moved to
another class (label errors); 10 val images replaced by near-duplicates of training images (resized 0.5-0.9x,
JPEG quality 50-80, cropped <= 10%, brightness +-15%, mirrored at random: leaks); 5 images of another domain
(scikit-learn's handwritten digits, upscaled) put into class folders (outliers). The check runs on the copy;
precision and recall per kind, and the false pairs on the unplanted folder, go to its entry of
bench/results/data_quality/latest.json (+ latest.md). Alone on the machine: it extracts features.

With `--train frozen lpft_fast`, each planted copy is also trained (`python train.py`) with and without the
check's exclusions (`--write-exclude` -> `dataset.exclude=FILE`), and each run's best checkpoint is scored by
`eval.py` on the folder's own, unplanted val split: what cleaning is worth in accuracy a user can trust.

    python bench/data_quality.py [--sets hymenoptera_data flowers12] [--seeds 1 2 3] [--train frozen lpft_fast]
    python bench/data_quality.py --search 50000   # the neighbour search alone, on synthetic 1280-d features
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_latest
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results"
FLIP_SHARE, LEAKS, OUTLIERS = 0.05, 10, 5


def perturbed(path: Path, rng: random.Random) -> Image.Image:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = rng.uniform(0.5, 0.9)
    im = im.resize((max(8, int(w * s)), max(8, int(h * s))), Image.BILINEAR)
    w, h = im.size
    c = rng.uniform(0, 0.1)
    dx, dy = int(w * c * rng.random()), int(h * c * rng.random())
    im = im.crop((dx, dy, w - int(w * c) + dx, h - int(h * c) + dy))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=rng.randint(50, 80))
    out.seek(0)
    return Image.open(out)


def plant(source: Path, dest: Path, seed: int) -> dict[str, set[str]]:
    """Copy `source` to `dest` with the faults planted; returns the planted relative paths per kind."""
    from sklearn.datasets import load_digits

    rng = random.Random(seed)
    shutil.copytree(source, dest)
    classes = sorted(p.name for p in (dest / "train").iterdir() if p.is_dir())
    train = sorted(p for p in (dest / "train").rglob("*") if p.is_file())
    val = sorted(p for p in (dest / "val").rglob("*") if p.is_file())
    planted: dict[str, set[str]] = {"label": set(), "leak": set(), "outlier": set()}
    for path in rng.sample(train, round(FLIP_SHARE * len(train))):
        other = rng.choice([c for c in classes if c != path.parent.name])
        target = dest / "train" / other / f"flipped_{path.name}"
        path.rename(target)
        planted["label"].add(str(target.relative_to(dest)))
    train = sorted(p for p in (dest / "train").rglob("*") if p.is_file() and not p.name.startswith("flipped_"))
    for victim, twin_of in zip(rng.sample(val, LEAKS), rng.sample(train, LEAKS), strict=True):
        victim.unlink()
        target = dest / "val" / twin_of.parent.name / f"leak_{twin_of.stem}.jpg"
        perturbed(twin_of, rng).convert("RGB").save(target, "JPEG", quality=95)
        planted["leak"].add(str(target.relative_to(dest)))
    digits = load_digits()
    for i in rng.sample(range(len(digits.images)), OUTLIERS):
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        split = rng.choice(["train", "val"])
        target = dest / split / rng.choice(classes) / f"outlier_digit{i}.png"
        Image.fromarray(pixels, "L").resize((224, 224), Image.NEAREST).save(target)
        planted["outlier"].add(str(target.relative_to(dest)))
    return planted


def check(root: Path, exclude: Path | None = None) -> tuple[dict, float]:
    """The deep check of `root` as `train.py` sees it; writes its `--write-exclude` list to `exclude`."""
    from transferlab.config.compose import compose_train_config
    from transferlab.config.settings import RunSettings
    from transferlab.quality.check import deep_check

    cfg = compose_train_config(str(root), ["backbone=efficientnet_lite0", "strategy=frozen",
                                           f"paths.cache_dir={root}.cache"])
    start = time.perf_counter()
    report, _ = deep_check(RunSettings.from_config(cfg))
    seconds = time.perf_counter() - start
    if exclude is not None:
        exclude.write_text("".join(f"{p}\n" for p in report.flagged_paths()))
    return report.to_dict(), seconds


ARMS = {"frozen": ["strategy=frozen"], "lpft_fast": ["experiment=lpft_fast"]}


def trained_accuracy(root: Path, clean_root: Path, arm: str, seed: int, work: Path,
                     exclude: Path | None) -> dict:
    """Train `arm` on `root` (leaving out `exclude`), then score its best checkpoint on `clean_root`'s val."""
    run = work / f"{arm}-{'cleaned' if exclude else 'as-planted'}"
    overrides = ["dataset=folder", f"dataset.root={root}", "backbone=efficientnet_lite0", *ARMS[arm],
                 f"seed={seed}", f"paths.cache_dir={root}.cache", f"hydra.run.dir={run}", "dataset.quality=fast",
                 "trainer.enable_progress_bar=false", *([f"dataset.exclude={exclude}"] if exclude else [])]
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    summary = json.loads((run / "summary.json").read_text())
    scored = work / f"{run.name}-eval"
    subprocess.run([sys.executable, str(ROOT / "eval.py"), f"ckpt_path={run}", "dataset=folder",
                    f"dataset.root={clean_root}", "progress=false", f"hydra.run.dir={scored}"], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((scored / "metrics.json").read_text())["metrics"]
    return {"reported_val_acc": summary["val/acc_best"], "clean_val_acc": metrics["accuracy"],
            "excluded": len(exclude.read_text().splitlines()) if exclude else 0}


def scores(found: dict, planted: dict[str, set[str]], images: int, real_leaks: set[str]) -> dict:
    """Recall of what was planted; precision counting the folder's own leaks (found on the unplanted copy, and
    checked by eye: flowers12's are crops and re-encodes of one photo) as right, not as false alarms."""
    out = {}
    findings = found["findings"]
    flagged = {
        "leak": {f for x in findings if x["kind"] == "leak" for f in x["files"] if f.startswith("val/")},
        "label": {x["files"][0] for x in findings if x["kind"] == "label"},
        "outlier": {x["files"][0] for x in findings if x["kind"] == "outlier"},
    }
    for kind, truth in planted.items():
        hit = flagged[kind] & truth
        right = flagged[kind] & (truth | real_leaks) if kind == "leak" else hit
        out[kind] = {"planted": len(truth), "flagged": len(flagged[kind]), "found": len(hit),
                     "recall": len(hit) / len(truth) if truth else None,
                     "precision": len(right) / len(flagged[kind]) if flagged[kind] else None}
    top = set(found["outlier_ranking"][:max(1, round(0.02 * images))])
    out["outlier"]["recall_top_2pct"] = len(top & planted["outlier"]) / len(planted["outlier"])
    return out


def search(n: int, dim: int = 1280) -> int:
    """Time the all-against-all neighbour search (audit's one search) on n synthetic feature rows."""
    from transferlab.quality.duplicates import NEIGHBOURS
    from transferlab.quality.neighbours import nearest, normalised
    from transferlab.quality.outliers import K

    rng = np.random.default_rng(0)
    x = normalised(np.abs(rng.normal(size=(n, dim))).astype(np.float32))
    start = time.perf_counter()
    nearest(x, x, max(NEIGHBOURS, K), same=True)
    seconds = time.perf_counter() - start
    data = {"command": f"python bench/data_quality.py --search {n}", "rows": n, "dim": dim,
            "neighbours": max(NEIGHBOURS, K), "seconds": round(seconds, 1), "cores": os.cpu_count()}
    write_latest("data_quality", data, search_table(data))
    return 0


def search_table(data: dict) -> list[str]:
    """The neighbour search's one-row table."""
    return ["| rows x dim | neighbours | seconds | cores |", "|---:|---:|---:|---:|",
            f"| {data['rows']} x {data['dim']} | {data['neighbours']} | {data['seconds']} | {data['cores']} |"]


def table(results: dict) -> list[str]:
    """Per folder: the planted faults' recall / precision (mean over planting seeds), the check's seconds."""
    lines = ["| folder | images | seeds | leaks recall / precision | label errors recall / precision "
             "| outliers recall (top 2%) | pairs on the unplanted folder | check on the unplanted folder (s) |",
             "|---|---:|---|---|---|---|---:|---:|"]
    for name, e in results["sets"].items():
        m = e.get("mean", {})

        def rp(kind: str, m: dict = m) -> str:
            k = m.get(kind, {})
            return " / ".join(f"{k[x]:.2f}" if k.get(x) is not None else "n/a" for x in ("recall", "precision"))

        top = m.get("outlier", {}).get("recall_top_2pct")
        lines.append(f"| {name} | {e['images']} | {', '.join(str(s) for s in e['seeds'])} | {rp('leak')} "
                     f"| {rp('label')} | {'n/a' if top is None else f'{top:.2f}'} | {e['unplanted']['pairs']} "
                     f"| {e['unplanted']['seconds']} |")
    trained = [(name, arm, runs) for name, e in results["sets"].items()
               for arm, runs in e.get("trained", {}).items()]
    if trained:
        lines += ["", "Trained on the planted copy as it is and without the check's exclusions; accuracy of the best "
                  "checkpoint on the folder's own unplanted val split (mean ± std over the planting seeds), and the "
                  "val accuracy the run itself reported, on the planted val split (its leaks count as right, its digit "
                  "outliers as wrong).", "",
                  "| folder | arm | seeds | clean val acc, as planted | clean val acc, cleaned "
                  "| reported val acc, as planted | reported, cleaned | paths excluded |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for name, arm, runs in trained:
            def ms(variant: str, key: str, runs: dict = runs) -> str:
                v = [r[variant][key] for r in runs.values()]
                return f"{np.mean(v):.4f} ± {np.std(v):.4f}"
            excluded = np.mean([r["cleaned"]["excluded"] for r in runs.values()])
            lines.append(f"| {name} | {arm} | {len(runs)} | {ms('as_planted', 'clean_val_acc')} "
                         f"| {ms('cleaned', 'clean_val_acc')} | {ms('as_planted', 'reported_val_acc')} "
                         f"| {ms('cleaned', 'reported_val_acc')} | {excluded:.0f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["hymenoptera_data", "flowers12"],
                        help="names under ../shared/datasets/, or paths to train/ + val/ folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--search", type=int, default=None, help="only time the neighbour search on N rows")
    parser.add_argument("--train", nargs="*", default=[], choices=sorted(ARMS),
                        help="also train these arms with and without the exclusions (slow)")
    args = parser.parse_args()
    if args.search:
        return search(args.search)
    results: dict = {"command": " ".join(["python", "bench/data_quality.py", *sys.argv[1:]]),
                     "date": time.strftime("%Y-%m-%d_%H-%M-%S"), "sets": {}}
    for name in args.sets:
        source = Path(name) if os.sep in name else DATASETS / name
        name = source.name
        if not source.is_dir():
            print(f"skipped {name}: {source} not found")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            source_copy = Path(tmp) / "clean"
            shutil.copytree(source, source_copy)
            clean, clean_s = check(source_copy)
            images = sum(clean["images"].values())
            false_pairs = clean["counts"]["leak"] + clean["counts"]["duplicate"]
            pair_findings = [f for f in clean["findings"] if f["kind"] in ("leak", "duplicate")]
            entry = {"images": images, "seeds": {}, "unplanted": {
                "pairs": false_pairs, "per_1000_images": round(1000 * false_pairs / images, 2),
                "findings": pair_findings, "labels": clean["counts"]["label"],
                "outliers": clean["counts"]["outlier"], "seconds": round(clean_s, 1), "stages": clean["seconds"]}}
            shutil.rmtree(source_copy)
            for seed in args.seeds:
                planted_root = Path(tmp) / f"planted{seed}"
                planted = plant(source, planted_root, seed)
                exclude = Path(tmp) / f"exclude{seed}.txt"
                found, seconds = check(planted_root, exclude)
                entry["seeds"][seed] = {**scores(found, planted, images, set(clean["leaked_val"])),
                                        "seconds": round(seconds, 1),
                                        "stages": found["seconds"]}
                print(name, seed, json.dumps(entry["seeds"][seed]), flush=True)
                for arm in args.train:
                    work = Path(tmp) / f"runs{seed}"
                    entry.setdefault("trained", {}).setdefault(arm, {})[seed] = runs = {
                        variant: trained_accuracy(planted_root, source, arm, seed, work, excl)
                        for variant, excl in (("as_planted", None), ("cleaned", exclude))}
                    print(name, seed, arm, json.dumps(runs), flush=True)
                shutil.rmtree(planted_root)
            for kind in ("leak", "label", "outlier"):
                for measure in ("recall", "precision", "recall_top_2pct"):
                    values = [v[kind].get(measure) for v in entry["seeds"].values()]
                    if values and all(x is not None for x in values):
                        entry.setdefault("mean", {}).setdefault(kind, {})[measure] = round(float(np.mean(values)), 3)
            entry["unplanted"]["leaked_val"] = clean["leaked_val"]
            results["sets"][name] = entry
            print(name, "unplanted", json.dumps(entry["unplanted"])[:400])
    write_latest("data_quality", results, table(results), results["command"], meta={"stamp": results["date"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
