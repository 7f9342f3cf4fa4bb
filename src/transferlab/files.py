"""Files that must never be seen half-written, and the digests the on-disk caches are keyed on.

`atomic_writer` is the one atomic write (temp file in the same folder, fsync, rename); the bytes, text, JSON
and torch writers are built on it. Kept free of torch at import time: the dataset doctor's CLI uses it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


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
        torch.save(obj, f)
    return Path(path)
