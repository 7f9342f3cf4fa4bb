"""Per-file facts for the dataset doctor: each image read, hashed and fully decoded the way training will.

Decoding is the slow part of a diagnosis, so it runs in a thread pool (Pillow releases the GIL while decoding)
and its facts are cached per file, keyed on the file's content digest (`transferlab.data.identity`: looked up by
stat, so a second scan only stats the files; a file whose stat changed is hashed again and decoded only if its
bytes did). A file replaced by another of the same size with its mtime put back is decoded again. The cache
file carries a sha256 of its facts, checked on load: a corrupt one is named in one warning, deleted, and the
facts are recomputed (and saved again, under the file's lock).
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

from transferlab.data.identity import FileIndex
from transferlab.data.images import allow_pixels, has_transparency, to_rgb
from transferlab.files import CorruptEntry, atomic_write_json, entry_lock, json_digest, read_checked, save_or_warn

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 2: the file holds a sha256 of its facts; 3: facts keyed on the content digest
WHAT = "doctor facts cache"


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
    """Per-file facts keyed by path relative to the root, valid while the file's content digest is unchanged.

    `index` gives the digests (`transferlab.data.identity.FileIndex`, kept in the same cache folder)."""

    def __init__(self, cache_dir: str | os.PathLike | None, root: str) -> None:
        self.path = None
        self.old: dict[str, Any] = {}
        self.new: dict[str, Any] = {}
        self.root = root
        self.index = FileIndex(cache_dir)
        if cache_dir:
            key = hashlib.sha1(root.encode()).hexdigest()[:16]
            self.path = Path(cache_dir) / f"doctor-{key}.json"
            self.old = read_checked(self.path, self._load, WHAT, {})

    def _load(self, path: Path) -> dict[str, Any]:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise CorruptEntry("not a JSON object")
        if stored.get("version") != CACHE_VERSION or stored.get("root") != self.root:
            return {}  # written by another version (or for another root): replaced on save, not corrupt
        files = stored.get("files")
        if not isinstance(files, dict) or stored.get("sha256") != _facts_digest(files):
            raise CorruptEntry("checksum mismatch")
        return files

    def has(self, path: str) -> bool:
        """Whether facts from an earlier scan are stored for `path` (whatever its content was then)."""
        return os.path.relpath(path, self.root) in self.old

    def get(self, path: str, digest: str, max_pixels: int) -> dict[str, Any] | None:
        hit = self.old.get(os.path.relpath(path, self.root))
        if not hit or hit[0] != digest:
            return None
        facts = hit[1]
        w, h = facts.get("width") or 0, facts.get("height") or 0
        if not facts.get("decoded") and not facts.get("error") and w * h <= max_pixels:
            return None  # skipped for size last time, but the cap now allows it
        return facts

    def put(self, path: str, digest: Any, facts: dict[str, Any]) -> None:
        self.new[os.path.relpath(path, self.root)] = [digest, facts]

    def save(self) -> None:
        """Atomically replace the cache (parallel runs may share it); entries of deleted files drop out. Then
        the file index. A folder that cannot be written is warned about once (`save_or_warn`)."""
        self.index.save()
        if self.path is None or self.new == self.old:
            return
        path = self.path
        stored = {"version": CACHE_VERSION, "root": self.root, "sha256": _facts_digest(self.new), "files": self.new}

        def write() -> None:
            with entry_lock(path):  # the lock tells a live writer's temporary file from an orphan
                atomic_write_json(path, stored, indent=None)

        save_or_warn(write, path, WHAT, len(json.dumps(stored)))


def _facts_digest(files: dict[str, Any]) -> str:
    """sha256 of the facts in a canonical JSON form (the same before saving and after loading)."""
    return json_digest(files)


def inspect_all(paths: Sequence[str], max_pixels: int, cache: FactsCache,
                workers: int | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Facts for every path (cached or decoded in parallel) and how many came from the cache.

    A file whose stat is in the index is only stat'ed; one whose stat changed but that has facts from before is
    hashed, and decoded only if its bytes changed; a file without facts is decoded (which hashes it too)."""
    facts: dict[str, dict[str, Any]] = {}
    stats, todo, unhashed = {}, [], []
    hits = 0
    for p in paths:
        try:
            stats[p], digest = cache.index.lookup(p)
        except OSError as e:
            facts[p] = {"decoded": False, "error": f"cannot stat: {e}"}
            continue
        if digest is None:
            (unhashed if cache.has(p) else todo).append(p)
        elif (hit := cache.get(p, digest, max_pixels)) is not None:
            facts[p], hits = hit, hits + 1
            cache.put(p, digest, hit)
        else:
            todo.append(p)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    for p, digest in zip(unhashed, cache.index.digests(unhashed, workers), strict=True):
        hit = None if digest is None else cache.get(p, digest, max_pixels)
        if hit is None:
            todo.append(p)
        else:
            facts[p], hits = hit, hits + 1
            cache.put(p, digest, hit)
    if len(todo) > 8 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doctor") as pool:
            results = list(pool.map(lambda p: inspect_file(p, max_pixels), todo))
    else:
        results = [inspect_file(p, max_pixels) for p in todo]
    for p, result in zip(todo, results, strict=True):
        facts[p] = result
        if result.get("sha256"):  # read: its facts belong to these bytes (stat taken before the read)
            cache.index.record(p, stats[p], result["sha256"])
            cache.put(p, result["sha256"], result)
    cache.save()
    return {p: facts[p] for p in paths}, hits
