"""The dataset doctor's checks: `diagnose(root)` finds, file by file, what would make training fail late or be
silently wrong, and returns a `DatasetReport` (report.py) of findings with a severity, each naming its files.

One walk of the tree (`folders.survey`, the same walk training uses), then every image's facts (inspect.py:
decoded as training decodes it, cached by content digest), then the checks below over those facts. A root whose
shape is not a dataset's (`folders.layout_problem`) is reported at once: no walk, no decoding, no cache.

Severities: `error` = training would fail or be wrong (unreadable files, layout errors); `warning` = worth a
look (duplicates, leakage, imbalance, tiny or suspicious images, a class missing from val); `note` = handled
predictably (colour conversions, ignored litter and tool folders). Unreadable and over-size files are
"bad files": training skips or refuses them according to `dataset.on_bad_file`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from transferlab.data.doctor.inspect import FactsCache, inspect_all
from transferlab.data.doctor.report import SEVERITIES, DatasetReport, Entry, Finding, Item
from transferlab.data.folders import SplitListing, Survey, survey
from transferlab.data.images import DEFAULT_MAX_PIXELS

GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# A 64x64 sample of a photo has hundreds of colours; a placeholder graphic a few dozen, mostly one colour
# (hymenoptera's imageNotFound.gif: 27 colours, 93% background; its flattest photo: 497 colours).
FEW_COLOURS, FLAT_SHARE, PHOTO_COLOURS = 64, 0.5, 256
# A format this rare (one GIF among JPEGs) is suspicious once the set is big enough to have a norm.
ODD_FORMAT_MIN_IMAGES, ODD_FORMAT_SHARE = 50, 0.98
# A leaked val file names this many of its train copies (every copy is named under [duplicate] or
# [conflicting_labels], the train group's finding).
LEAK_NAMES = 10


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
    if found.train is None:  # refused by its shape (folders.layout_problem): nothing walked, nothing to decode
        report.seconds = round(time.perf_counter() - start, 3)
        return report
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
    """Byte-identical files within a split (`duplicate`, or `conflicting_labels` across classes) and across
    train and val (`leak`). Linear in the files: each file's relative path is computed once, and a leaked val
    file names at most LEAK_NAMES of its train copies (a group of k copies would otherwise cost k^2 names; the
    train group's own finding names every copy)."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in report.entries:
        groups[report.facts[e.path]["sha256"]].append(e)
    dup, conflict, leak = [], [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        by_split: dict[str, list[tuple[Entry, str]]] = {"train": [], "val": []}
        for m in members:
            by_split.setdefault(m.split, []).append((m, report.rel(m.path)))
        codes = {}
        for split in ("train", "val"):
            same = by_split[split]
            if len(same) > 1:
                item = Item(same[0][1], f"same content as {', '.join(name for _, name in same[1:])}")
                codes[split] = "conflicting_labels" if len({m.cls for m, _ in same}) > 1 else "duplicate"
                (conflict if codes[split] == "conflicting_labels" else dup).append(item)
        train = [name for _, name in by_split["train"]]
        if train and by_split["val"]:
            listed = ", ".join(train[:LEAK_NAMES])
            if len(train) > LEAK_NAMES:
                listed += f" and {len(train) - LEAK_NAMES} more (all named under [{codes['train']}])"
            also = f"also in train: {listed}"  # one string for every val copy of the group
            leak += [Item(name, also) for _, name in by_split["val"]]
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
               "neglected class (train with dataset.balance=loss or =sampler if every class matters alike, "
               "or add images of the rarest).", items)


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
