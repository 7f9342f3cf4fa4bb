"""Scan an image-folder dataset into (path, label) samples with one class mapping for every split.

torchvision's ImageFolder builds a mapping per folder, so a val/ that lacks a class silently shifts every
later label. Here the mapping comes from train/ and is imposed on val/: an unknown val class is an error, a
missing one a warning, both naming the class.

`survey` walks the tree once and records everything it sees (images, ignored files and folders, layout
problems); `scan_folder` turns a clean survey into samples and raises on the first layout error. The dataset
doctor reads the same survey, so what it checks is exactly what training would load. Before any walk,
`layout_problem` checks the shape from the top two levels, so a root that is no dataset is refused at once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import ConfigValueError, DatasetLayoutError

log = logging.getLogger(__name__)

# Formats Pillow registers and opens that still give no pixels here (besides its stub plugins: HDF5, GRIB, BUFR,
# WMF, which need a handler installed): EPS needs Ghostscript; MPEG is only identified, and would decode black.
UNDECODABLE_FORMATS = frozenset({"EPS", "MPEG"})
# Folders that tools create next to data; they must never become classes.
IGNORED_DIR_PREFIXES = (".", "_")
# Files that operating systems leave next to images (macOS, Windows, KDE).
OS_LITTER = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".directory", "icon\r"})
# Folder names that mean "a split", not "a class": a root whose classes are these is one level too high.
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass
class FolderSplits:
    """The result of scanning a dataset root."""

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str  # "train_val" or "split"
    fold: tuple[int, int] | None = None  # (i, K): fold i of a K-fold split of the pool is the validation set


def fingerprint(splits: FolderSplits, root: str | os.PathLike) -> dict[str, str | int]:
    """What a checkpoint records of the data it was trained on, so a resume on other data is caught
    (`transferlab.training.resume`): a sha256 of every train and val sample's path relative to `root` and its
    label (not the bytes: moving the tree or touching a file changes nothing), and the two counts."""
    lines = sorted(f"{split}\t{Path(os.path.relpath(s.path, root)).as_posix()}\t{s.label}"
                   for split, samples in (("train", splits.train), ("val", splits.val)) for s in samples)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"sha256": digest, "train": len(splits.train), "val": len(splits.val)}


@dataclass(frozen=True)
class Problem:
    """A layout problem: `error`s make training impossible or wrong, `warning`s deserve a look."""

    code: str
    severity: str  # "error" | "warning"
    message: str
    paths: tuple[str, ...] = ()  # the folders concerned


@dataclass
class SplitListing:
    """Everything under one folder of class folders: images per class, and what was ignored and why."""

    path: Path
    classes: dict[str, list[str]] = field(default_factory=dict)  # class folder -> image paths, sorted
    ignored_dirs: list[str] = field(default_factory=list)
    ignored_files: list[tuple[str, str]] = field(default_factory=list)  # (path, kind)


@dataclass
class Survey:
    """One walk over a dataset root: the source of training classes, val/ if any, and layout problems."""

    root: Path
    layout: str  # "train_val" | "split" | "invalid"
    train: SplitListing | None
    val: SplitListing | None
    problems: list[Problem]
    class_names: list[str]

    def splits(self, val_fraction: float = 0.2, seed: int = 0, exclude: Sequence[str] = ()) -> FolderSplits:
        """Samples with the train mapping; `exclude`d paths (unreadable files) are left out."""
        if self.layout == "invalid" or self.train is None:
            raise DatasetLayoutError(self.problems[0].message if self.problems else f"{self.root}: invalid layout")
        skip = set(exclude)
        class_to_idx = {c: i for i, c in enumerate(self.class_names)}

        def samples(listing: SplitListing, names: Sequence[str]) -> list[Sample]:
            return [Sample(p, class_to_idx[c]) for c in names for p in listing.classes[c] if p not in skip]

        train = samples(self.train, self.class_names)
        if self.layout == "train_val":
            assert self.val is not None
            return FolderSplits(self.class_names, train,
                                samples(self.val, [c for c in self.class_names if c in self.val.classes]),
                                "train_val")
        train, val = stratified_split(train, val_fraction, seed)
        return FolderSplits(self.class_names, train, val, "split")


def is_ignored_dir(name: str) -> bool:
    return name.startswith(IGNORED_DIR_PREFIXES)


@functools.cache
def image_extensions() -> frozenset[str]:
    """The extensions of image files (lowercase, with the dot), for training and predict alike: Pillow's own
    registry (`Image.registered_extensions()`) for the formats it opens (`Image.OPEN`), less those it cannot
    decode (UNDECODABLE_FORMATS, stub plugins), so .jfif, .tga, .ico ... are images and a .h5 is not. PIL is
    imported on the first call, not with this module: the config layer stays light."""
    from PIL import Image, ImageFile

    def decodes(fmt: str) -> bool:
        factory = Image.OPEN.get(fmt, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        return factory is not None and not stub and fmt not in UNDECODABLE_FORMATS

    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if decodes(fmt))


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions() and not name.startswith(".")


def ignored_kind(name: str) -> str:
    """Why a non-image file is skipped: OS litter (incl. `._*` AppleDouble), hidden, or another extension."""
    if name.lower() in OS_LITTER or name.startswith("._"):
        return "os_litter"
    if name.startswith("."):
        return "hidden"
    return "non_image"


def sort_class_names(names: Sequence[str]) -> list[str]:
    """Sorted names; numerically when every name is an integer ("2" before "10")."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def class_dirs(split_dir: Path) -> list[str]:
    return [e.name for e in os.scandir(split_dir) if e.is_dir() and not is_ignored_dir(e.name)]


def list_images(class_dir: Path, ignored: list[tuple[str, str]] | None = None) -> list[str]:
    """Image files under a class folder (recursively, skipping hidden/tool folders), sorted; the other files,
    with why they were left out (`ignored_kind`), are added to `ignored` when given."""
    listing = SplitListing(class_dir)
    found = _walk_class(class_dir, listing)
    if ignored is not None:
        ignored.extend(listing.ignored_files)
    return found


def _walk_class(class_dir: Path, listing: SplitListing) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        listing.ignored_dirs.extend(os.path.join(dirpath, d) for d in sorted(dirnames) if is_ignored_dir(d))
        dirnames[:] = sorted(d for d in dirnames if not is_ignored_dir(d))
        for f in sorted(filenames):
            path = os.path.join(dirpath, f)
            if is_image_file(f):
                found.append(path)
            else:
                listing.ignored_files.append((path, ignored_kind(f)))
    return found


def list_split(split_dir: Path) -> SplitListing:
    """Walk `split_dir/<class>/...`; files loose in `split_dir` itself are ignored as not in a class."""
    listing = SplitListing(split_dir)
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.is_dir():
            if is_ignored_dir(entry.name):
                listing.ignored_dirs.append(entry.path)
            else:
                listing.classes[entry.name] = _walk_class(Path(entry.path), listing)
        elif entry.is_file():
            kind = ignored_kind(entry.name)
            listing.ignored_files.append((entry.path, "not_in_class_folder" if kind == "non_image" else kind))
    return listing


def layout_problem(root: str | os.PathLike) -> Problem | None:
    """The layout's shape, checked before anything is walked or decoded (None: it is right). A root that is no
    image-folder dataset (`/`, a home folder, a tree with images only deep down) would otherwise be walked to
    the bottom and every image in it decoded before the survey said so: 41k images, 78 s on `/`.

    Reads only the root, its folders (train/'s, when there is one) and their entries, stopping at the first
    image file directly inside one of them: a tree that passes is then surveyed in full (`survey`)."""
    root = Path(os.path.expanduser(os.fspath(root)))
    if not root.is_dir():
        return Problem("missing_root", "error",
                       f"dataset.root={str(root)!r} does not exist. Point dataset.root at a folder with "
                       "train/<class>/ and val/<class>/ subfolders (or <class>/ folders to split).")
    has_train = (root / "train").is_dir()
    split_dir = root / "train" if has_train else root
    names = sort_class_names(class_dirs(split_dir))
    if not has_train and names and all(n.lower() in SPLIT_NAMES for n in names):
        return Problem(
            "root_too_high", "error",
            f"{root}: its class folders {names} are split names, not classes. Name the splits train/ and val/, "
            f"or point dataset.root at one of them.", tuple(str(root / n) for n in names))
    if len(names) < 2:
        nested = [n for n in names if (split_dir / n / "train").is_dir()]
        if nested:
            return Problem(
                "root_too_high", "error",
                f"{split_dir}: dataset.root is one level too high; {split_dir / nested[0]} holds train/. "
                f"Use dataset.root={split_dir / nested[0]}", tuple(str(split_dir / n) for n in nested))
        return Problem(
            "too_few_classes", "error",
            f"{split_dir}: found {len(names)} class folder(s) {names}; need at least 2 "
            f"(expected <class>/ subfolders holding images).", tuple(str(split_dir / n) for n in names))
    if not any(_holds_an_image(split_dir / n) for n in names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        where = f"train/ with {len(names)} folders" if has_train else f"{len(names)} folders"
        return Problem(
            "not_a_dataset", "error",
            f"dataset.root={root}: expected train/ and val/ folders of class folders, or class folders of images; "
            f"found {where} ({shown}), none with images directly inside. Point dataset.root at the folder whose "
            "subfolders are the classes.", tuple(str(split_dir / n) for n in names))
    return None


def check_layout(root: str | os.PathLike) -> None:
    """Raise the shape's problem (`layout_problem`) as one DatasetLayoutError line: a command refuses a root that
    is no dataset before it walks, decodes or imports anything heavy."""
    shape = layout_problem(root)
    if shape is not None:
        raise DatasetLayoutError(shape.message)


def _holds_an_image(folder: Path) -> bool:
    """Whether an image file sits directly in `folder` (its first one ends the listing; unreadable: no)."""
    try:
        with os.scandir(folder) as entries:
            return any(is_image_file(e.name) and e.is_file() for e in entries)
    except OSError:
        return False


def survey(root: str | os.PathLike) -> Survey:
    """Walk `root/train/<class>/*` (+ `root/val/<class>/*`), or `root/<class>/*`; collect every problem. The
    shape comes first (`layout_problem`): a root that is no dataset is refused before anything under it is walked."""
    root = Path(root)
    shape = layout_problem(root)
    if shape is not None:
        return Survey(root, "invalid", None, None, [shape], [])
    train_dir, val_dir = root / "train", root / "val"
    has_train = train_dir.is_dir()
    source = list_split(train_dir if has_train else root)
    names = sort_class_names(list(source.classes))
    problems = _empty_classes(source, names)
    val = None
    if has_train and val_dir.is_dir():
        val = list_split(val_dir)
        problems += _val_problems(train_dir, val, names)
    elif has_train:
        others = sorted(n for n in class_dirs(root) if n.lower() in SPLIT_NAMES - {"train", "training"})
        if others:
            problems.append(Problem(
                "no_val_folder", "warning",
                f"{root}: has train/ and {others} but no val/, so {others} is ignored and a fraction of train/ "
                "is held out instead. Rename it to val/ to validate on it.", tuple(str(root / n) for n in others)))
    elif root.name.lower() in SPLIT_NAMES and (root.parent / "val").is_dir() and root.name != "val":
        problems.append(Problem(
            "root_is_a_split", "warning",
            f"{root}: dataset.root points at a split; its sibling {root.parent / 'val'} is ignored and a "
            f"fraction of {root.name}/ is held out instead. Did you mean dataset.root={root.parent}?",
            (str(root.parent / "val"),)))
    layout = "invalid" if any(p.severity == "error" for p in problems) else ("train_val" if val else "split")
    return Survey(root, layout, source, val, problems, names)


def _empty_classes(source: SplitListing, names: list[str]) -> list[Problem]:
    """The one class problem a walk is needed for (the shape's are `layout_problem`'s)."""
    problems = []
    empty = [c for c in names if not source.classes[c]]
    if empty:
        problems.append(Problem("empty_class", "error",
                                f"{source.path}: class folder(s) {empty} contain no images; remove or fill them.",
                                tuple(str(source.path / c) for c in empty)))
    return problems


def _val_problems(train_dir: Path, val: SplitListing, names: list[str]) -> list[Problem]:
    problems = []
    unknown = sorted(set(val.classes) - set(names))
    if unknown:
        problems.append(Problem(
            "unknown_val_class", "error",
            f"{val.path}: class folder(s) {unknown} do not exist in {train_dir}; the model could not predict "
            f"them. Train classes: {names}. Rename or remove them.", tuple(str(val.path / c) for c in unknown)))
    missing = [c for c in names if c not in val.classes]
    if missing:
        problems.append(Problem("missing_val_class", "warning",
                                f"{val.path}: no validation folder for class(es) {missing}; they are never "
                                "validated.", tuple(str(val.path / c) for c in missing)))
    empty = [c for c in names if c in val.classes and not val.classes[c]]
    if empty:
        problems.append(Problem("empty_val_class", "warning",
                                f"{val.path}: class folder(s) {empty} contain no images; they are never "
                                "validated.", tuple(str(val.path / c) for c in empty)))
    return problems


def scan_folder(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> FolderSplits:
    """Scan `root/train/<class>/*` (+ `root/val/<class>/*`), or `root/<class>/*` and split it.

    With no val/ folder, a stratified, seeded split holds out `val_fraction` of each class. Raises
    DatasetLayoutError on the first layout error; warnings are logged.
    """
    found = survey(root)
    for p in found.problems:
        if p.severity == "error":
            raise DatasetLayoutError(p.message)
    for p in found.problems:
        log.warning("%s", p.message)
    if found.layout == "split" and not 0.0 < val_fraction < 1.0:
        raise DatasetLayoutError(f"{root} has no val/ folder and dataset.val_fraction={val_fraction}; use 0<f<1.")
    return found.splits(val_fraction, seed)


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic per-class holdout: the same files land in val for the same seed and file list."""
    rng = random.Random(seed)
    by_label: dict[int, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    train, val = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda s: s.path)
        rng.shuffle(group)
        n_val = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val


CV_POOLS = ("train", "all")


def kfold_split(splits: FolderSplits, folds: int, fold: int, seed: int, pool: str = "train",
                groups: Mapping[str, str] | None = None) -> FolderSplits:
    """Fold `fold` of a stratified, seeded `folds`-fold split of the training pool as (train, val).

    The pool is the train folder (`pool="train"`; a val/ folder is left out, e.g. kept as a final check) or
    train + val (`"all"`). A dataset without val/ has one folder only: its pool is every image (no
    `val_fraction` holdout is made). `groups` maps a path to a group key (the dataset doctor's content hash):
    files of one group always land in the same fold, so byte-identical copies never straddle train and val.
    Every fold of one (file list, seed) is disjoint from the others and together they are the pool.

    scikit-learn's StratifiedGroupKFold does the assignment: with unique files each class is spread over the
    folds within one image; with groups it keeps each group whole and the class shares as even as it can.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    check_fold_settings(folds, fold, pool)
    members = splits.train + splits.val if pool == "all" or splits.layout == "split" else list(splits.train)
    # The input order is part of the result: sort it so that the same files give the same folds.
    members.sort(key=lambda s: (s.label, s.path))
    counts = Counter(s.label for s in members)
    short = {splits.class_names[label]: counts.get(label, 0) for label in range(len(splits.class_names))
             if counts.get(label, 0) < folds}
    if short:
        where = "train + val" if pool == "all" or splits.layout == "split" else "the train folder"
        raise DatasetLayoutError(
            f"dataset.folds={folds}: class(es) {short} (images in {where}) have fewer images than folds; every "
            "fold must hold each class. Use fewer folds, add images, or dataset.cv_pool=all to pool val/ too.")
    keys = [(groups or {}).get(s.path, s.path) for s in members]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    labels = [s.label for s in members]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        train_idx, val_idx = list(splitter.split(labels, labels, [ids[k] for k in keys]))[fold]
    except ValueError as e:  # fewer distinct contents than folds
        raise DatasetLayoutError(f"dataset.folds={folds}: {e}") from None
    return FolderSplits(splits.class_names, [members[i] for i in sorted(train_idx)],
                        [members[i] for i in sorted(val_idx)], splits.layout, fold=(fold, folds))


def check_fold_settings(folds: int | None, fold: int, pool: str) -> None:
    """folds >= 2 (or None: no cross-validation), 0 <= fold < folds, pool in CV_POOLS (one-line user errors)."""
    if pool not in CV_POOLS:
        raise ConfigValueError(f"dataset.cv_pool={pool!r}; use one of {list(CV_POOLS)}.")
    if folds is None:
        return
    if int(folds) < 2:
        raise ConfigValueError(f"dataset.folds={folds}: cross-validation needs at least 2 folds (null: no folds).")
    if not 0 <= int(fold) < int(folds):
        raise ConfigValueError(f"dataset.fold={fold} with dataset.folds={folds}: use a fold in 0..{int(folds) - 1}.")
