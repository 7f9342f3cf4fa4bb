"""Atomic writes: a writer that fails midway leaves the previous file as it was and no temporary file behind."""

from __future__ import annotations

import json
import os

import pytest
import torch

from transferlab.data.doctor.inspect import FactsCache
from transferlab.files import atomic_save, atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_writer


class Unserialisable:
    """Breaks json.dumps / torch.save partway through the object holding it."""

    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writers_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    atomic_write_text(path, "text")
    assert path.read_text() == "text"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_save({"t": torch.arange(3)}, tmp_path / "x.pt")
    assert torch.load(tmp_path / "x.pt", weights_only=True)["t"].tolist() == [0, 1, 2]
    assert leftovers(tmp_path) == leftovers(tmp_path / "sub") == []


def test_failed_serialisation_keeps_the_previous_file(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"status": "ok"})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"status": "new", "bad": object()})
    assert json.loads(path.read_text()) == {"status": "ok"}

    pt = tmp_path / "features.pt"
    atomic_save({"x": torch.ones(2)}, pt)
    with pytest.raises(Exception, match="cannot pickle"):  # torch.save fails after it has started writing
        atomic_save({"x": torch.zeros(1000), "y": Unserialisable()}, pt)
    assert torch.load(pt, weights_only=True)["x"].tolist() == [1.0, 1.0]
    assert leftovers(tmp_path) == []


def test_a_writer_that_raises_midway_keeps_the_previous_file(tmp_path):
    path = tmp_path / "report.csv"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_writer(path, "w") as f:
        f.write("half of the new")
        f.flush()
        raise RuntimeError("crash")
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_a_failing_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"v": 1})

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert leftovers(tmp_path) == []


def test_doctor_cache_write_failure_keeps_the_old_cache(tmp_path, monkeypatch, caplog):
    root = str(tmp_path / "data")
    image = tmp_path / "data" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"x")
    cache = FactsCache(tmp_path / "cache", root)
    cache.put(str(image), [1, 2], {"decoded": True})
    cache.save()
    before = cache.path.read_text()

    again = FactsCache(tmp_path / "cache", root)
    again.put(str(image), [3, 4], {"decoded": False})
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("read-only")))
    again.save()  # logs a warning, never raises
    assert "Could not write the doctor facts cache" in caplog.text
    assert cache.path.read_text() == before
    assert leftovers(cache.path.parent) == []
