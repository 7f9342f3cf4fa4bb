"""bench/results/: one `latest.json` (+ `latest.md`) per bench, written by bench/_results.py with its provenance, and
docs/benchmarks.md rendered from them by bench/render.py (a stale page fails here)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _load("bench_results_writer", ROOT / "bench" / "_results.py")
render = _load("bench_render", ROOT / "bench" / "render.py")
LATEST = sorted(RESULTS.glob("*/latest.json"))


def test_results_hold_one_latest_json_and_md_per_bench_and_nothing_else():
    assert LATEST, "no bench/results/*/latest.json"
    stray = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*")
                   if p.is_file() and (p.parent.parent != RESULTS or p.name not in ("latest.json", "latest.md")))
    assert not stray, f"bench/results/ holds only <bench>/latest.json and latest.md (bench/_results.py): {stray}"


@pytest.mark.parametrize("path", LATEST, ids=lambda p: p.parent.name)
def test_every_latest_json_parses_with_its_provenance_and_its_md_is_up_to_date(path):
    doc = json.loads(path.read_text())
    assert doc["bench"] == path.parent.name and doc["entries"], path
    for key, entry in doc["entries"].items():
        meta = entry["meta"]
        assert isinstance(meta["command"], str) and meta["command"].startswith("python "), (key, meta)
        dt.datetime.fromisoformat(meta["date"])  # ISO
        assert isinstance(meta.get("stamp"), str) and "commit" in meta and "machine" in meta, (key, meta)
        assert isinstance(entry["data"], dict) and isinstance(entry["markdown"], list), key
    assert path.with_name("latest.md").read_text() == results.render_markdown(doc), (
        f"{path.with_name('latest.md')} is not what {path.name} renders to: rewrite it with bench/_results.py")


def test_docs_benchmarks_md_is_what_bench_render_py_renders():
    page = ROOT / "docs" / "benchmarks.md"
    assert page.exists() and page.read_text() == render.render(), (
        "docs/benchmarks.md is out of date with bench/results/*/latest.json: run `python bench/render.py`")


# --- the writer ---------------------------------------------------------------------------------------------------
def test_write_latest_replaces_only_the_entry_it_measured_and_keeps_each_entrys_meta(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench/accuracy.py", "--data", "hymenoptera", "--arms", "frozen"])
    first = results.write_latest("accuracy", {"acc": 0.97}, ["| a |", "|---|", "| 1 |"], results=tmp_path,
                                 meta={"stamp": "2026-01-01_00-00-00", "date": "2026-01-01T00:00:00"})
    assert first == tmp_path / "accuracy" / "latest.json"
    assert "| 1 |" in capsys.readouterr().out  # the table is printed too
    results.write_latest("accuracy", {"acc": 0.99}, ["| b |"], "python bench/accuracy.py --data flowers12 --arms lpft",
                         results=tmp_path, meta={"stamp": "2026-01-02_00-00-00", "date": "2026-01-02T00:00:00"})
    doc = json.loads(first.read_text())
    assert list(doc["entries"]) == ["--data flowers12 --arms lpft", "--data hymenoptera --arms frozen"]
    hym = doc["entries"]["--data hymenoptera --arms frozen"]
    assert hym["meta"]["command"] == "python bench/accuracy.py --data hymenoptera --arms frozen"  # from sys.argv
    assert set(hym["meta"]["machine"]) >= {"platform", "cpu_count", "torch"} and "commit" in hym["meta"]

    # the same arguments again: that entry replaced, the other kept as it was, with its own meta
    results.write_latest("accuracy", {"acc": 0.98}, ["| c |"],
                         "python bench/accuracy.py --data hymenoptera --arms frozen", results=tmp_path,
                         meta={"stamp": "2026-01-03_00-00-00", "date": "2026-01-03T00:00:00"})
    doc = json.loads(first.read_text())
    assert len(doc["entries"]) == 2
    assert doc["entries"]["--data hymenoptera --arms frozen"]["data"] == {"acc": 0.98}
    assert doc["entries"]["--data flowers12 --arms lpft"]["meta"]["stamp"] == "2026-01-02_00-00-00"
    md = first.with_name("latest.md").read_text()
    assert md.index("| b |") < md.index("| c |") and "| a |" not in md  # oldest first, the replaced one gone

    # other scripts name an entry by its stamp; a bare latest.json is its newest
    assert results.select_entry(f"{first}@2026-01-02")["data"] == {"acc": 0.99}
    assert results.select_entry(first)["data"] == {"acc": 0.98}
    with pytest.raises(SystemExit, match="0 entries have stamp"):
        results.select_entry(f"{first}@2025")
    old = tmp_path / "accuracy-2026-12-04_15-18-08.json"  # a file of the layout before (git history)
    old.write_text(json.dumps({"argv": [], "results": [{"arm": "frozen"}]}))
    assert results.select_entry(old)["data"]["results"] == [{"arm": "frozen"}]


def test_write_latest_is_atomic_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    results.write_latest("tta", {"v": 1}, ["| 1 |"], "python bench/tta.py", results=tmp_path)
    path = tmp_path / "tta" / "latest.json"
    before = path.read_text()
    replaced = []
    real_replace = os.replace

    def failing_replace(src, dst):
        replaced.append((Path(src).parent, Path(dst)))
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        results.write_latest("tta", {"v": 2}, ["| 2 |"], "python bench/tta.py", results=tmp_path)
    assert replaced == [(path.parent, path)]  # written beside it, then renamed over it
    assert path.read_text() == before and sorted(p.name for p in path.parent.iterdir()) == ["latest.json", "latest.md"]
    monkeypatch.setattr(results.os, "replace", real_replace)


def test_the_results_folder_can_be_redirected_for_end_to_end_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    out = results.write_latest("scale", {"rows": []}, [], "python bench/scale.py --sizes 1000")
    assert out == tmp_path / "scale" / "latest.json" and results.entry_key("python bench/scale.py") == "default"


def test_outside_git_the_commit_is_none(tmp_path):
    assert results.git_commit(tmp_path) is None
    commit = results.git_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


# --- the page -----------------------------------------------------------------------------------------------------
def test_the_page_names_every_figures_machine_date_command_and_commit_and_a_stale_page_fails(tmp_path, monkeypatch):
    results.write_latest("startup", {"s": 1}, ["# a title", "", "| x |", "|---|", "| 1 |"],
                         "python bench/startup.py --runs 5", results=tmp_path,
                         meta={"date": "2026-01-01T00:00:00", "stamp": "2026-01-01_00-00-00", "commit": "abc123",
                               "machine": {"platform": "Linux", "cpu_count": 2, "torch": "2.9"}})
    page = render.render(tmp_path)
    assert page == render.render(tmp_path)  # deterministic
    assert "## startup" in page and "### startup 2026-01-01_00-00-00" in page
    assert "`python bench/startup.py --runs 5`" in page and "2026-01-01T00:00:00" in page
    assert "Linux, 2 CPUs, torch 2.9" in page and "`abc123`" in page
    assert "**a title**" in page and "\n# a title" not in page  # an entry's headings do not break the outline
    out = tmp_path / "benchmarks.md"
    out.write_text(page)
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["render.py", "--check", "--out", str(out)])
    assert render.main() == 0
    results.write_latest("startup", {"s": 2}, ["| 2 |"], "python bench/startup.py --runs 5", results=tmp_path)
    assert render.main() == 1  # a new figure, the page not rendered again: stale
    monkeypatch.setattr(sys, "argv", ["render.py", "--out", str(out)])
    assert render.main() == 0 and out.read_text() == render.render(tmp_path) and "| 2 |" in out.read_text()
