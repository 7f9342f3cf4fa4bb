"""What a file is, for the on-disk caches: the sha256 of its bytes, looked up by its stat.

A cache keyed on path, size and mtime serves a stale entry when a file is replaced by another of the same size
and its mtime is put back (`cp --preserve=timestamps`, `touch -r`, tools that restore timestamps): the run
trains on the old image's features. The caches key on content instead (the dataset doctor's content hash,
so one digest serves both). Reading every file on every run would cost a pass over the dataset, so each
cache folder keeps an index (`file-index.json`) of the digests it has computed, under the stat fields a write
changes: size, mtime, ctime, inode and device. The kernel sets ctime on every write, rename or chmod and it
cannot be set back from user space, so an unchanged stat means unchanged bytes and a second run only stats;
any change re-hashes that one file. Keyed on content, entries also survive a dataset copied with `rsync -a`
or a cache moved to another machine: the stats differ, the re-hash matches.

A file changed within `RACY_NS` of being hashed is not remembered (git's "racy" entries: on a file system
with coarse timestamps a second write in the same tick leaves the stat as it was); it is hashed again next
time. The index is replaced atomically under its lock, merged with what other jobs wrote meanwhile, and
checked against its sha256 on load: a corrupt one is named in one warning, deleted, and files are hashed
again. Torch-free: the dataset doctor uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from transferlab.files import CorruptEntry, atomic_write_json, entry_lock, json_digest, read_checked, save_or_warn

INDEX_FILE = "file-index.json"
VERSION = 1
WHAT = "file index"
RACY_NS = 2 * 10**9  # coarser than any file system's timestamp tick (FAT: 2 s)


def stat_key(st: os.stat_result) -> list[int]:
    """What a write to the file changes (ctime: always, and users cannot restore it)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def hash_file(path: str) -> str:
    """sha256 of the file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FileIndex:
    """Content digests by absolute path, valid while the stat key recorded with each is unchanged.

    `cache_dir=None`: nothing is read or written (every file is hashed)."""

    def __init__(self, cache_dir: str | os.PathLike | None) -> None:
        self.path = Path(cache_dir) / INDEX_FILE if cache_dir else None
        self.entries: dict[str, list] = {} if self.path is None else read_checked(self.path, _load, WHAT, {})
        self.added: dict[str, list] = {}
        self._lock = threading.Lock()  # the doctor records from its decoding threads

    def lookup(self, path: str) -> tuple[list[int], str | None]:
        """The file's stat key (raises OSError when it cannot be stat'ed) and its digest if it is known."""
        path = os.path.abspath(path)
        key = stat_key(os.stat(path))
        hit = self.added.get(path) or self.entries.get(path)
        return key, (hit[-1] if hit and hit[:-1] == key else None)

    def record(self, path: str, key: list[int], digest: str) -> None:
        """Remember `digest` for the file whose stat was `key` before it was read (unless it changed too
        recently to be told apart from a later write: see RACY_NS)."""
        if time.time_ns() - key[2] < RACY_NS:
            return
        with self._lock:
            self.added[os.path.abspath(path)] = [*key, digest]

    def digest(self, path: str) -> str:
        """The file's digest: from the index when its stat is unchanged, else read and remembered."""
        key, known = self.lookup(path)
        if known is None:
            known = hash_file(path)
            self.record(path, key, known)
        return known

    def digests(self, paths: Sequence[str], workers: int | None = None) -> list[str | None]:
        """Each file's digest (None: it cannot be stat'ed or read; whoever decodes it reports why), the
        unknown ones hashed in `workers` threads (hashlib releases the GIL)."""
        out: list[str | None] = [None] * len(paths)
        todo = []
        for i, p in enumerate(paths):
            try:
                key, out[i] = self.lookup(p)
            except OSError:
                continue
            if out[i] is None:
                todo.append((i, p, key))

        def read(item: tuple[int, str, list[int]]) -> str | None:
            i, p, key = item
            try:
                digest = hash_file(p)
            except OSError:
                return None
            self.record(p, key, digest)
            return digest

        workers = workers or min(8, os.cpu_count() or 1)
        if len(todo) > 8 and workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash") as pool:
                results = list(pool.map(read, todo))
        else:
            results = [read(t) for t in todo]
        for (i, _, _), digest in zip(todo, results, strict=True):
            out[i] = digest
        return out

    def save(self) -> None:
        """Merge what this process hashed into the file, atomically, under its lock (jobs sharing the cache
        keep each other's entries). A folder that cannot be written is warned about once (`save_or_warn`)."""
        if self.path is None or not self.added:
            return
        path = self.path

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with entry_lock(path):
                try:
                    current = _load(path)
                except (OSError, ValueError, CorruptEntry):
                    current = {}  # none yet, or damaged: replaced by this process's entries
                entries = {**current, **self.added}
                atomic_write_json(path, {"version": VERSION, "sha256": json_digest(entries), "entries": entries},
                                  indent=None)

        nbytes = len(json.dumps({**self.entries, **self.added}))
        if save_or_warn(write, path, WHAT, nbytes):
            self.entries.update(self.added)
            self.added = {}


def _load(path: Path) -> dict[str, list]:
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict):
        raise CorruptEntry("not a JSON object")
    if stored.get("version") != VERSION:
        return {}  # another version's: replaced on save, not corrupt
    entries = stored.get("entries")
    if not isinstance(entries, dict) or stored.get("sha256") != json_digest(entries):
        raise CorruptEntry("checksum mismatch")
    return entries
