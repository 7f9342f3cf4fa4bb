"""The user's corrections, applied to the scanned samples without touching a file: `dataset.exclude=FILE` (paths
to leave out, one per line, e.g. written by `python -m transferlab.data.doctor ROOT --deep --write-exclude FILE`)
and `dataset.relabel=FILE` (CSV `path,label`). Paths are relative to the dataset root (absolute ones are
accepted); a path that names no sample, or a label that names no class, is an error naming the line, so a stale
list is never half applied. Both files are recorded by count and sha256 (the dataset report, the run record);
the feature cache keys on every sample's content and label, so a changed list is a new entry.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from transferlab.data.folders import FolderSplits, Sample
from transferlab.errors import DatasetLayoutError


def _relative(root: str, path: str) -> str:
    path = path.strip()
    return os.path.normpath(os.path.relpath(path, root) if os.path.isabs(path) else path)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise DatasetLayoutError(f"{key}={path}: cannot read it ({e.strerror or e}).") from e


def curate(splits: FolderSplits, root: str, exclude: str | None, relabel: str | None) -> tuple[FolderSplits, dict]:
    """The splits with `exclude`'s paths left out and `relabel`'s labels applied, and what was applied."""
    record: dict[str, Any] = {}
    known = {_relative(root, s.path): s for s in [*splits.train, *splits.val]}
    dropped: set[str] = set()
    labels: dict[str, int] = {}
    if exclude:
        data = _read(exclude, "dataset.exclude")
        lines = [(n, line) for n, line in enumerate(data.decode("utf-8").splitlines(), 1)
                 if line.strip() and not line.startswith("#")]
        for n, line in lines:
            rel = _relative(root, line)
            if rel not in known:
                raise DatasetLayoutError(f"dataset.exclude={exclude}, line {n}: {line.strip()!r} is no image of "
                                         f"{root}; remove the line (the list may be from another folder).")
            dropped.add(rel)
        record["exclude"] = {"file": os.path.abspath(exclude), "count": len(dropped),
                             "sha256": hashlib.sha256(data).hexdigest()}
    if relabel:
        data = _read(relabel, "dataset.relabel")
        rows = csv.reader(data.decode("utf-8").splitlines())
        for n, row in enumerate(rows, 1):
            if not row or row[0].startswith("#") or (n == 1 and [c.strip() for c in row] == ["path", "label"]):
                continue
            if len(row) != 2:
                raise DatasetLayoutError(f"dataset.relabel={relabel}, line {n}: expected `path,label`, got {row}.")
            rel, label = _relative(root, row[0]), row[1].strip()
            if rel not in known:
                raise DatasetLayoutError(f"dataset.relabel={relabel}, line {n}: {row[0]!r} is no image of {root}.")
            if label not in splits.class_names:
                raise DatasetLayoutError(f"dataset.relabel={relabel}, line {n}: {label!r} is no class of {root} "
                                         f"(classes: {', '.join(splits.class_names)}).")
            labels[rel] = splits.class_names.index(label)
        record["relabel"] = {"file": os.path.abspath(relabel), "count": len(labels),
                             "sha256": hashlib.sha256(data).hexdigest()}
    if not record:
        return splits, record

    def apply(samples: list[Sample]) -> list[Sample]:
        out = []
        for s in samples:
            rel = _relative(root, s.path)
            if rel not in dropped:
                out.append(Sample(s.path, labels.get(rel, s.label)))
        return out

    return replace(splits, train=apply(splits.train), val=apply(splits.val)), record
