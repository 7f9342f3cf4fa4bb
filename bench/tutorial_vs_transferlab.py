"""Benchmark: the PyTorch transfer-learning tutorial's loop vs transferlab, side by side, in one run.

    python bench/tutorial_vs_transferlab.py --data ../shared/datasets/hymenoptera_data

For each strategy (frozen, finetune) it runs, alternating, in one process tree:
  (a) a faithful re-implementation of the tutorial loop (batch 4, SGD lr 0.001 momentum 0.9, StepLR 7/0.1,
      RandomResizedCrop + flip, the backbone re-run on every image every epoch), and
  (b) transferlab with the same backbone and strategy: the command a user types, `python train.py
      dataset=hymenoptera dataset.root=<data> backbone=efficientnet_lite0 strategy=<s> ...`, with a cold
      feature cache (a fresh run directory and cache),
each in its own process (so peak memory is per run), and prints and writes a Markdown table: the whole
process's wall time (interpreter start, imports, data, everything), the time inside the run (the tutorial's
loop from its first line; transferlab's `wall_time_s` in summary.json, from `train()`'s start), wall time to
first reach val acc 0.90 / 0.93 / 0.95 on the whole process's clock, best val acc, training images per second,
peak memory, and the ratios (b)/(a). This is a script, not a test.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _results import write_latest

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.90, 0.93, 0.95)


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # dataloader workers
    return round(max(own, children) / 1024, 1)


def tutorial_loop(data: str, strategy: str, epochs: int, workers: int) -> dict:
    """The tutorial's train_model, with its data pipeline, on EfficientNet-Lite0 (mean = std = 0.5)."""
    import timm
    import torch
    from torch import nn, optim
    from torch.optim import lr_scheduler
    from torchvision import datasets, transforms

    from transferlab.models.backbones import load_weights, packaged_weights_path

    start = time.perf_counter()
    mean = std = [0.5, 0.5, 0.5]
    tfs = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(mean, std)]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                   transforms.Normalize(mean, std)]),
    }
    image_datasets = {x: datasets.ImageFolder(os.path.join(data, x), tfs[x]) for x in ["train", "val"]}
    loaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4, shuffle=True, num_workers=workers)
               for x in ["train", "val"]}
    sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}

    model = timm.create_model("tf_efficientnet_lite0")
    load_weights(model, packaged_weights_path("efficientnet_lite0"), key_map="order")
    if strategy == "frozen":
        for p in model.parameters():
            p.requires_grad = False
    # the tutorial's 2 (ants, bees), generalised to the folder's classes
    model.classifier = nn.Linear(model.classifier.in_features, len(image_datasets["train"].classes))
    params = model.classifier.parameters() if strategy == "frozen" else model.parameters()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    best_acc, best_wts, curve, train_phase_s = 0.0, copy.deepcopy(model.state_dict()), [], 0.0
    for _epoch in range(epochs):
        for phase in ["train", "val"]:
            phase_start = time.perf_counter()
            model.train() if phase == "train" else model.eval()
            running_corrects = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_corrects += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
                train_phase_s += time.perf_counter() - phase_start
            else:
                acc = running_corrects / sizes["val"]
                curve.append((time.perf_counter() - start, acc))
                if acc > best_acc:
                    best_acc, best_wts = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_wts)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "curve": curve, "best_acc": best_acc,
            "images_per_s": epochs * sizes["train"] / wall, "train_phase_s": train_phase_s,
            "train_images_per_s": epochs * sizes["train"] / train_phase_s, "peak_mb": _peak_rss_mb()}


def transferlab_run(data: str, strategy: str, epochs: int, workdir: str, extra: list[str]) -> dict:
    """`python train.py ...` as a user types it, in its own process, timed from the outside; its curve from the
    run's TensorBoard events, on the same clock."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(workdir) / "run"
    overrides = [f"paths.root_dir={workdir}", f"hydra.run.dir={run_dir}", "dataset=hymenoptera",
                 f"dataset.root={data}", "backbone=efficientnet_lite0", f"strategy={strategy}",
                 f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null", "trainer.enable_progress_bar=false",
                 *extra]
    Path(workdir).mkdir(parents=True, exist_ok=True)
    start_wall, start = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True,
                          cwd=workdir)
    process_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        sys.exit(f"transferlab {strategy} failed:\n{proc.stderr[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    curve = [(e.wall_time - start_wall, e.value) for e in acc.Scalars("val/acc")]
    train_phase = summary.get("train_phase_s") or 0.0
    return {"wall_s": summary["wall_time_s"], "process_s": process_s, "curve": curve,
            "best_acc": summary["val/acc_best"], "images_per_s": epochs * _train_count(data) / process_s,
            "train_phase_s": train_phase, "train_images_per_s": summary.get("train_phase_images_per_s"),
            "peak_mb": round(peak, 1), "phases": summary.get("phases")}


def _train_count(data: str) -> int:
    from torchvision import datasets

    return len(datasets.ImageFolder(os.path.join(data, "train")))


def _time_to(curve: list, threshold: float) -> float | None:
    return next((t for t, acc in curve if acc >= threshold), None)


def _fmt_s(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.1f}"


def _fmt(x: float | None) -> str:
    return "n/a (no SGD step)" if x is None else f"{x:.1f}"


def _ratio(b, a) -> str:
    return "n/a" if a in (None, 0) or b is None else f"{b / a:.3f}"


def table(results: dict, epochs: dict) -> str:
    lines = []
    for strategy, runs in results.items():
        a, b = runs["tutorial"], runs["transferlab"]
        lines += [f"### {strategy} ({epochs[strategy]} epochs)", "",
                  "| metric | (a) tutorial loop | (b) transferlab | (b)/(a) |", "| --- | ---: | ---: | ---: |",
                  f"| whole process, `python ...` to exit (s) | {a['process_s']:.1f} | {b['process_s']:.1f} "
                  f"| {_ratio(b['process_s'], a['process_s'])} |",
                  f"| inside the run, {epochs[strategy]} epochs (s) | {a['wall_s']:.1f} | {b['wall_s']:.1f} "
                  f"| {_ratio(b['wall_s'], a['wall_s'])} |"]
        for th in THRESHOLDS:
            ta, tb = _time_to(a["curve"], th), _time_to(b["curve"], th)
            lines.append(f"| time to val acc {th:.2f} (s) | {_fmt_s(ta)} | {_fmt_s(tb)} | {_ratio(tb, ta)} |")
        lines += [f"| best val acc | {a['best_acc']:.4f} | {b['best_acc']:.4f} "
                  f"| {_ratio(b['best_acc'], a['best_acc'])} |",
                  f"| training images / s (training batches only) | {_fmt(a['train_images_per_s'])} "
                  f"| {_fmt(b['train_images_per_s'])} | {_ratio(b['train_images_per_s'], a['train_images_per_s'])} |",
                  f"| epochs x training images / wall time | {a['images_per_s']:.1f} | {b['images_per_s']:.1f} "
                  f"| {_ratio(b['images_per_s'], a['images_per_s'])} |",
                  f"| peak memory (MB) | {a['peak_mb']:.0f} | {b['peak_mb']:.0f} "
                  f"| {_ratio(b['peak_mb'], a['peak_mb'])} |",
                  ""]
    return "\n".join(lines)


def _worker(args) -> None:
    """Run the tutorial loop in this process and print its result as JSON on the last line."""
    import torch

    torch.manual_seed(args.seed)
    print("RESULT " + json.dumps(tutorial_loop(args.data, args.strategy, args.epochs, args.tutorial_workers)))


def tutorial_run(data: str, strategy: str, epochs: int, workers: int, seed: int) -> dict:
    """The tutorial loop in its own process, timed from the outside as transferlab's command is."""
    cmd = [sys.executable, __file__, "--worker", "tutorial", "--strategy", strategy, "--data", data,
           "--epochs", str(epochs), "--seed", str(seed), "--tutorial-workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    process_s = time.perf_counter() - start
    line = next((ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"tutorial {strategy} failed:\n{proc.stderr[-4000:]}")
    # the loop's curve is on its own clock, from its first line: put it on the process's
    result = json.loads(line[len("RESULT "):])
    lag = process_s - result["wall_s"]
    result["curve"] = [(t + lag, acc) for t, acc in result["curve"]]
    return {**result, "process_s": process_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hymenoptera_data"))
    parser.add_argument("--strategies", default="frozen,finetune")
    parser.add_argument("--epochs", type=int, default=25, help="epochs for frozen (tutorial: 25)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="epochs for finetune (default --epochs)")
    parser.add_argument("--tutorial-workers", type=int, default=4, help="the tutorial's num_workers")
    parser.add_argument("--out", default=None, help="also write the report to this Markdown file "
                        "(always: bench/results/tutorial_vs_transferlab/latest.*)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", dest="common_extra", default="", help="extra transferlab overrides (all strategies)")
    parser.add_argument("--finetune-extra", default="", help="extra transferlab overrides for finetune")
    parser.add_argument("--workroot", default=None, help="run directories (default outputs/bench/<timestamp>)")
    parser.add_argument("--worker", choices=["tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    data = str(Path(args.data).resolve())
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    workroot = Path(args.workroot) if args.workroot else ROOT / "outputs" / "bench" / stamp
    results, epochs = {}, {}
    for strategy in args.strategies.split(","):
        n = args.epochs if strategy == "frozen" else (args.finetune_epochs or args.epochs)
        epochs[strategy] = n
        extra = args.common_extra.split() + (args.finetune_extra.split() if strategy == "finetune" else [])
        results[strategy] = {}
        for kind in ("tutorial", "transferlab"):  # alternating (a), (b) per strategy
            print(f"[bench] {strategy}: {'(a) tutorial loop' if kind == 'tutorial' else '(b) transferlab'} ...",
                  flush=True)
            if kind == "tutorial":
                run = tutorial_run(data, strategy, n, args.tutorial_workers, args.seed)
            else:
                run = transferlab_run(data, strategy, n, str(workroot / f"{strategy}-{kind}"), [
                    f"seed={args.seed}", *extra])
            results[strategy][kind] = run
            print(f"[bench]   best val acc {run['best_acc']:.4f}; whole process {run['process_s']:.1f} s", flush=True)

    header = (f"# tutorial loop vs transferlab ({stamp})\n\n"
              f"`python bench/tutorial_vs_transferlab.py {shlex.join(sys.argv[1:])}`  \n"
              f"backbone efficientnet_lite0 (offline ImageNet weights), data `{args.data}`, "
              f"{os.cpu_count()} CPU cores, torch threads per process: default.\n\n")
    report = header + table(results, epochs)
    write_latest("tutorial_vs_transferlab", {"argv": sys.argv[1:], "epochs": epochs, "results": results},
                 report.rstrip("\n").split("\n"), meta={"stamp": stamp})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
