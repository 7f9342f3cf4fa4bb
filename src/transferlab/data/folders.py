"""Scan an image-folder dataset into (path, label) samples with one class mapping for every split.

torchvision's ImageFolder builds a mapping per folder, so a val/ that lacks a class silently shifts every
later label. Here the mapping comes from train/ and is imposed on val/: an unknown val class is an error, a
missing one a warning, both naming the class.

`survey` walks the tree once and records everything it sees (images, ignored files and folders, layout
problems); `scan_folder` turns a clean survey into samples and raises on the first layout error. The dataset
doctor reads the same survey, so what it checks is exactly what training would load.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import ConfigValueError, DatasetLayoutError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
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


def file_identity(samples: Sequence[Sample]) -> list[tuple[str, int, int, int]]:
    """(path, size, mtime, label) per sample, what the on-disk caches are keyed on: an edited, replaced or
    relabelled file changes the key."""
    out = []
    for s in samples:
        st = os.stat(s.path)
        out.append((s.path, st.st_size, st.st_mtime_ns, s.label))
    return out


@dataclass
class FolderSplits:
    """The result of scanning a dataset root."""

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str  # "train_val" or "split"
    fold: tuple[int, int] | None = None  # (i, K): fold i of a K-fold split of the pool is the validation set


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


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


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


def list_images(class_dir: Path) -> list[str]:
    """Image files under a class folder (recursively, skipping hidden/tool folders), sorted."""
    return _walk_class(class_dir, SplitListing(class_dir))


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


def survey(root: str | os.PathLike) -> Survey:
    """Walk `root/train/<class>/*` (+ `root/val/<class>/*`), or `root/<class>/*`; collect every problem."""
    root = Path(root)
    if not root.is_dir():
        problem = Problem("missing_root", "error",
                          f"dataset.root={str(root)!r} does not exist. Point dataset.root at a folder with "
                          "train/<class>/ and val/<class>/ subfolders (or <class>/ folders to split).")
        return Survey(root, "invalid", None, None, [problem], [])
    train_dir, val_dir = root / "train", root / "val"
    has_train = train_dir.is_dir()
    source = list_split(train_dir if has_train else root)
    names = sort_class_names(list(source.classes))
    problems = _class_problems(root, source, names, has_train)
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


def _class_problems(root: Path, source: SplitListing, names: list[str], has_train: bool) -> list[Problem]:
    problems = []
    if not has_train and names and all(n.lower() in SPLIT_NAMES for n in names):
        problems.append(Problem(
            "root_too_high", "error",
            f"{root}: its class folders {names} are split names, not classes. Name the splits train/ and val/, "
            f"or point dataset.root at one of them.", tuple(str(root / n) for n in names)))
        return problems
    if len(names) < 2:
        nested = [n for n in names if (source.path / n / "train").is_dir()]
        if nested:
            problems.append(Problem(
                "root_too_high", "error",
                f"{source.path}: dataset.root is one level too high; {source.path / nested[0]} holds train/. "
                f"Use dataset.root={source.path / nested[0]}", tuple(str(source.path / n) for n in nested)))
            return problems
        problems.append(Problem(
            "too_few_classes", "error",
            f"{source.path}: found {len(names)} class folder(s) {names}; need at least 2 "
            f"(expected <class>/ subfolders holding images).", tuple(str(source.path / n) for n in names)))
        return problems
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
