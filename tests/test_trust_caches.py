"""Trust 2, no silent wrong answer, from the caches and the decoders:

1. an image replaced by another of the same byte size, its mtime put back, is never served from a cache (the
   caches key on content; an unchanged file is only stat'ed; a copied dataset still hits);
3. a file that turns unreadable after the dataset doctor's scan is left out with `dataset.on_bad_file=skip`
   (its row dropped from features and labels alike, named in summary.json, remembered by the cache entry) or
   stops the run naming it;
4. a cache folder that cannot be written (not a folder, read-only, full disk) is one warning naming it and the
   bytes needed; the run goes on with what it computed.

Real files on disk throughout: the tiny image folders of conftest, /work/shared/datasets/flowers12 for the
index's cost, in-process `train(cfg)` runs and a subprocess under RLIMIT_FSIZE for the full disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, compose_config, shrink
from tests.test_cache_integrity import (
    DAMAGE,
    build_features,
    edit_a_digit,
    feature_module,
    features_of,
    python,
    truncate,
)
from transferlab.data import identity
from transferlab.data.datamodule import FolderDataModule
from transferlab.data.decoded import DecodedImages
from transferlab.data.doctor import diagnose
from transferlab.data.doctor import inspect as doctor_module
from transferlab.data.folders import scan_folder
from transferlab.data.identity import INDEX_FILE, FileIndex
from transferlab.errors import BadImageError
from transferlab.tasks.train import train

FLOWERS = (ROOT / ".." / "shared" / "datasets" / "flowers12").resolve()


# --- 1. a file replaced keeping its size and mtime ------------------------------------------------------------
def same_size_pair(folder: Path) -> tuple[Path, Path]:
    """train/ant/000.png and train/bee/000.png re-saved as uncompressed PNGs (their own pixels): a PNG's size
    then depends on its dimensions alone, so one's bytes can replace the other's at the same size."""
    pair = folder / "train" / "ant" / "000.png", folder / "train" / "bee" / "000.png"
    for path in pair:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(pixels).save(path, compress_level=0)
    assert pair[0].stat().st_size == pair[1].stat().st_size and pair[0].read_bytes() != pair[1].read_bytes()
    return pair


def replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What `cp --preserve=timestamps` or `touch -r` over a file does: new bytes, same size, mtime put back."""
    before = path.stat()
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def train_row(module, path: Path) -> int:
    return [s.path for s in module.images.scan().train].index(str(path))


def test_an_image_replaced_at_the_same_size_and_mtime_misses_the_feature_cache(tmp_path, tiny_folder):
    """Before: size + mtime keys served the old image's features. Now the entry is keyed on content: a new
    entry is built, the replaced row holds the new image's features (those of the bee whose bytes it now has)
    and everything equals a build from scratch."""
    ant, bee = same_size_pair(tiny_folder)
    cache = tmp_path / "cache"
    first = build_features(tiny_folder, cache)
    replace_keeping_size_and_mtime(ant, bee.read_bytes())
    again = build_features(tiny_folder, cache)
    assert not again.cache_hit and again.cache_path != first.cache_path
    row, bee_row = train_row(again, ant), train_row(again, bee)
    assert not torch.allclose(again.train_features[0, row], first.train_features[0, row])
    assert torch.equal(again.train_features[0, row], again.train_features[0, bee_row])
    fresh = build_features(tiny_folder, tmp_path / "fresh-cache")
    for name, tensor in features_of(fresh).items():
        assert torch.equal(features_of(again)[name], tensor), name


def test_the_doctor_decodes_again_only_the_replaced_file(tmp_path, tiny_folder, monkeypatch):
    """The doctor's facts follow content too: the replaced file alone is decoded again (the others are cache
    hits), its facts are the new bytes', and the report sees what the replacement made of it: the same image
    under two labels."""
    ant, bee = same_size_pair(tiny_folder)
    cache = tmp_path / "cache"
    first = diagnose(tiny_folder, cache_dir=cache)
    assert "conflicting_labels" not in {f.code for f in first.findings}
    replace_keeping_size_and_mtime(ant, bee.read_bytes())
    decoded = []
    real = doctor_module.inspect_file
    monkeypatch.setattr(doctor_module, "inspect_file", lambda p, m: decoded.append(p) or real(p, m))
    second = diagnose(tiny_folder, cache_dir=cache)
    assert decoded == [str(ant)]
    assert second.from_cache == second.files_checked - 1 == first.files_checked - 1
    assert second.facts[str(ant)]["sha256"] == hashlib.sha256(bee.read_bytes()).hexdigest()
    (conflict,) = [(i.path, i.detail) for f in second.findings if f.code == "conflicting_labels" for i in f.items]
    assert conflict == ("train/ant/000.png", "same content as train/bee/000.png")


def test_a_copied_dataset_a_lost_index_or_a_touched_file_still_hit_the_feature_cache(tmp_path, tiny_folder):
    """Content keys survive what leaves the bytes alone: the dataset copied elsewhere with its timestamps
    (`rsync -a`), the file index deleted, a file's mtime changed."""
    cache = tmp_path / "cache"
    first = build_features(tiny_folder, cache)
    copy = shutil.copytree(tiny_folder, tmp_path / "elsewhere")  # copy2: timestamps kept
    moved = build_features(copy, cache)
    assert moved.cache_hit and moved.cache_path == first.cache_path
    (cache / INDEX_FILE).unlink(missing_ok=True)
    touched = tiny_folder / "val" / "bee" / "002.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    again = build_features(tiny_folder, cache)
    assert again.cache_hit and again.cache_path == first.cache_path
    for name, tensor in features_of(first).items():
        assert torch.equal(features_of(moved)[name], tensor) and torch.equal(features_of(again)[name], tensor)
    assert len(list((cache / "features").glob("*.pt"))) == 1


@pytest.mark.skipif(not FLOWERS.is_dir(), reason=f"{FLOWERS} not found")
def test_unchanged_files_are_only_statted_the_second_time(tmp_path, monkeypatch):
    """The index's job: the first lookup hashes every file (the digests are their sha256), a later one, in a
    new process's index read from disk, reads none of them."""
    paths = sorted(str(p) for p in FLOWERS.rglob("*") if p.is_file())
    index = FileIndex(tmp_path)
    digests = index.digests(paths)
    index.save()
    assert digests[:20] == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths[:20]]

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(identity, "hash_file", no_reading)
    assert FileIndex(tmp_path).digests(paths) == digests


@pytest.mark.parametrize("damage", [*DAMAGE, "edit_a_digit"])
def test_a_corrupt_file_index_is_named_deleted_and_the_files_hashed_again(tmp_path, damage, caplog):
    """The index is a cache like the others: damaged (even still valid JSON), it is named in one warning and
    deleted, and the digests are computed again, right."""
    if not FLOWERS.is_dir():
        pytest.skip(f"{FLOWERS} not found")
    paths = sorted(str(p) for p in FLOWERS.rglob("*.jpg"))[:50]
    index = FileIndex(tmp_path)
    digests = index.digests(paths)
    index.save()
    {**DAMAGE, "edit_a_digit": edit_a_digit}[damage](tmp_path / INDEX_FILE)
    with caplog.at_level(logging.WARNING):
        again = FileIndex(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Corrupt file index" in warning and str(tmp_path / INDEX_FILE) in warning
    assert again.entries == {} and again.digests(paths) == digests


# --- 3. a file that turns unreadable after the doctor's scan ---------------------------------------------------
def break_after_scan(monkeypatch, *paths: Path) -> None:
    """The file turns unreadable (truncated: a half-finished copy, a dying disk) after the dataset doctor
    checked it, before its features are extracted: the real scan runs, then the files are damaged."""
    real = FolderDataModule.scan

    def scan(self):
        first = self.splits is None
        splits = real(self)
        if first:
            for path in paths:
                truncate(path)
        return splits

    monkeypatch.setattr(FolderDataModule, "scan", scan)


def frozen_run(tmp_path: Path, folder: Path, **extra):
    overrides = shrink(folder, strategy="frozen", logger="none", **{"paths.cache_dir": tmp_path / "cache", **extra})
    return train(compose_config(tmp_path, overrides))


def test_an_image_broken_after_the_scan_is_left_out_of_a_frozen_run_and_named_in_summary(tmp_path, tiny_folder,
                                                                                         monkeypatch):
    """on_bad_file=skip at extraction as at the scan: the run completes without the two files, summary.json
    counts and names them, dataset_report.json lists them and counts the rows trained and validated on, and
    val_predictions.csv has no row for the broken val image."""
    broken = [tiny_folder / "train" / "ant" / "003.png", tiny_folder / "val" / "bee" / "001.png"]
    break_after_scan(monkeypatch, *broken)
    summary = frozen_run(tmp_path, tiny_folder, **{"dataset.on_bad_file": "skip"})
    run = tmp_path / "run"
    written = json.loads((run / "summary.json").read_text())
    assert written["status"] == "ok" and written["val/acc_best"] is not None
    assert written["skipped"] == summary["skipped"] == {"count": 2, "files": [str(p) for p in broken]}
    report = json.loads((run / "dataset_report.json").read_text())
    assert report["skipped"] == ["train/ant/003.png", "val/bee/001.png"]
    assert report["samples"] == {"train": 23, "val": 11}
    rows = (run / "val_predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == 11 and not any("001.png" in r and "/bee/" in r for r in rows)


def test_without_skip_an_image_broken_after_the_scan_stops_the_run_naming_it(tmp_path, tiny_folder, monkeypatch):
    broken = tiny_folder / "train" / "bee" / "005.png"
    break_after_scan(monkeypatch, broken)
    with pytest.raises(BadImageError) as error:
        frozen_run(tmp_path, tiny_folder, **{"dataset.on_bad_file": "error"})
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_left_out_rows_are_dropped_alike_from_features_and_labels_and_a_cache_hit_reports_them(tmp_path,
                                                                                              tiny_folder):
    """Two jobs scan the folder, then a training image breaks; the first extracts without it, the second loads
    its entry: both leave out the same file, and their features and labels are those of the folder without it
    (no row shifted onto another file's label)."""
    cache = tmp_path / "cache"
    jobs = [feature_module(tiny_folder, cache) for _ in range(2)]
    for job in jobs:
        job.images.scan()
    broken = tiny_folder / "train" / "ant" / "007.png"
    without = shutil.copytree(tiny_folder, tmp_path / "without")
    (without / "train" / "ant" / "007.png").unlink()
    truncate(broken)
    for job in jobs:
        job.setup("fit")
    first, second = jobs
    assert not first.cache_hit and second.cache_hit
    assert first.skipped == second.skipped == second.skipped_files() == [str(broken)]
    clean = build_features(without, tmp_path / "clean-cache")
    for name, tensor in features_of(clean).items():
        for job in jobs:
            assert features_of(job)[name].shape == tensor.shape and torch.allclose(features_of(job)[name], tensor,
                                                                                   atol=1e-5), name
    assert first.train_labels.tolist() == [0] * 11 + [1] * 12


def test_decoding_images_once_applies_the_policy_too(tmp_path, tiny_folder):
    """cache_images: a file that fails when decoded once is left out (skip) with the labels following the
    files, also when the entry is mapped later; or stops, naming it (error)."""
    samples = scan_folder(tiny_folder).val
    broken = Path(samples[2].path)
    truncate(broken)
    cache = tmp_path / "cache"
    for hit in (False, True):
        decoded = DecodedImages(samples, None, short_side=20, cache_dir=cache, on_bad_file="skip")
        assert decoded.cache_hit is hit and decoded.skipped == [str(broken)] and len(decoded) == len(samples) - 1
        assert [decoded[i][1] for i in range(len(decoded))] == [s.label for s in samples if s.path != str(broken)]
    with pytest.raises(BadImageError, match=re.escape(str(broken))):
        DecodedImages(samples, None, short_side=20, on_bad_file="error")


# --- 4. a cache folder that cannot be written -------------------------------------------------------------------
def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "Could not write" in
            r.getMessage()]


@pytest.mark.parametrize("how", ["not_a_folder", "read_only"])
def test_a_frozen_run_goes_on_without_a_cache_it_cannot_write(tmp_path, tiny_folder, caplog, how):
    """paths.cache_dir (features) and dataset.cache_dir (doctor) where nothing can be written: the run
    completes, with one warning per folder naming it, the bytes the entry needed, and no traceback."""
    if how == "not_a_folder":  # a file where the folder should be: mkdir fails with ENOTDIR, even for root
        blocker = tmp_path / "blocker"
        blocker.write_text("a file, not a folder")
        cache = blocker / "cache"
    else:
        cache = tmp_path / "read-only"
        cache.mkdir()
        cache.chmod(0o555)
        if os.access(cache, os.W_OK):  # root: permissions do not stop it
            cache.chmod(0o755)
            pytest.skip("running as root: a read-only folder is still writable (the not_a_folder case covers it)")
    try:
        with caplog.at_level(logging.INFO):
            summary = frozen_run(tmp_path, tiny_folder, **{"dataset.cache_dir": cache, "paths.cache_dir": cache})
    finally:
        if how == "read_only":
            cache.chmod(0o755)
    assert summary["status"] == "ok" and summary["val/acc_best"] is not None
    warnings = cache_warnings(caplog)
    features = [w for w in warnings if f"{cache / 'features'} " in w]
    assert len(features) == 1 and "feature cache" in features[0] and "bytes" in features[0]
    folders = [w.split(" in ", 1)[1].split(" (", 1)[0] for w in warnings]
    assert len(folders) == len(set(folders))  # once per folder
    assert not any(cache.rglob("*.pt")) if cache.is_dir() else True


FULL_DISK = """
import json, logging, resource, signal, sys
from pathlib import Path
from tests.conftest import compose_config, shrink
from transferlab.tasks.train import train

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
folder, out, limit = {args!r}
# a full disk: writes beyond `limit` bytes fail with EFBIG (the default action of SIGXFSZ would kill the process)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
overrides = shrink(folder, strategy="frozen", logger="none", **{{
    "paths.cache_dir": Path(out) / "cache", "dataset.cache_dir": Path(out) / "cache",
    "dataset.feature_views": 16,  # the feature entry (~400 KB) is the one file above the limit
    # no checkpoints (a full disk stops a run that cannot save its checkpoint: CheckpointSaveError)
    "callbacks.model_checkpoint": "null", "callbacks.last_checkpoint": "null", "+trainer.enable_checkpointing": False}})
cfg = compose_config(Path(out), overrides)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
print(json.dumps(train(cfg)))
"""


def test_a_frozen_run_goes_on_when_the_disk_is_full(tmp_path, tiny_folder, monkeypatch):
    """The feature entry meets a full disk (EFBIG under RLIMIT_FSIZE, as ENOSPC would): one warning naming the
    folder and the bytes needed, the run completes on the features it computed, no entry is left behind."""
    limit = 128 * 1024
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # no .pyc written under the limit either
    job = python(FULL_DISK.format(args=[str(tiny_folder), str(tmp_path), limit]), stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["val/acc_best"] is not None
    features = tmp_path / "cache" / "features"
    (warning,) = [line for line in err.splitlines() if line.startswith("WARNING Could not write")]
    assert f"feature cache in {features} " in warning and "File too large" in warning and "bytes" in warning
    needed = int(re.search(r"it needs (?:[\d.,]+ MB \()?([\d,]+) bytes", warning).group(1).replace(",", ""))
    assert needed > limit and "Traceback" not in err
    assert list(features.glob("*.pt")) == [] and list(features.glob(".*.tmp")) == []
