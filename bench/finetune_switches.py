"""Which speed switches pay for `strategy=finetune` on this machine? Each variant, side by side, in one run.

    python bench/finetune_switches.py --data ../shared/datasets/hymenoptera_data --epochs 2

Runs transferlab (efficientnet_lite0, finetune) once per variant, each in its own subprocess, one after the
other, and prints a Markdown table: training images per second (training batches only), wall time, best val
acc, peak memory, and the speed-up over the first variant. Variants are named override lists (VARIANTS, or
--variant name="a=1 b=2" to add your own). This is a script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from _results import write_latest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "tutorial_vs_transferlab.py"  # its --worker transferlab mode runs one job

VARIANTS = {
    "batch 4, NCHW (tutorial-like)": "dataset.batch_size=4 channels_last=false",
    "batch 4, channels_last": "dataset.batch_size=4 channels_last=true",
    "batch 8, channels_last, cache_images": "dataset.batch_size=8 channels_last=true dataset.cache_images=true",
    "batch 8, NCHW, cache_images": "dataset.batch_size=8 channels_last=false dataset.cache_images=true",
    "batch 8, channels_last, cache_images, train_size 176":
        "dataset.batch_size=8 channels_last=true dataset.cache_images=true dataset.augment.train_size=176",
    "batch 8, channels_last, cache_images, compile":
        "dataset.batch_size=8 channels_last=true dataset.cache_images=true compile=true",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hymenoptera_data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated indices of VARIANTS to run (default: all)")
    parser.add_argument("--variant", action="append", default=[], help='extra variant: name="override ..."')
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file "
                        "(always: bench/results/finetune_switches/latest.*)")
    args = parser.parse_args()

    variants = dict(VARIANTS)
    if args.only:
        keep = {int(i) for i in args.only.split(",")}
        variants = {k: v for i, (k, v) in enumerate(variants.items()) if i in keep}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        variants[name] = overrides

    data = str(Path(args.data).resolve())
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for i, (name, overrides) in enumerate(variants.items()):
        workdir = ROOT / "outputs" / "bench" / f"switches-{stamp}" / str(i)
        print(f"[switches] {name} ...", flush=True)
        cmd = [sys.executable, str(BENCH), "--worker", "transferlab", "--strategy", "finetune", "--data", data,
               "--epochs", str(args.epochs), "--workdir", str(workdir), "--", *overrides.split()]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"variant {name!r} failed:\n{proc.stderr[-4000:]}")
        rows.append((name, overrides, json.loads(line[len("RESULT "):])))

    base = rows[0][2]["train_images_per_s"]
    lines = [f"# finetune speed switches ({stamp})", "",
             f"`python bench/finetune_switches.py {shlex.join(sys.argv[1:])}`  ",
             f"efficientnet_lite0, strategy=finetune, {args.epochs} epochs, data `{args.data}`, "
             f"{os.cpu_count()} CPU cores.", "",
             "| variant | overrides | training images / s | speed-up | wall (s) | best val acc | peak MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, overrides, r in rows:
        lines.append(f"| {name} | `{overrides}` | {r['train_images_per_s']:.1f} | {r['train_images_per_s'] / base:.2f} "
                     f"| {r['wall_s']:.1f} | {r['best_acc']:.4f} | {r['peak_mb']:.0f} |")
    report = "\n".join(lines) + "\n"
    write_latest("finetune_switches", {"argv": sys.argv[1:], "epochs": args.epochs, "data": args.data,
                                       "rows": [{"variant": n, "overrides": o, **r} for n, o, r in rows]},
                 lines, meta={"stamp": stamp})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(f"[switches] wrote {args.out}")


if __name__ == "__main__":
    main()
