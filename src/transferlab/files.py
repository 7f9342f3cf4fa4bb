"""Files that must never be seen half-written, the digests the on-disk caches are keyed on, and the cache
entry protocol (verify on load, lock while building, clean up after killed writers).

`atomic_writer` is the one atomic write (temp file in the same folder, fsync, rename); the bytes, text, JSON
and torch writers are built on it. `load_or_build` is how the frozen-feature and decoded-image caches open an
entry, `read_checked` how the small JSON ones (doctor facts, file index) are read. A cache that cannot be
written (read-only folder, full disk) is never fatal: `save_or_warn` names the folder and the bytes it needed,
once per folder, and the run goes on with what it computed. Kept free of torch at import time: the dataset
doctor's CLI uses it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
T = TypeVar("T")


def digest(payload: Any) -> str:
    """A short, stable key for a JSON-able payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


# --- atomic writes ----------------------------------------------------------------------------------------
@contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """The one atomic write: yields a file opened on a temporary file in `path`'s folder; when the block ends
    it is flushed, fsynced and renamed over `path`.

    Readers (a concurrent sweep job, a run after a crash) see the old file or the complete new one, never a
    partial one. If the block raises, the temporary file is removed and the previous file is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `atomic_writer`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """`obj` as JSON, written atomically. The JSON is built in full before any file is created, so an object
    that cannot be serialised leaves the previous file as it was."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, written atomically (streamed into the temporary file: caches can be large)."""
    import torch  # here, not at the top: the dataset doctor imports this module and must stay torch-free

    with atomic_writer(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer turns a failed write (full disk) into a RuntimeError
            cause = e.__cause__ or e.__context__
            if isinstance(cause, OSError):
                raise cause from None
            raise
    return Path(path)


# --- cache entries: verified on load, built under a lock, orphans of killed writers removed ----------------
class CorruptEntry(Exception):
    """A cache entry failed its check on load (the message says what was wrong)."""


def sha256_tensor(tensor: Any) -> str:
    """sha256 of a CPU tensor's dtype, shape and bytes (hashlib reads the buffer in place: no copy when the
    tensor is contiguous, and a memory-mapped tensor is hashed straight from the page cache)."""
    array = tensor.detach().contiguous().numpy()
    h = hashlib.sha256(f"{array.dtype}{tuple(array.shape)}".encode())
    h.update(array.reshape(-1).view("uint8"))
    return h.hexdigest()


def entry_lock(path: str | os.PathLike) -> FileLock:
    """The lock of one cache entry, `<key>.lock` beside `<key>.pt`: held while the entry is built, written or
    deleted. filelock's flock is released by the kernel when its holder dies, so a killed job never leaves a
    stale lock behind."""
    return FileLock(Path(path).with_suffix(".lock"))


def remove_orphan_temps(folder: str | os.PathLike, min_age: float = 60.0) -> list[Path]:
    """Remove temporary files left in `folder` by killed `atomic_writer`s; returns those removed.

    A temporary file is an orphan when no live writer holds its entry's lock (writers of cache entries hold it
    for the whole write, see `load_or_build`) and it has not been written to for `min_age` seconds: the age is
    a second guard, for writers that do not take the lock (an older transferlab sharing the folder)."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        target = tmp.name[1:-len(".tmp")].rsplit(".", 1)[0]  # atomic_writer names it .<target>.<random>.tmp
        try:
            if time.time() - tmp.stat().st_mtime < min_age:
                continue
            with entry_lock(tmp.parent / target).acquire(timeout=0):
                tmp.unlink()
        except (Timeout, FileNotFoundError):
            continue  # a live writer holds the lock, or the file went away meanwhile
        except OSError as e:
            log.debug("Could not remove %s: %s", tmp, e)
            continue
        log.info("Removed %s, left by a writer that was killed", tmp)
        removed.append(tmp)
    return removed


def load_or_build(path: str | os.PathLike, load: Callable[[Path], T], build: Callable[[Path], T],
                  what: str) -> tuple[T, bool]:
    """Open the cache entry at `path`: `(entry, True)` if a verified entry was there, else `(build(path), False)`.

    `load(path)` returns the entry or raises (any exception, e.g. `CorruptEntry` from its own checks, or
    torch's on a truncated file) when the entry is corrupt; `build(path)` computes the entry and writes it
    atomically (through `save_or_warn`: a failed write leaves the computed entry in use). Building happens
    under the entry's lock, and the entry is looked for again once the lock is held, so concurrent jobs needing
    one entry build it once: the others wait, then load it. A corrupt entry is reported in one warning naming
    the file and what was wrong, deleted and rebuilt. Orphaned temporary files in the folder are removed first
    (`remove_orphan_temps`). A folder where no lock can be made (read-only, not a folder) still serves the
    entries already there; a missing one is built without the lock."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # unwritable: what is there can still be read; the write names the folder (save_or_warn)
    remove_orphan_temps(path.parent)
    if path.is_file():
        try:
            return load(path), True
        except Exception:  # noqa: BLE001 - judged again under the lock, where no other job can be replacing it
            pass
    lock = entry_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Waiting for another job to finish writing %s", path)
        lock.acquire()
    except OSError as e:  # no lock file can be made there: nothing can be written either
        log.debug("No lock for %s (%s); building it unlocked", path, e)
        return build(path), False
    try:
        if path.is_file():  # built by another job while we waited, or corrupt
            try:
                return load(path), True
            except Exception as e:  # noqa: BLE001 - whatever a damaged file makes the loader raise
                discard_corrupt(path, what, e)
        return build(path), False
    finally:
        lock.release()


def discard_corrupt(path: str | os.PathLike, what: str, error: BaseException | str) -> None:
    """The one warning for a corrupt cache entry, then delete it. Call with the entry's lock held."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    reason = " ".join(str(reason).split())[:300]  # one line, even for multi-line loader errors
    log.warning("Corrupt %s %s (%s): deleted, rebuilding it", what, path, reason)
    Path(path).unlink(missing_ok=True)


# --- caches that cannot be written, small checked JSON caches -------------------------------------------------
_WARNED_FOLDERS: set[str] = set()  # folders already warned about in this process: one warning each


def save_or_warn(write: Callable[[], Any], path: str | os.PathLike, what: str, nbytes: int) -> bool:
    """Run `write()` (an atomic write of `path`); True if it wrote. A cache that cannot be written (read-only
    folder, full disk, a file where its folder should be) is not a reason to stop a run that has already
    computed the entry: the first failure in a folder is one warning naming the folder, the error and the
    bytes the entry needed, later ones in that folder are logged at info; the caller keeps the entry in memory."""
    try:
        write()
        return True
    except OSError as e:
        folder = str(Path(path).parent)
        level = logging.INFO if folder in _WARNED_FOLDERS else logging.WARNING
        _WARNED_FOLDERS.add(folder)
        log.log(level, "Could not write the %s in %s (%s: %s; it needs %s): going on without caching it, this run "
                "keeps it in memory. Free space there or point paths.cache_dir / dataset.cache_dir at a writable "
                "folder.", what, folder, type(e).__name__, e, _size(nbytes))
        return False


def _size(nbytes: int) -> str:
    return f"{nbytes:,} bytes" if nbytes < 2**20 else f"{nbytes / 2**20:,.1f} MB ({nbytes:,} bytes)"


def read_checked(path: Path, load: Callable[[Path], T], what: str, default: T) -> T:
    """A small cache file read with `load`, which raises `CorruptEntry` or ValueError when the file is
    damaged: such a file is named in one warning and deleted (judged under its lock, where no other job can be
    replacing it). `default` when there is none, or it cannot be read (then the caller recomputes)."""
    remove_orphan_temps(path.parent)
    if not path.is_file():
        return default
    try:
        return load(path)
    except (OSError, ValueError, CorruptEntry):
        pass  # judged again under the lock
    try:
        with entry_lock(path):
            try:
                return load(path)
            except FileNotFoundError:
                return default
            except (ValueError, CorruptEntry) as e:
                discard_corrupt(path, what, e)
                return default
    except OSError as e:  # unreadable, or a read-only cache folder (no lock file): recompute this time
        log.warning("Could not read the %s %s (%s); recomputing it.", what, path, e)
        return default


def json_digest(obj: Any) -> str:
    """sha256 of `obj` in a canonical JSON form (the same before saving and after loading)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
