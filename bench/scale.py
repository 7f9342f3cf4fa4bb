"""How does transferlab scale with the number of images? The doctor and a frozen run at 1k, 10k and 50k images.

    python bench/scale.py                                   # 1k, 10k and 50k images (run it alone: 2 cores)
    python bench/scale.py --sizes 1000,10000 --steps doctor # the dataset doctor only
    python bench/scale.py --sizes 1000 --image-size 128 --repeats 3

Data: synthetic class folders (`train/<class>/` + `val/<class>/`, `--classes` classes, 80/20 per class) of
small noisy coloured shapes (`--source-px` square JPEGs, seeded: the same bytes on every machine with the same
Pillow), generated once under `outputs/bench/scale/<n>/` and reused while its marker file `generated.json`
holds the same generation parameters and the folder has all its files.

Each step is a whole process (`subprocess`, its wall clock, its CPU time and its own peak RSS from `os.wait4`),
in a fresh work directory per size and repeat under `outputs/bench/scale-<stamp>/`:

  1. `doctor cold` / `doctor warm`: `python -m transferlab.data.doctor ROOT --cache-dir <fresh>`, then again
     on the cache it wrote (the warm run checks that every file came from the cache);
  2. `frozen cold`: `python train.py strategy=frozen backbone=efficientnet_lite0 dataset=folder
     dataset.root=ROOT dataset.input.image_size=<--image-size> paths.cache_dir=<fresh> logger=none ...`:
     feature extraction of every image, then the head fit. Its doctor cache is step 1's (warm), so the only
     cache it lacks is the feature cache;
  3. `frozen warm`: the same command again: features loaded from step 2's cache.

`extraction` is derived, not run: `frozen cold - frozen warm` (the two runs differ only in the feature cache;
it includes writing the cache and, against it, loading it). The run's own log gives a second figure: the time
from its last log line before "Cached features in" (the "Input: ..." line, once the model is built) to that
line (`extraction (log)`: extraction plus the trainer's construction, without the process start, imports, model
build and head fit). `head fit` is summary.json's `head_fit.seconds` (median of both runs). With
`--steps frozen` alone, the doctor cache is filled by an untimed doctor run first.

Per size and step the table gives seconds (median over `--repeats`), seconds per 1k images, the ratio of the
time per image to that at the smallest size (1k), the peak RSS in MB (max over repeats), and the goals:
time per image at 50k within 1.3x of 1k, peak RSS <= 3 GB at 50k. "Cold" means transferlab's caches; the
images themselves are in the OS page cache (just generated or read by the previous step). Writes
its entry of `bench/results/scale/latest.json` (+ `latest.md`). A script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # as accuracy.py's; its write_results is imported when the runs are
# done: it imports numpy and scipy, and a child's peak RSS counts this process's resident set at the fork
DATA_DIR = ROOT / "outputs" / "bench" / "scale"
MARKER = "generated.json"
GENERATOR_VERSION = 1
STEPS = ("doctor", "frozen")
GOAL_SIZE, GOAL_RATIO, GOAL_RSS_MB = 50_000, 1.3, 3 * 1024
SHAPES = ("circle", "square", "triangle", "cross", "ring")


# --- the data ------------------------------------------------------------------------------------------------
def generation_params(n: int, classes: int, px: int, seed: int, val_fraction: float = 0.2,
                      duplicates: float = 0.0) -> dict:
    return {"version": GENERATOR_VERSION, "images": n, "classes": classes, "px": px, "seed": seed,
            "val_fraction": val_fraction, "format": "JPEG", "quality": 90, "duplicates": duplicates}


def data_root(data_dir: str | Path, n: int, duplicates: float = 0.0) -> Path:
    """`<data_dir>/<n>`, or `<data_dir>/<n>-dup<fraction>` for a data set with placeholder copies."""
    return Path(data_dir) / (str(n) if not duplicates else f"{n}-dup{duplicates:g}")


def split_counts(n: int, classes: int, val_fraction: float) -> list[tuple[int, int]]:
    """(train, val) images per class: n spread over the classes (the first ones get the remainder)."""
    out = []
    for c in range(classes):
        total = n // classes + (1 if c < n % classes else 0)
        val = round(total * val_fraction)
        out.append((total - val, val))
    return out


def class_name(c: int) -> str:
    return f"class_{c:02d}"


def draw_image(rng, c: int, classes: int, px: int):
    """One noisy coloured shape: the class fixes the shape and the hue family; the rest is drawn from `rng`."""
    import colorsys

    import numpy as np
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    hue = (c / classes + rng.uniform(-0.3, 0.3) / classes) % 1.0
    fg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)))
    im = Image.new("RGB", (px, px), bg)
    draw = ImageDraw.Draw(im)
    size = rng.uniform(0.3, 0.8) * px
    x0, y0 = (rng.uniform(0, px - size, 2)).tolist()
    box = [x0, y0, x0 + size, y0 + size]
    shape = SHAPES[c % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    elif shape == "triangle":
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=fg)
    elif shape == "cross":
        w = size / 3
        draw.rectangle([x0 + w, y0, x0 + 2 * w, y0 + size], fill=fg)
        draw.rectangle([x0, y0 + w, x0 + size, y0 + 2 * w], fill=fg)
    else:
        draw.ellipse(box, outline=fg, width=max(1, int(size / 6)))
    pixels = np.asarray(im, dtype=np.int16) + rng.normal(0, 20, (px, px, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def count_images(root: Path) -> int:
    n = 0
    for split in ("train", "val"):
        if (root / split).is_dir():
            for entry in os.scandir(root / split):
                if entry.is_dir():
                    n += sum(1 for f in os.scandir(entry.path) if f.name.endswith(".jpg"))
    return n


def is_complete(root: Path, params: dict) -> bool:
    """The folder was generated with `params` (its marker says so) and holds every image."""
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("params") == params and count_images(root) == params["images"]


def generate(root: Path, n: int, classes: int = 10, px: int = 64, seed: int = 0,
             val_fraction: float = 0.2, duplicates: float = 0.0) -> dict:
    """`root/train/<class>/*.jpg` + `root/val/<class>/*.jpg` of `n` images in all, unless already complete.

    Each image is drawn from its own generator seeded by (seed, split, class, index), so a file's bytes do not
    depend on the order or the number of images generated. `duplicates`: that share of each class folder's
    files (its first ones) are byte-identical copies of one placeholder image (as scraped data holds "image not
    found" pictures), in every class and both splits: the doctor's duplicate and leak checks get one big group.
    Written into `<root>.partial`, the marker last, then renamed into place: an interrupted generation is never
    taken for a complete one. Returns the marker (with `reused`)."""
    import io

    import numpy as np

    params = generation_params(n, classes, px, seed, val_fraction, duplicates)
    if is_complete(root, params):
        marker = json.loads((root / MARKER).read_text())
        marker["reused"] = True
        return marker
    start = time.perf_counter()
    partial = root.with_name(root.name + ".partial")
    for stale in (partial, root):
        if stale.exists():
            _remove_generated(stale)
    nbytes = 0
    placeholder = io.BytesIO()
    draw_image(np.random.default_rng([seed, 99]), 0, classes, px).save(placeholder, "JPEG",
                                                                       quality=params["quality"])
    for c, (n_train, n_val) in enumerate(split_counts(n, classes, val_fraction)):
        for s, (split, count) in enumerate((("train", n_train), ("val", n_val))):
            folder = partial / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            copies = round(duplicates * count)
            for i in range(count):
                if i < copies:
                    buf = placeholder
                else:
                    buf = io.BytesIO()
                    draw_image(np.random.default_rng([seed, s, c, i]), c, classes, px).save(
                        buf, "JPEG", quality=params["quality"])
                (folder / f"img_{i:06d}.jpg").write_bytes(buf.getvalue())
                nbytes += buf.tell()
    marker = {"params": params, "seconds": round(time.perf_counter() - start, 2), "bytes": nbytes}
    (partial / MARKER).write_text(json.dumps(marker, indent=1))
    partial.rename(root)
    return {**marker, "reused": False}


def _remove_generated(path: Path) -> None:
    """Delete a folder this script generated (only train/, val/ and the marker: never anything else)."""
    unexpected = [p.name for p in path.iterdir() if p.name not in ("train", "val", MARKER)]
    if unexpected:
        raise SystemExit(f"{path} holds {unexpected}, not only generated data; remove it by hand or use --data-dir.")
    shutil.rmtree(path)


def generate_in_child(root: Path, n: int, args: argparse.Namespace) -> dict:
    """`generate` in a child process, so that this one stays small: a child's peak RSS (`ru_maxrss`) counts
    the parent's resident memory at the fork, which numpy, Pillow and a generation's garbage would inflate."""
    cmd = [sys.executable, __file__, "--worker-generate", str(root), "--sizes", str(n), "--classes", str(args.classes),
           "--source-px", str(args.source_px), "--seed", str(args.seed), "--duplicates", str(args.duplicates)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"generating {root} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- running and timing one process --------------------------------------------------------------------------
def run_child(cmd: list[str], log_path: Path, code: Path = ROOT) -> dict:
    """Run `cmd` (output to `log_path`); its wall clock, CPU time and peak RSS (the child's own maxrss, MB,
    which Linux takes over the child and the descendants it waited for). `code`: the checkout whose src/ is
    imported (PYTHONPATH), this one by default."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if code != ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(code / "src"), *filter(None, [env.get("PYTHONPATH")])])
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "returncode": proc.returncode,
            # the floor under peak_rss_mb: Linux counts the parent's resident set at the fork as the child's
            "launcher_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "loadavg_before": round(load, 2), "log": str(log_path), "command": shlex.join(cmd)}


def doctor_command(root: Path, cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "transferlab.data.doctor", str(root), "--cache-dir", str(cache_dir)]


def frozen_command(root: Path, work: Path, run_dir: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(args.code) / "train.py"), "strategy=frozen", f"backbone={args.backbone}",
            "dataset=folder", f"dataset.root={root}", f"dataset.input.image_size={args.image_size}",
            f"paths.cache_dir={work / 'cache'}", f"dataset.cache_dir={work / 'doctor-cache'}", "logger=none",
            "callbacks.dashboards.max_images=0", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
            *shlex.split(args.extra)]


_DOCTOR_LINE = re.compile(r"Checked (\d+) image files in ([\d.]+) s \((\d+) from cache\)")
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def doctor_facts(log_path: Path) -> dict:
    """What the doctor printed: files checked, its own seconds, how many came from its cache."""
    m = _DOCTOR_LINE.search(Path(log_path).read_text(errors="replace"))
    return {} if not m else {"files_checked": int(m[1]), "doctor_s": float(m[2]), "from_cache": int(m[3])}


def log_extraction_s(log_text: str) -> float | None:
    """Seconds from the last timestamped log line before "Cached features in" to that line (None: not found)."""
    previous = None
    for line in log_text.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
        if "Cached features in" in line:
            return None if previous is None else round((t - previous).total_seconds(), 3)
        previous = t
    return None


def frozen_facts(run_dir: Path) -> dict:
    """From the run's directory: summary.json's figures, and the extraction time read from its log."""
    out: dict = {}
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out.update(val_acc=s.get("val/acc_best"), summary_wall_s=s.get("wall_time_s"),
                   summary_peak_mb=s.get("peak_memory_mb"), head_fit_s=(s.get("head_fit") or {}).get("seconds"))
    logs = sorted(run_dir.glob("*.log"))
    if logs:
        text = logs[0].read_text(errors="replace")
        out["extraction_log_s"] = log_extraction_s(text)
        out["feature_cache_hit"] = "Loaded cached features" in text
    return out


def measure_size(n: int, root: Path, work: Path, steps: list[str], args: argparse.Namespace) -> dict:
    """One repeat at one size: every step in its own process; {step: measurement}."""
    out: dict = {}

    def step(name: str, cmd: list[str], log_name: str, extra) -> dict:
        print(f"[scale] {n} images: {name} ...", flush=True)
        r = run_child(cmd, work / log_name, Path(args.code).resolve())
        r.update(extra())
        ok = r["returncode"] == 0
        if ok and name == "doctor warm" and r.get("from_cache") != r.get("files_checked"):
            print(f"    WARNING: the warm doctor took only {r.get('from_cache')} of {r.get('files_checked')} files "
                  "from its cache", flush=True)
        if ok and name == "frozen warm" and not r.get("feature_cache_hit"):
            print("    WARNING: the warm frozen run did not load cached features; no extraction figure from it",
                  flush=True)
        status = "ok" if ok else f"FAILED (exit {r['returncode']}, see {r['log']})"
        print(f"    {status}: "
              f"{r['seconds']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MB"
              + "".join(f", {k} {v}" for k, v in r.items() if k in ("from_cache", "extraction_log_s", "val_acc")),
              flush=True)
        out[name] = r
        if not ok and not args.keep_going:
            raise StepFailed(name, r, out)
        return r

    if "doctor" in steps:
        for temp in ("cold", "warm"):
            step(f"doctor {temp}", doctor_command(root, work / "doctor-cache"), f"doctor-{temp}.log",
                 lambda t=temp: doctor_facts(work / f"doctor-{t}.log"))
    if "frozen" in steps:
        if "doctor" not in steps:  # the frozen runs' doctor cache must be warm: only the feature cache differs
            print(f"[scale] {n} images: filling the doctor cache (untimed) ...", flush=True)
            run_child(doctor_command(root, work / "doctor-cache"), work / "doctor-fill.log", Path(args.code).resolve())
        for temp in ("cold", "warm"):
            run_dir = work / f"frozen-{temp}"
            step(f"frozen {temp}", frozen_command(root, work, run_dir, args), f"frozen-{temp}.out",
                 lambda d=run_dir: frozen_facts(d))
    return out


class StepFailed(RuntimeError):
    def __init__(self, step: str, result: dict, partial: dict) -> None:
        super().__init__(f"{step} failed (exit {result['returncode']}); its output: {result['log']}")
        self.partial = partial  # the steps of this repeat measured so far, the failed one included


# --- the report ------------------------------------------------------------------------------------------------
def combine(repeats: list[dict]) -> dict:
    """Per step over repeats: median seconds, max peak RSS, and the runs; plus the derived extraction rows."""
    steps: dict = {}
    for rep in repeats:
        for name, r in rep.items():
            steps.setdefault(name, []).append(r)
    out = {}
    for name, runs in steps.items():
        ok = [r for r in runs if r.get("returncode", 0) == 0]
        out[name] = {"seconds": statistics.median(r["seconds"] for r in ok) if ok else None,
                     "cpu_s": statistics.median(r["cpu_s"] for r in ok) if ok else None,
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in ok) if ok else None, "runs": runs}
    cold_warm = [(rep["frozen cold"], rep["frozen warm"]) for rep in repeats
                 if rep.get("frozen cold", {}).get("returncode") == 0
                 and rep.get("frozen warm", {}).get("returncode") == 0
                 and rep["frozen warm"].get("feature_cache_hit", True)]  # a warm run that extracted proves nothing
    if cold_warm:
        out["extraction (cold - warm)"] = {
            "seconds": statistics.median(c["seconds"] - w["seconds"] for c, w in cold_warm),
            "cpu_s": statistics.median(c["cpu_s"] - w["cpu_s"] for c, w in cold_warm), "peak_rss_mb": None}
    from_log = [rep["frozen cold"]["extraction_log_s"] for rep in repeats
                if rep.get("frozen cold", {}).get("extraction_log_s") is not None]
    if from_log:
        out["extraction (log)"] = {"seconds": statistics.median(from_log), "cpu_s": None, "peak_rss_mb": None}
    fits = [rep[step]["head_fit_s"] for rep in repeats for step in ("frozen cold", "frozen warm")
            if rep.get(step, {}).get("head_fit_s") is not None]
    if fits:
        out["head fit (summary.json)"] = {"seconds": statistics.median(fits), "cpu_s": None, "peak_rss_mb": None}
    return out


STEP_ORDER = ("doctor cold", "doctor warm", "frozen cold", "frozen warm", "extraction (cold - warm)",
              "extraction (log)", "head fit (summary.json)")


def report_rows(by_size: dict[int, dict]) -> list[dict]:
    """One row per (step, size): seconds, s per 1k images, ratio of the time per image to that at the smallest
    size measured for the step (1k normally), peak RSS, and the goals (checked at every size, due at 50k)."""
    rows = []
    steps = [s for s in STEP_ORDER if any(s in v for v in by_size.values())]
    steps += sorted({s for v in by_size.values() for s in v} - set(steps))
    for name in steps:
        sizes = sorted(n for n, v in by_size.items() if v.get(name, {}).get("seconds") is not None)
        base = sizes[0] if sizes else None
        for n in sorted(n for n, v in by_size.items() if name in v):
            m = by_size[n][name]
            sec = m.get("seconds")
            per_1k = None if sec is None else sec / n * 1000
            base_per_1k = by_size[base][name]["seconds"] / base * 1000 if base is not None else None
            ratio = None if per_1k is None or not base_per_1k else per_1k / base_per_1k
            rss = m.get("peak_rss_mb")
            rows.append({"step": name, "images": n, "seconds": sec, "cpu_s": m.get("cpu_s"),
                         "s_per_1k": per_1k, "ratio": ratio, "ratio_base": base, "peak_rss_mb": rss,
                         "time_goal": None if ratio is None or n == base else ratio <= GOAL_RATIO,
                         "rss_goal": None if rss is None else rss <= GOAL_RSS_MB})
    return rows


def _f(x, digits: int = 1, suffix: str = "") -> str:
    return "-" if x is None else f"{x:.{digits}f}{suffix}"


def _goal(ok) -> str:
    return "" if ok is None else ("ok" if ok else "MISSED")


def _dups(share: float | None) -> str:
    return f", {share:.0%} of each class folder copies of one placeholder image" if share else ""


def table(rows: list[dict], meta: dict) -> list[str]:
    lines = [f"# Scaling: the doctor and a frozen run ({meta['stamp']})", "",
             f"`{meta['command']}`", "",
             f"Synthetic data: {meta['classes']} classes, {meta['source_px']}x{meta['source_px']} JPEGs, 80/20 "
             f"train/val per class{_dups(meta.get('duplicates'))}; backbone {meta['backbone']} at "
             f"dataset.input.image_size={meta['image_size']}; {meta['repeats']} repeat(s) (median seconds, max RSS); "
             f"{meta['cpus']} CPU cores; 'cold' = transferlab's "
             "caches (the images are in the OS page cache). extraction (cold - warm) = frozen cold - frozen warm; "
             "extraction (log) = from the run's log line before 'Cached features in' ('Input: ...') to it; "
             "head fit = summary.json's head_fit.seconds.", "",
             f"Goals at {GOAL_SIZE:,} images: time per image within {GOAL_RATIO}x of the smallest size's (1k), "
             f"peak RSS <= {GOAL_RSS_MB} MB. Checked at every size as an early sign.", "",
             "| step | images | seconds | CPU s | s / 1k images | ratio to " + ("1k" if meta.get("base_is_1k") else
                                                                             "smallest") +
             " | time goal | peak RSS MB | RSS goal |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['images']:,} | {_f(r['seconds'])} | {_f(r['cpu_s'])} | "
                     f"{_f(r['s_per_1k'], 2)} | {_f(r['ratio'], 2, 'x')} | {_goal(r['time_goal'])} | "
                     f"{_f(r['peak_rss_mb'], 0)} | {_goal(r['rss_goal'])} |")
    due = [r for r in rows if r["images"] == GOAL_SIZE]
    if due:
        missed = [f"{r['step']} ({'time' if r['time_goal'] is False else ''}"
                  f"{' and ' if r['time_goal'] is False and r['rss_goal'] is False else ''}"
                  f"{'RSS' if r['rss_goal'] is False else ''})"
                  for r in due if r["time_goal"] is False or r["rss_goal"] is False]
        lines += ["", f"Goals at {GOAL_SIZE:,}: " + ("all met." if not missed else "missed by " + ", ".join(missed))]
    return lines


# --- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000", help="total images per data set (train + val)")
    parser.add_argument("--steps", default=",".join(STEPS), help="doctor, frozen or both (doctor,frozen)")
    parser.add_argument("--image-size", type=int, default=96,
                        help="dataset.input.image_size of the frozen runs (96: small, so 50k images extract in "
                             "minutes on 2 CPU cores; the backbone's own is 224)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--source-px", type=int, default=64, help="side of the generated images (64)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--duplicates", type=float, default=0.0,
                        help="share of each class folder made of copies of one placeholder image (0; e.g. 0.1 "
                             "exercises the doctor's duplicate and leak checks; data in <n>-dup<share>/)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per step and size (fresh caches each)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--extra", default="", help="more train.py overrides, e.g. 'dataset.eval_batch_size=32'")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where the data sets are generated (%(default)s)")
    parser.add_argument("--code", default=str(ROOT),
                        help="the checkout whose train.py and src/ run (default: this one), e.g. an export of "
                             "another commit (`git archive`) to compare before and after a change")
    parser.add_argument("--keep-going", action="store_true", help="record a failed step and go on")
    parser.add_argument("--generate-only", action="store_true", help="generate (or check) the data sets and stop")
    parser.add_argument("--worker-generate", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_generate:
        marker = generate(Path(args.worker_generate), int(args.sizes), args.classes, args.source_px, args.seed,
                          duplicates=args.duplicates)
        print(json.dumps(marker))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    if unknown := set(steps) - set(STEPS):
        parser.error(f"--steps: unknown {sorted(unknown)}; use {','.join(STEPS)}")
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    work_root = ROOT / "outputs" / "bench" / f"scale-{stamp}"
    command = f"python bench/scale.py {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    meta = {"stamp": stamp, "command": command, "sizes": sizes, "steps": steps, "image_size": args.image_size,
            "classes": args.classes, "source_px": args.source_px, "seed": args.seed, "repeats": args.repeats,
            "duplicates": args.duplicates, "backbone": args.backbone, "extra": args.extra, "cpus": os.cpu_count(),
            "base_is_1k": min(sizes) == 1000,
            "work_dir": str(work_root), "code": str(Path(args.code).resolve()), "data": {}}
    by_size: dict[int, dict] = {}
    failed = None
    try:
        for n in sizes:
            root = data_root(args.data_dir, n, args.duplicates)
            print(f"[scale] {n} images: data in {root} ...", flush=True)
            gen = generate_in_child(root, n, args)
            meta["data"][n] = {"root": str(root), **gen}
            how = "reused" if gen["reused"] else f"generated in {gen['seconds']:.1f} s"
            print(f"    {how}, "
                  f"{gen['bytes'] / 2**20:.1f} MB of JPEGs", flush=True)
            if args.generate_only:
                continue
            repeats = []
            for rep in range(args.repeats):
                work = work_root / str(n) / f"rep{rep}"
                try:
                    repeats.append(measure_size(n, root, work, steps, args))
                except StepFailed as e:
                    failed = str(e)
                    by_size[n] = combine([*repeats, e.partial])
                    raise
            by_size[n] = combine(repeats)
    except StepFailed:
        print(f"[scale] stopped: {failed} (--keep-going records it and goes on)", flush=True)
    if args.generate_only:
        print(json.dumps(meta["data"], indent=1))
        return 0
    rows = report_rows(by_size)
    from _results import write_latest

    write_latest("scale", {**meta, "failed": failed, "results": {str(n): v for n, v in by_size.items()},
                           "rows": rows}, table(rows, meta), command, meta={"stamp": stamp})
    return 1 if failed or any(r.get("returncode") for v in by_size.values() for s in v.values()
                              for r in s.get("runs", [])) else 0


if __name__ == "__main__":
    sys.exit(main())
