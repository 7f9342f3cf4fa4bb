"""Per-file facts for the dataset doctor: each image read, hashed and fully decoded the way training will.

Decoding is the slow part of a diagnosis, so it runs in a thread pool (Pillow releases the GIL while decoding)
and its facts are cached per file, keyed on size + mtime: a second scan only stats the files. The cache file
carries a sha256 of its facts, checked on load: a corrupt one is named in one warning, deleted, and the facts are
recomputed (and saved again, under the file's lock).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from transferlab.data.images import allow_pixels, has_transparency, to_rgb
from transferlab.files import CorruptEntry, atomic_write_json, discard_corrupt, entry_lock, remove_orphan_temps

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the file holds a sha256 of its facts


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
            self.old = self._open()

    def _open(self) -> dict[str, Any]:
        """The stored facts, checked against their sha256; {} if missing, of another version, or corrupt (then
        warned about and deleted: this scan recomputes the facts and saves them again)."""
        remove_orphan_temps(self.path.parent)
        if not self.path.is_file():
            return {}
        try:
            return self._load()
        except (OSError, ValueError, CorruptEntry):
            pass  # judged again under the lock, where no other scan can be replacing the file
        try:
            with entry_lock(self.path):
                try:
                    return self._load()
                except FileNotFoundError:
                    return {}
                except (ValueError, CorruptEntry) as e:
                    discard_corrupt(self.path, "doctor facts cache", e)
                    return {}
        except OSError as e:  # unreadable, or a read-only cache folder: decode everything this time
            log.warning("Could not read the doctor cache %s (%s); decoding every file.", self.path, e)
            return {}

    def _load(self) -> dict[str, Any]:
        stored = json.loads(self.path.read_text())
        if not isinstance(stored, dict):
            raise CorruptEntry("not a JSON object")
        if stored.get("version") != CACHE_VERSION or stored.get("root") != self.root:
            return {}  # written by another version (or for another root): replaced on save, not corrupt
        files = stored.get("files")
        if not isinstance(files, dict) or stored.get("sha256") != _facts_digest(files):
            raise CorruptEntry("checksum mismatch")
        return files

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
        stored = {"version": CACHE_VERSION, "root": self.root, "sha256": _facts_digest(self.new), "files": self.new}
        try:
            with entry_lock(self.path):  # the lock tells a live writer's temporary file from an orphan
                atomic_write_json(self.path, stored, indent=None)
        except OSError as e:
            log.warning("Could not write the doctor cache %s (%s); the next scan decodes again.", self.path, e)


def _facts_digest(files: dict[str, Any]) -> str:
    """sha256 of the facts in a canonical JSON form (the same before saving and after loading)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
