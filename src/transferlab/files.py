"""What the on-disk caches (backbone features, decoded images) share: file identities and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transferlab.data.folders import Sample


def file_identity(samples: Sequence[Sample]) -> list[tuple[str, int, int, int]]:
    """(path, size, mtime, label) per sample: an edited, replaced or relabelled file changes the key."""
    out = []
    for s in samples:
        st = os.stat(s.path)
        out.append((s.path, st.st_size, st.st_mtime_ns, s.label))
    return out


def digest(payload: Any) -> str:
    """A short, stable key for a JSON-able payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file in the same folder, then a rename.

    Readers (a concurrent sweep job, a run after a crash) see the old file or the complete new one, never a
    partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
