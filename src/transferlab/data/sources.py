"""Where datasets come from: written from a bundled source, or downloaded and verified once.

Each preparer takes the dataset root and makes sure a train/val image-folder tree is there, so every dataset
runs through the same folder pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.folders import Sample, stratified_split
from transferlab.errors import DatasetLayoutError

log = logging.getLogger(__name__)

_COMPLETE = ".transferlab-complete"


def tree_digest(root: str | os.PathLike) -> str:
    """SHA-256 over the sorted (relative path, file SHA-256) list: a checksum of an extracted tree."""
    root = Path(root)
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != _COMPLETE):
        rel = path.relative_to(root).as_posix()
        outer.update(f"{hashlib.sha256(path.read_bytes()).hexdigest()} {rel}\n".encode())
    return outer.hexdigest()


def write_digits(root: str | os.PathLike, image_size: int = 48, val_fraction: float = 0.2, seed: int = 0) -> None:
    """Write scikit-learn's bundled 8x8 handwritten digits (1797 images) as root/{train,val}/<digit>/*.png.

    Offline and deterministic: the default dataset of `python train.py`. Written once (a marker file records
    completion, so an interrupted write is redone)."""
    from sklearn.datasets import load_digits

    root = Path(root)
    if (root / _COMPLETE).is_file():
        return
    _refuse_foreign(root)
    digits = load_digits()
    samples = [Sample(str(i), int(t)) for i, t in enumerate(digits.target)]
    train, val = stratified_split(samples, val_fraction, seed)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=_mkparent(root)))
    for split, items in (("train", train), ("val", val)):
        for s in items:
            pixels = (digits.images[int(s.path)] * (255.0 / 16.0)).round().astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.BILINEAR)
            out = tmp / split / str(s.label) / f"{int(s.path):04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            image.save(out)
    (tmp / _COMPLETE).write_text("sklearn.datasets.load_digits\n")
    if (root / _COMPLETE).is_file():  # a parallel job finished first
        shutil.rmtree(tmp)
        return
    _replace_dir(tmp, root)
    log.info("Wrote digits dataset (%d train, %d val) to %s", len(train), len(val), root)


# The four defect probabilities of ELPV's labels, as folder names (sorted = the label order)
# defect probability -> class folder, named as the example datasets' copy (../shared/datasets/elpv) names them, so
# a model trained on one copy reads the other
ELPV_CLASSES = {0.0: "0_functional", 1 / 3: "1_possibly_defective", 2 / 3: "2_likely_defective", 1.0: "3_defective"}


def write_elpv(root: str | os.PathLike, val_fraction: float = 0.25, seed: int = 0) -> None:
    """Make sure an ELPV tree (solar-cell electroluminescence, 2,624 greyscale 300x300 cells, 4 defect levels) is
    at `root`: used as it is when it already has train/ and val/ (e.g. a copy of the example datasets), else
    written once from the PyPI package `elpv-dataset` (Buerhop-Lutz et al. 2018, Deitsch et al. 2019; CC BY-NC-SA
    4.0) as root/{train,val}/<level>/cellNNNN.png (`ELPV_CLASSES`), split stratified by label (75/25 by
    default, as the paper does). The package is optional (`pip install elpv-dataset`, in the `bench` extra)."""
    root = Path(root)
    if (root / _COMPLETE).is_file() or ((root / "train").is_dir() and (root / "val").is_dir()):
        return
    _refuse_foreign(root)
    try:
        import elpv_dataset
    except ImportError:
        raise DatasetLayoutError(
            f"dataset=elpv: {root} has no train/ and val/, and the package that ships the images is not "
            "installed. pip install elpv-dataset (or pip install -e '.[bench]'), or point dataset.root at a copy "
            "with train/ and val/.") from None
    source = Path(elpv_dataset.__file__).parent / "data"
    rows = [line.split() for line in (source / "labels.csv").read_text().splitlines() if line.strip()]
    levels = sorted(ELPV_CLASSES)
    samples = []
    for rel, probability, _kind in rows:
        level = min(levels, key=lambda v: abs(v - float(probability)))  # labels are 0, 1/3, 2/3, 1
        samples.append(Sample(rel, levels.index(level)))
    train, val = stratified_split(samples, val_fraction, seed)
    tmp = Path(tempfile.mkdtemp(prefix=".elpv-", dir=_mkparent(root)))
    for split, items in (("train", train), ("val", val)):
        for s in items:
            out = tmp / split / ELPV_CLASSES[levels[s.label]] / Path(s.path).name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / s.path, out)
    (tmp / _COMPLETE).write_text(f"elpv-dataset, stratified split val_fraction={val_fraction} seed={seed}\n")
    if (root / _COMPLETE).is_file():  # a parallel job finished first
        shutil.rmtree(tmp)
        return
    _replace_dir(tmp, root)
    log.info("Wrote ELPV (%d train, %d val) to %s", len(train), len(val), root)


def download_hymenoptera(root: str | os.PathLike, url: str, sha256: str | None = None) -> None:
    """Make sure the tutorial's ants/bees set is at `root`: use it if present, else download and verify.

    The archive is extracted into a temporary folder, its member paths checked (no absolute paths or '..'),
    the extracted tree's digest compared with `sha256` (see `tree_digest`), and only then moved into place.
    """
    root = Path(root)
    if (root / "train").is_dir():
        return
    _refuse_foreign(root)
    from torchvision.datasets.utils import download_url

    parent = _mkparent(root)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=parent) as tmp:
        try:
            download_url(url, tmp, filename="archive.zip")  # shows a tqdm progress bar
        except Exception as e:
            raise RuntimeError(
                f"Could not download the hymenoptera dataset from {url} ({type(e).__name__}: {e}).\n"
                f"  Download and unzip it yourself so that {root}/train and {root}/val exist,\n"
                f"  or point at an existing copy: dataset.root=../shared/datasets/hymenoptera_data"
            ) from e
        extracted = Path(tmp) / "extracted"
        safe_extract_zip(Path(tmp) / "archive.zip", extracted)
        top = extracted / "hymenoptera_data" if (extracted / "hymenoptera_data").is_dir() else extracted
        if sha256:
            got = tree_digest(top)
            if got != sha256:
                raise RuntimeError(
                    f"Downloaded archive from {url} does not match the expected content "
                    f"(tree sha256 {got}, expected {sha256}); refusing to use it."
                )
        _replace_dir(top, root)


def safe_extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip, refusing members that would land outside `dest`."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if target != dest and dest not in target.parents:
                raise RuntimeError(f"{archive}: member {member!r} escapes the extraction folder; refusing.")
        zf.extractall(dest)


def _mkparent(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    return root.parent


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished tree into place (atomic rename on one filesystem). Only a folder this module wrote (its
    completion marker inside) or an empty one is ever replaced: anything else is the user's, and is refused."""
    _refuse_foreign(dst)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _refuse_foreign(root: Path) -> None:
    """Refuse, before writing anything, to put a prepared dataset where a folder of someone else's files is
    (`dataset.root=~/photos` with the default `dataset=digits` would otherwise replace the photos)."""
    if root.is_dir() and not (root / _COMPLETE).is_file() and any(root.iterdir()):
        raise DatasetLayoutError(
            f"dataset.root={root} is an existing folder that transferlab did not write, and this dataset "
            f"writes its own images there: refusing to replace it. For your own images use dataset=folder "
            f"dataset.root={root}; for this dataset, a new or empty folder.")
    if root.exists() and not root.is_dir():
        raise DatasetLayoutError(f"dataset.root={root} is a file, not a folder: give a new or empty folder.")
