"""Trusting the on-disk caches: corrupt entries are named, deleted and rebuilt; killed writers leave nothing
that is ever used, and their temporary files are removed later; concurrent jobs build an entry once (slow).

The three caches under outputs/cache/: frozen features (data/features.py), decoded images (data/decoded.py,
memory-mapped) and the dataset doctor's facts (data/doctor/inspect.py). The backbone is a tiny conv net and
CachedFeatureDataModule is driven directly, so each test takes seconds, not a training run.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import ROOT
from transferlab.data.datamodule import FolderDataModule
from transferlab.data.decoded import DecodedImages
from transferlab.data.doctor.inspect import FactsCache, inspect_all
from transferlab.data.features import FEATURE_TENSORS, CachedFeatureDataModule
from transferlab.data.folders import scan_folder
from transferlab.data.images import DEFAULT_MAX_PIXELS
from transferlab.data.input_spec import InputSpec
from transferlab.files import remove_orphan_temps


# --- ways a cache file gets damaged ----------------------------------------------------------------------
def truncate(path: Path) -> None:
    """A writer killed without the atomic rename, or a full disk: the first half only."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def scribble(path: Path) -> None:
    """Same length, 64 bytes in the middle flipped: what a bad sector or a stray write does."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))


def garbage(path: Path) -> None:
    """Something else entirely, the same size."""
    path.write_bytes(os.urandom(path.stat().st_size))


def edit_a_digit(path: Path) -> None:
    """Still valid JSON, one number in the middle changed: only a checksum can tell."""
    text = path.read_text()
    digits = [m.start() for m in re.finditer(r"\d", text)]
    i = min(digits, key=lambda j: abs(j - len(text) // 2))
    path.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])


DAMAGE = {"truncate": truncate, "scribble": scribble, "garbage": garbage}


def corruption_warnings(caplog, path: Path) -> list[str]:
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(str(path) in w for w in warnings), warnings  # nothing else warned about
    return warnings


# --- the feature cache, driven directly with a tiny backbone ---------------------------------------------
class TinyBackbone(nn.Module):
    """A fixed random conv net (64 features); `delay` seconds per batch make a build slow enough to race."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.net(x)


def feature_module(folder: Path, cache: Path, delay: float = 0.0) -> CachedFeatureDataModule:
    images = FolderDataModule(str(folder), batch_size=4, eval_batch_size=8, num_workers=0, cache_dir=str(cache))
    images.set_input_spec(InputSpec(image_size=16, crop_pct=1.0))
    return CachedFeatureDataModule(images, TinyBackbone(delay), {"name": "tiny-test", "weights": None},
                                   str(cache), extract_batch_size=8)


def features_of(module: CachedFeatureDataModule) -> dict[str, torch.Tensor]:
    return {name: getattr(module, attr) for name, attr in zip(
        FEATURE_TENSORS, ("train_features", "train_labels", "val_features", "val_labels"), strict=True)}


def build_features(folder: Path, cache: Path, delay: float = 0.0) -> CachedFeatureDataModule:
    module = feature_module(folder, cache, delay)
    module.setup("fit")
    return module


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_corrupt_feature_cache_is_named_deleted_and_rebuilt(tmp_path, tiny_folder, caplog, damage):
    """A damaged features/<key>.pt is never trained on: the next run logs one warning naming the file, builds
    it again, and gets the same features as a clean build; the rebuilt entry is then reused."""
    cache = tmp_path / "cache"
    clean = build_features(tiny_folder, cache)
    DAMAGE[damage](clean.cache_path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = build_features(tiny_folder, cache)
    (warning,) = corruption_warnings(caplog, clean.cache_path)
    assert "Corrupt feature cache" in warning
    assert not again.cache_hit and caplog.text.count("Cached features in") == 1
    for name, tensor in features_of(clean).items():
        assert torch.equal(features_of(again)[name], tensor), name
    caplog.clear()
    with caplog.at_level(logging.INFO):
        third = build_features(tiny_folder, cache)
    assert third.cache_hit and corruption_warnings(caplog, clean.cache_path) == []


# --- the decoded-image cache (memory-mapped) ---------------------------------------------------------------
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_corrupt_decoded_image_cache_is_named_deleted_and_rebuilt(tmp_path, tiny_folder, caplog, damage):
    """A damaged images/<key>.pt never feeds wrong pixels: truncation or garbage is caught when it is mapped,
    bytes changed in the middle when the damaged image is first read; either way one warning names the file,
    the entry is rebuilt, every image read equals a clean decode, and the rebuilt file is mapped next time."""
    samples = scan_folder(tiny_folder).train
    cache = tmp_path / "cache"
    clean = DecodedImages(samples, None, short_side=20, cache_dir=cache)
    expected = [clean[i][0].clone() for i in range(len(clean))]
    DAMAGE[damage](clean.cache_path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = DecodedImages(samples, None, short_side=20, cache_dir=cache)
        pixels = [again[i][0].clone() for i in range(len(again))]
    (warning,) = corruption_warnings(caplog, clean.cache_path)
    assert "Corrupt decoded-image cache" in warning
    assert caplog.text.count("Cached decoded images in") == 1
    assert all(torch.equal(a, b) for a, b in zip(pixels, expected, strict=True))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        third = DecodedImages(samples, None, short_side=20, cache_dir=cache)
        assert all(torch.equal(third[i][0], expected[i]) for i in range(len(third)))
    assert third.cache_hit and corruption_warnings(caplog, clean.cache_path) == []


# --- the doctor's facts cache (JSON) ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [*DAMAGE, "edit_a_digit"])
def test_a_corrupt_doctor_cache_is_named_deleted_and_rebuilt(tmp_path, tiny_folder, caplog, damage):
    """A damaged doctor-<key>.json (even one still valid JSON) is not believed: one warning names it, every
    file is inspected again with the same facts as a clean scan, and the rewritten cache serves the next scan."""
    paths = sorted(str(p) for p in tiny_folder.rglob("*.png"))
    cache, root = tmp_path / "cache", str(tiny_folder)
    clean, _ = inspect_all(paths, DEFAULT_MAX_PIXELS, FactsCache(cache, root), workers=1)
    path = FactsCache(cache, root).path
    {**DAMAGE, "edit_a_digit": edit_a_digit}[damage](path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        facts, from_cache = inspect_all(paths, DEFAULT_MAX_PIXELS, FactsCache(cache, root), workers=1)
    (warning,) = corruption_warnings(caplog, path)
    assert "Corrupt doctor facts cache" in warning
    assert from_cache == 0 and facts == clean
    caplog.clear()
    with caplog.at_level(logging.INFO):
        facts, from_cache = inspect_all(paths, DEFAULT_MAX_PIXELS, FactsCache(cache, root), workers=1)
    assert from_cache == len(paths) and facts == clean and corruption_warnings(caplog, path) == []


# --- killed writers and concurrent jobs (real processes) ---------------------------------------------------
def python(code: str, **kwargs) -> subprocess.Popen:
    """A Python process running `code` with this checkout (and its tests package) importable."""
    path = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, text=True, **kwargs)


KILLED_WRITER = """
import io, logging, sys, time
from pathlib import Path
import torch
from tests.test_cache_integrity import feature_module

folder, cache, marker = map(Path, {args!r})
real_save = torch.save

def write_half_then_hang(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    marker.touch()
    time.sleep(300)  # killed here, mid-write, holding the entry's lock

torch.save = write_half_then_hang
feature_module(folder, cache).setup("fit")
"""


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.05)


def test_a_writer_killed_mid_write_leaves_nothing_used_and_its_temp_file_is_removed_later(tmp_path, tiny_folder,
                                                                                          caplog):
    """SIGKILL a job halfway through writing a feature cache entry: its half-written temporary file is never
    loaded (the next run builds the entry, with the same features as a clean build), it is left alone while its
    writer lives (even when old), and removed once the writer is dead and the file is old."""
    cache, marker = tmp_path / "cache", tmp_path / "writing"
    writer = python(KILLED_WRITER.format(args=[str(tiny_folder), str(cache), str(marker)]),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(marker, writer)
        (tmp,) = (cache / "features").glob(".*.tmp")
        assert tmp.stat().st_size > 0 and list((cache / "features").glob("*.pt")) == []
        long_ago = time.time() - 3600
        os.utime(tmp, (long_ago, long_ago))
        assert remove_orphan_temps(tmp.parent) == [] and tmp.exists()  # old, but its writer holds the lock
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    assert tmp.exists()

    with caplog.at_level(logging.INFO):
        rebuilt = build_features(tiny_folder, cache)
    assert not rebuilt.cache_hit and caplog.text.count("Cached features in") == 1
    assert not tmp.exists() and f"Removed {tmp}" in caplog.text  # dead writer, old file: an orphan
    clean = build_features(tiny_folder, tmp_path / "clean-cache")
    for name, tensor in features_of(clean).items():
        assert torch.equal(features_of(rebuilt)[name], tensor), name

    # a fresh orphan is kept a while (a writer that takes no lock may still be writing it), then removed
    orphan = tmp.parent / f".{rebuilt.cache_path.name}.abcd1234.tmp"
    orphan.write_bytes(b"half")
    assert remove_orphan_temps(tmp.parent) == []
    os.utime(orphan, (long_ago, long_ago))
    assert remove_orphan_temps(tmp.parent) == [orphan] and not orphan.exists()
    assert build_features(tiny_folder, cache).cache_hit


RACER = """
import logging, sys, time
from pathlib import Path
import torch
from tests.test_cache_integrity import feature_module, features_of

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
folder, cache, ready, others, out = {args!r}
module = feature_module(Path(folder), Path(cache), delay=0.3)
module.images.scan()  # the doctor's scan first: the race is over the feature entry alone
Path(ready).touch()
while not all(Path(p).exists() for p in others):
    time.sleep(0.01)
module.setup("fit")
torch.save(features_of(module), out)
"""


@pytest.mark.slow  # two racing processes, each build slowed to 0.3 s per batch
def test_two_jobs_needing_the_same_feature_cache_build_it_once(tmp_path, tiny_folder):
    """Two processes set up the same feature cache at the same moment, each build slow (0.3 s per batch): one
    builds it, the other waits on the entry's lock and loads it, so features are extracted exactly once and
    both jobs get identical features, equal to a build in this process."""
    cache = tmp_path / "cache"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    jobs = [python(RACER.format(args=[str(tiny_folder), str(cache), str(ready[i]), [str(r) for r in ready],
                                      str(tmp_path / f"out-{i}.pt")]),
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    logs = ""
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
        logs += err
    assert logs.count("Cached features in") == 1 and logs.count("Loaded cached features") == 1, logs
    assert "Corrupt" not in logs
    first, second = (torch.load(tmp_path / f"out-{i}.pt", weights_only=True) for i in range(2))
    local = features_of(build_features(tiny_folder, cache))
    for name in FEATURE_TENSORS:
        assert torch.equal(first[name], second[name]) and torch.equal(first[name], local[name]), name
