"""The dataset doctor: find, file by file, what would make training fail late or be silently wrong.

One walk of the tree (`folders.survey`, the same walk training uses), then every image is read and fully
decoded exactly as training will decode it (`images.to_rgb`), in a thread pool (Pillow releases the GIL while
decoding). Per-file facts (content hash, format, mode, size, bit depth, ...) are cached by file size + mtime,
so a second run only stats the files. The result is a `DatasetReport`: findings with a severity, each naming
its files, plus counts per class and split.

Severities: `error` = training would fail or be wrong (unreadable files, layout errors); `warning` = worth a
look (duplicates, leakage, imbalance, tiny or suspicious images, a class missing from val); `note` = handled
predictably (colour conversions, ignored litter and tool folders). Unreadable and over-size files are
"bad files": training skips or refuses them according to `dataset.on_bad_file`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from transferlab.data.folders import FolderSplits, SplitListing, Survey, survey
from transferlab.data.images import DEFAULT_MAX_PIXELS, BadImageError, allow_pixels, has_transparency, to_rgb

log = logging.getLogger(__name__)

CACHE_VERSION = 1
BAD_FILE_CODES = ("unreadable", "too_large")
SEVERITIES = ("error", "warning", "note")
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# A 64x64 sample of a photo has hundreds of colours; a placeholder graphic a few dozen, mostly one colour
# (hymenoptera's imageNotFound.gif: 27 colours, 93% background; its flattest photo: 497 colours).
FEW_COLOURS, FLAT_SHARE, PHOTO_COLOURS = 64, 0.5, 256
# A format this rare (one GIF among JPEGs) is suspicious once the set is big enough to have a norm.
ODD_FORMAT_MIN_IMAGES, ODD_FORMAT_SHARE = 50, 0.98


class BadFilesError(BadImageError):
    """Training refused to start on unreadable or over-size files (dataset.on_bad_file=error); names each."""


@dataclass
class Item:
    path: str  # relative to the dataset root
    detail: str = ""


@dataclass
class Finding:
    code: str
    severity: str  # "error" | "warning" | "note"
    message: str
    items: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "files": [{"path": i.path, "detail": i.detail} for i in self.items]}


@dataclass
class Entry:
    """One image file as training would see it."""

    split: str
    cls: str
    path: str  # absolute


@dataclass
class DatasetReport:
    """What the doctor found. `errors` stop training (bad files: per `on_bad_file`); see `format()`."""

    root: str
    layout: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    findings: list[Finding]
    files_checked: int = 0
    from_cache: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    splits: FolderSplits | None = None  # readable samples with the train mapping; None when layout is broken
    bad_files: list[str] = field(default_factory=list)  # absolute paths of unreadable / over-size files
    entries: list[Entry] = field(default_factory=list, repr=False)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def add(self, kind: str, severity: str, message: str, items: list) -> None:
        """Record a finding, only when it has files to name."""
        if items:
            self.findings.append(Finding(kind, severity, message, items))

    # --- views -------------------------------------------------------------------------------------
    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.of("error")

    @property
    def warnings(self) -> list[Finding]:
        return self.of("warning")

    @property
    def notes(self) -> list[Finding]:
        return self.of("note")

    @property
    def layout_errors(self) -> list[Finding]:
        """Errors no policy can train around (bad files are handled by `dataset.on_bad_file`)."""
        return [f for f in self.errors if f.code not in BAD_FILE_CODES]

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    @property
    def imbalance(self) -> dict[str, float]:
        """Largest / smallest class count per split (classes with images only)."""
        out = {}
        for split, by_class in self.counts.items():
            sizes = [n for n in by_class.values() if n > 0]
            if sizes:
                out[split] = round(max(sizes) / min(sizes), 2)
        return out

    # --- checks that need the model's input size ----------------------------------------------------
    def check_min_size(self, crop_size: int | None) -> Finding | None:
        """(Re)compute the `tiny` warning: images whose short side is below the crop they get upscaled to."""
        self.findings = [f for f in self.findings if f.code != "tiny"]
        self.settings["crop_size"] = crop_size
        if not crop_size:
            return None
        items = []
        for e in self.entries:
            facts = self.facts.get(e.path, {})
            w, h = facts.get("width"), facts.get("height")
            if facts.get("decoded") and w and h and min(w, h) < crop_size:
                items.append(Item(self.rel(e.path), f"{w}x{h}"))
        if not items:
            return None
        found = Finding("tiny", "warning",
                        f"{len(items)} image(s) smaller than the {crop_size}px crop; they are upscaled (blurry).",
                        items)
        self._add(found)
        return found

    def _add(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.findings.sort(key=lambda f: SEVERITIES.index(f.severity))  # stable: keeps check order within

    # --- output --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": not self.errors,
            "class_names": self.class_names,
            "class_to_idx": {c: i for i, c in enumerate(self.class_names)},
            "counts": self.counts,
            "imbalance": self.imbalance,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "bad_files": [self.rel(p) for p in self.bad_files],
            "files_checked": self.files_checked,
            "from_cache": self.from_cache,
            "seconds": self.seconds,
            "settings": self.settings,
        }

    def format(self, limit: int | None = 20) -> str:
        """The readable report; at most `limit` files per finding (None: all; the JSON always has all)."""
        layout = {"train_val": "train/ + val/", "split": f"one folder, split {self.settings.get('val_fraction')} "
                  f"to val (seed {self.settings.get('seed')})", "invalid": "INVALID"}.get(self.layout, self.layout)
        mapping = ", ".join(f"{c}={i}" for i, c in enumerate(self.class_names))
        lines = [
            f"Dataset doctor: {self.root}",
            f"Layout: {layout}; {len(self.class_names)} classes (label = sorted position): {mapping or '-'}",
            f"Checked {self.files_checked} image files in {self.seconds:.2f} s ({self.from_cache} from cache)",
            "",
            *self._count_table(),
            "",
        ]
        titles = {"error": "Errors", "warning": "Warnings", "note": "Notes (handled, for information)"}
        for severity in SEVERITIES:
            found = self.of(severity)
            lines.append(f"{titles[severity]} ({len(found)}){':' if found else ': none'}")
            for f in found:
                lines.append(f"  [{f.code}] {f.message}")
                shown = f.items if limit is None else f.items[:limit]
                lines += [f"      {i.path}" + (f": {i.detail}" if i.detail else "") for i in shown]
                if len(shown) < len(f.items):
                    lines.append(f"      ... and {len(f.items) - len(shown)} more (see the JSON report, or --all)")
        lines += ["", self.verdict()]
        return "\n".join(lines)

    def verdict(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        if self.layout_errors:
            return f"Verdict: NOT READY - {n_err} error(s); training would fail or learn wrong labels."
        if self.bad_files:
            return (f"Verdict: NOT CLEAN - {len(self.bad_files)} bad file(s); training skips them "
                    "(dataset.on_bad_file=skip, the default) or stops (on_bad_file=error).")
        return f"Verdict: OK to train ({n_warn} warning(s))."

    def _count_table(self) -> list[str]:
        splits = list(self.counts)
        if not splits:
            return ["(no images counted)"]
        classes = list(dict.fromkeys(c for s in splits for c in self.counts[s]))
        width = max([len(c) for c in classes] + [len("largest/smallest")])
        row = "  {:<" + str(width) + "}" + "".join("  {:>7}" for _ in splits)
        out = [row.format("class", *splits)]
        out += [row.format(c, *(self.counts[s].get(c, 0) for s in splits)) for c in classes]
        out.append(row.format("total", *(sum(self.counts[s].values()) for s in splits)))
        ratios = self.imbalance
        out.append(row.format("largest/smallest", *(f"{ratios[s]:.2f}" if s in ratios else "-" for s in splits)))
        return out


# --- per-file facts ------------------------------------------------------------------------------------
def inspect_file(path: str, max_pixels: int) -> dict[str, Any]:
    """Read, hash and fully decode one file the way training will; never raises."""
    facts: dict[str, Any] = {"decoded": False, "error": None}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        facts["error"] = f"cannot open: {e}"
        return facts
    facts["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        facts["error"] = "empty file (0 bytes)"
        return facts
    try:
        allow_pixels(max_pixels)
        with Image.open(io.BytesIO(data)) as im:
            facts.update(format=im.format, mode=im.mode, width=im.width, height=im.height,
                         bits=_bit_depth(im, data), transparency=has_transparency(im),
                         frames=getattr(im, "n_frames", 1), orientation=im.getexif().get(0x0112, 1))
            if im.width * im.height > max_pixels:
                return facts  # over the cap: not decoded; reported as too_large
            rgb = to_rgb(im)  # the full decode catches truncation, which Image.verify() does not
            colours = rgb.resize((64, 64), Image.Resampling.NEAREST).getcolors(4096) or [(0, None)]
            facts["colours"] = len(colours)
            facts["dominant"] = round(max(n for n, _ in colours) / 4096, 3)  # share of the commonest colour
            facts["decoded"] = True
    except Image.DecompressionBombError as e:
        facts["bomb"] = str(e)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a finding, not a crash
        facts["error"] = _describe_error(e, data)
    return facts


def _bit_depth(im: Image.Image, data: bytes) -> int:
    """Bits per channel. Pillow reads 16-bit RGB PNGs as 8-bit, so PNG depth comes from the IHDR header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24:
        return data[24]
    if im.mode.startswith("I;16"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    if im.mode == "1":
        return 1
    bits = getattr(im, "tag_v2", {}).get(258) if im.format == "TIFF" else None  # TIFF BitsPerSample
    if bits:
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return 8


def _describe_error(e: Exception, data: bytes) -> str:
    if not isinstance(e, Image.UnidentifiedImageError):
        return f"{type(e).__name__}: {e}"
    try:
        head = data[:64].decode("utf-8")
    except UnicodeDecodeError:
        return "not a recognised image format"
    if all(c.isprintable() or c in "\r\n\t" for c in head):
        return f"text, not an image (starts {head[:24]!r})"
    return "not a recognised image format"


class FactsCache:
    """Per-file facts keyed by path relative to the root, valid while size and mtime are unchanged."""

    def __init__(self, cache_dir: str | os.PathLike | None, root: str) -> None:
        self.path = None
        self.old: dict[str, Any] = {}
        self.new: dict[str, Any] = {}
        self.root = root
        if cache_dir:
            key = hashlib.sha1(root.encode()).hexdigest()[:16]
            self.path = Path(cache_dir) / f"doctor-{key}.json"
            try:
                stored = json.loads(self.path.read_text())
                if stored.get("version") == CACHE_VERSION and stored.get("root") == root:
                    self.old = stored["files"]
            except (OSError, ValueError, KeyError, TypeError):
                self.old = {}  # missing or corrupt cache: recompute

    @staticmethod
    def stamp(path: str) -> list[int]:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]

    def get(self, path: str, stamp: list[int], max_pixels: int) -> dict[str, Any] | None:
        hit = self.old.get(os.path.relpath(path, self.root))
        if not hit or hit[0] != stamp:
            return None
        facts = hit[1]
        w, h = facts.get("width") or 0, facts.get("height") or 0
        if not facts.get("decoded") and not facts.get("error") and w * h <= max_pixels:
            return None  # skipped for size last time, but the cap now allows it
        return facts

    def put(self, path: str, stamp: list[int], facts: dict[str, Any]) -> None:
        self.new[os.path.relpath(path, self.root)] = [stamp, facts]

    def save(self) -> None:
        """Atomically replace the cache (parallel runs may share it); entries of deleted files drop out."""
        if self.path is None or self.new == self.old:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "root": self.root, "files": self.new}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("Could not write the doctor cache %s (%s); the next scan decodes again.", self.path, e)


def inspect_all(paths: Sequence[str], max_pixels: int, cache: FactsCache,
                workers: int | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Facts for every path (cached or decoded in parallel) and how many came from the cache."""
    facts, todo = {}, []
    for p in paths:
        try:
            stamp = FactsCache.stamp(p)
        except OSError as e:
            facts[p] = {"decoded": False, "error": f"cannot stat: {e}"}
            continue
        hit = cache.get(p, stamp, max_pixels)
        if hit is not None:
            facts[p] = hit
            cache.put(p, stamp, hit)
        else:
            todo.append((p, stamp))
    from_cache = len(facts)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if len(todo) > 8 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doctor") as pool:
            results = list(pool.map(lambda t: inspect_file(t[0], max_pixels), todo))
    else:
        results = [inspect_file(p, max_pixels) for p, _ in todo]
    for (p, stamp), result in zip(todo, results, strict=True):
        facts[p] = result
        cache.put(p, stamp, result)
    cache.save()
    return facts, from_cache


# --- the checks ------------------------------------------------------------------------------------------
def diagnose(
    root: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    crop_size: int | None = None,
    max_pixels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    imbalance_ratio: float = 3.0,
) -> DatasetReport:
    """Scan `root` (train/ + val/, or one folder to split) and return every finding.

    `crop_size`: images with a shorter side are `tiny`. `max_pixels`: images above are `too_large` bad files
    (default PIL's decompression-bomb limit). `cache_dir`: where per-file facts are cached (None: no cache).
    """
    start = time.perf_counter()
    root = os.path.abspath(os.path.expanduser(str(root)))
    max_pixels = int(max_pixels or DEFAULT_MAX_PIXELS)
    found = survey(root)
    report = DatasetReport(root, found.layout, list(found.class_names), {}, [],
                           settings={"val_fraction": val_fraction, "seed": seed, "max_pixels": max_pixels,
                                     "imbalance_ratio": imbalance_ratio})
    for p in found.problems:
        report.findings.append(Finding(p.code, p.severity, p.message, [Item(report.rel(x)) for x in p.paths]))
    if found.layout == "split" and not 0.0 < val_fraction < 1.0:
        report.layout = "invalid"
        report.findings.append(Finding("bad_val_fraction", "error",
               f"{root} has no val/ folder and dataset.val_fraction={val_fraction}; "
               "use 0 < val_fraction < 1."))
    listings = [x for x in (found.train, found.val) if x is not None]
    _ignored(report, listings)

    all_images = [p for listing in listings for files in listing.classes.values() for p in files]
    report.facts, report.from_cache = inspect_all(all_images, max_pixels, FactsCache(cache_dir, root), workers)
    report.files_checked = len(all_images)
    _bad_files(report, all_images, max_pixels)
    report.entries = _entries(report, found, val_fraction, seed)
    _unreadable_classes(report, found)
    _counts(report)
    _duplicates_and_leaks(report)
    _imbalance(report, imbalance_ratio)
    _suspicious(report)
    _colour_notes(report)
    report.findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    report.check_min_size(crop_size)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _ignored(report: DatasetReport, listings: Iterable[SplitListing]) -> None:
    files = [(p, kind) for listing in listings for p, kind in listing.ignored_files]
    dirs = [d for listing in listings for d in listing.ignored_dirs]
    if files:
        kinds = Counter(kind for _, kind in files)
        summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))
        report.findings.append(Finding("ignored_files", "note", f"{len(files)} non-image file(s) ignored: {summary}.",
                                       [Item(report.rel(p), k) for p, k in files]))
    if dirs:
        report.findings.append(Finding("ignored_dirs", "note",
               f"{len(dirs)} hidden or tool folder(s) ignored; they are never classes.",
                                       [Item(report.rel(d)) for d in dirs]))


def _bad_files(report: DatasetReport, paths: Sequence[str], max_pixels: int) -> None:
    unreadable, too_large, bad = [], [], []
    for p in paths:
        f = report.facts[p]
        w, h = f.get("width") or 0, f.get("height") or 0
        if f.get("error"):
            unreadable.append(Item(report.rel(p), f["error"]))
        elif not f.get("decoded") or w * h > max_pixels:  # the cap may be lower than when it was cached
            size = f"{w}x{h} = {w * h:,} px" if w else f.get("bomb")
            too_large.append(Item(report.rel(p), f"{size} > dataset.max_pixels={max_pixels:,}"))
        else:
            continue
        bad.append(p)
    report.add("unreadable", "error",
               f"{len(unreadable)} file(s) cannot be decoded (truncated, corrupt, empty or "
               "not an image).", unreadable)
    report.add("too_large", "error",
               f"{len(too_large)} image(s) above the pixel cap; decoding them could exhaust "
               "memory (PIL's decompression-bomb guard).", too_large)
    report.bad_files = bad


def _entries(report: DatasetReport, found: Survey, val_fraction: float, seed: int) -> list[Entry]:
    """The readable images with the split each lands in (after the seeded split for a single folder)."""
    if report.layout != "invalid":
        report.splits = found.splits(val_fraction, seed, exclude=report.bad_files)
        by_label = dict(enumerate(found.class_names))
        return ([Entry("train", by_label[s.label], s.path) for s in report.splits.train]
                + [Entry("val", by_label[s.label], s.path) for s in report.splits.val])
    bad = set(report.bad_files)
    entries = []
    for split, listing in (("train", found.train), ("val", found.val)):
        if listing is not None:
            entries += [Entry(split, c, p) for c, files in listing.classes.items() for p in files if p not in bad]
    return entries


def _unreadable_classes(report: DatasetReport, found: Survey) -> None:
    """A class whose every file is bad is as empty as an empty folder."""
    if found.train is None:
        return
    bad = set(report.bad_files)
    dead = [c for c, files in found.train.classes.items() if files and all(p in bad for p in files)]
    if dead:
        report.findings.append(Finding("no_readable_images", "error",
               f"class folder(s) {dead} hold no readable image; fix or remove them.",
                                       [Item(report.rel(str(found.train.path / c))) for c in dead]))
        report.splits = None


def _counts(report: DatasetReport) -> None:
    """Readable images per class per split: train classes in label order, then unknown val classes."""
    if not report.class_names and not report.entries:
        return
    has_val = report.splits is not None or any(e.split == "val" for e in report.entries)
    for split in ("train", "val") if has_val else ("train",):
        seen = Counter(e.cls for e in report.entries if e.split == split)
        classes = report.class_names + sorted(set(seen) - set(report.class_names))
        report.counts[split] = {c: seen.get(c, 0) for c in classes}


def _duplicates_and_leaks(report: DatasetReport) -> None:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in report.entries:
        groups[report.facts[e.path]["sha256"]].append(e)
    dup, conflict, leak = [], [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        for split in ("train", "val"):
            same = [m for m in members if m.split == split]
            if len(same) > 1:
                others = ", ".join(report.rel(m.path) for m in same[1:])
                item = Item(report.rel(same[0].path), f"same content as {others}")
                (conflict if len({m.cls for m in same}) > 1 else dup).append(item)
        train = [m for m in members if m.split == "train"]
        for m in members:
            if m.split == "val" and train:
                leak.append(Item(report.rel(m.path), f"also in train: {', '.join(report.rel(t.path) for t in train)}"))
    report.add("conflicting_labels", "warning",
               f"{len(conflict)} image(s) stored under more than one class of a split; "
               "they teach contradictory labels.", conflict)
    report.add("duplicate", "warning",
               f"{len(dup)} image(s) duplicated within a split (identical bytes); they "
               "count twice.", dup)
    report.add("leak", "warning",
               f"{len(leak)} val image(s) also in train (identical bytes); validation "
               "accuracy is optimistic. Remove them from one split.", leak)


def _imbalance(report: DatasetReport, ratio: float) -> None:
    items = []
    for split, by_class in report.counts.items():
        sizes = {c: n for c, n in by_class.items() if n > 0}
        if len(sizes) > 1:
            big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
            if sizes[big] >= ratio * sizes[small]:
                items.append(Item(split, f"{big}: {sizes[big]} vs {small}: {sizes[small]} "
                                         f"({sizes[big] / sizes[small]:.1f}x)"))
    report.add("imbalance", "warning",
               f"classes differ in size by {ratio:g}x or more; accuracy can hide a "
               "neglected class (consider class weights or more data).", items)


def _suspicious(report: DatasetReport) -> None:
    """Images unlike the rest: a rare file format, or a flat graphic among photos (a placeholder?)."""
    decoded = [e for e in report.entries if report.facts[e.path].get("decoded")]
    if not decoded:
        return
    formats = Counter(report.facts[e.path].get("format") for e in decoded)
    common, n_common = formats.most_common(1)[0]
    odd_format = len(decoded) >= ODD_FORMAT_MIN_IMAGES and n_common >= ODD_FORMAT_SHARE * len(decoded)
    median_colours = statistics.median(report.facts[e.path].get("colours", 0) for e in decoded)
    items = []
    for e in decoded:
        f = report.facts[e.path]
        reasons = []
        if odd_format and f.get("format") != common:
            reasons.append(f"{f.get('format')} among {n_common} {common} images")
        flat = f.get("colours", 0) <= FEW_COLOURS and f.get("dominant", 0) >= FLAT_SHARE
        if flat and median_colours >= PHOTO_COLOURS:
            reasons.append(f"{f['colours']} colours, {f['dominant']:.0%} one colour (a typical image here has "
                           f"~{median_colours:.0f} colours): a graphic or placeholder, not a photo?")
        if reasons:
            items.append(Item(report.rel(e.path), "; ".join(reasons)))
    if items:
        report.findings.append(Finding("suspicious", "warning",
               f"{len(items)} image(s) look unlike the rest; check they belong here.", items))


def _colour_notes(report: DatasetReport) -> None:
    """Formats that load_rgb converts: listed so a run records what it did to them."""
    checks = [
        ("grayscale", "grayscale; replicated to 3 channels",
         lambda f: f.get("mode") in GRAYSCALE_MODES, lambda f: f["mode"]),
        ("transparency", "with transparency; composited on white",
         lambda f: f.get("transparency"),
         lambda f: f["mode"] if f["mode"] in ("RGBA", "LA", "PA") else f"{f['mode']} + transparent colour"),
        ("cmyk", "CMYK; converted to RGB", lambda f: f.get("mode") == "CMYK", lambda f: f.get("format", "")),
        ("high_bit_depth", "more than 8 bits per channel; scaled to 8 bits (high byte)",
         lambda f: (f.get("bits") or 8) > 8, lambda f: f"{f['bits']}-bit {f.get('format')} ({f['mode']})"),
        ("animated", "animated; only the first frame is used",
         lambda f: (f.get("frames") or 1) > 1, lambda f: f"{f['frames']} frames"),
        ("exif_rotated", "with an EXIF orientation; rotated upright (train and predict alike)",
         lambda f: f.get("orientation", 1) not in (None, 1), lambda f: f"orientation {f['orientation']}"),
    ]
    decoded = [e for e in report.entries if report.facts[e.path].get("decoded")]
    for code, what, test, detail in checks:
        items = [Item(report.rel(e.path), detail(report.facts[e.path])) for e in decoded if test(report.facts[e.path])]
        if items:
            report.findings.append(Finding(code, "note", f"{len(items)} image(s) {what}.", items))
