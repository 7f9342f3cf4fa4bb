"""bench/scale.py: its synthetic folders (layout, determinism, reuse) and its report's maths on made-up timings;
the doctor's duplicate/leak check stays linear in the files. The end-to-end run at 1k images is slow."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from transferlab.data.doctor import diagnose
from transferlab.data.doctor.checks import LEAK_NAMES, _duplicates_and_leaks
from transferlab.data.doctor.report import DatasetReport, Entry

ROOT = Path(__file__).resolve().parents[1]


def _load_scale():
    sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import each other (_results)
    try:
        spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


scale = _load_scale()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


def test_generate_layout_and_determinism(tmp_path):
    marker = scale.generate(tmp_path / "a" / "40", 40, classes=4, px=32, seed=3)
    root = tmp_path / "a" / "40"
    assert marker["reused"] is False and marker["params"]["images"] == 40
    assert sorted(p.name for p in root.iterdir()) == ["generated.json", "train", "val"]
    for split, per_class in (("train", 8), ("val", 2)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == ["class_00", "class_01", "class_02", "class_03"]
        assert all(len(list((root / split / c).glob("*.jpg"))) == per_class for c in classes)
    assert not (tmp_path / "a" / "40.partial").exists()
    # the same parameters give the same bytes, wherever and however often they are generated
    scale.generate(tmp_path / "b" / "40", 40, classes=4, px=32, seed=3)
    assert _digests(root) == _digests(tmp_path / "b" / "40")
    # another seed, other bytes; the doctor reads the folder as training would: 4 classes, 8 + 2 each, no error
    scale.generate(tmp_path / "c" / "40", 40, classes=4, px=32, seed=4)
    assert _digests(root) != _digests(tmp_path / "c" / "40")
    report = diagnose(root)
    assert report.layout == "train_val" and not report.errors
    assert report.counts == {s: {f"class_{c:02d}": n for c in range(4)} for s, n in (("train", 8), ("val", 2))}


def test_generate_reuses_a_complete_folder_and_redoes_an_incomplete_one(tmp_path):
    root = tmp_path / "40"
    scale.generate(root, 40, classes=4, px=32)
    stamp = (root / "train" / "class_00" / "img_000000.jpg").stat().st_mtime_ns
    assert scale.generate(root, 40, classes=4, px=32)["reused"] is True
    assert (root / "train" / "class_00" / "img_000000.jpg").stat().st_mtime_ns == stamp
    (root / "val" / "class_01" / "img_000000.jpg").unlink()  # incomplete: generated again
    assert scale.generate(root, 40, classes=4, px=32)["reused"] is False
    assert scale.count_images(root) == 40
    assert scale.generate(root, 40, classes=4, px=24)["reused"] is False  # other parameters: generated again
    assert json.loads((root / "generated.json").read_text())["params"]["px"] == 24
    (root / "notes.txt").write_text("mine")  # a folder holding anything else is never deleted
    (root / "generated.json").unlink()
    with pytest.raises(SystemExit, match="not only generated data"):
        scale.generate(root, 40, classes=4, px=24)
    assert (root / "notes.txt").is_file()


def test_generate_duplicates_make_one_placeholder_group(tmp_path):
    root = tmp_path / "80"
    scale.generate(root, 80, classes=4, px=32, duplicates=0.25)
    digests = _digests(root)
    placeholder = digests["train/class_00/img_000000.jpg"]
    copies = [p for p, d in digests.items() if d == placeholder]
    assert len(copies) == 4 * (4 + 1)  # per class 0.25 * 16 train + 0.25 * 4 val
    report = diagnose(root)
    assert {f.code for f in report.warnings} >= {"conflicting_labels", "leak"}
    assert scale.data_root("/d", 40, 0.25) == Path("/d/40-dup0.25") and scale.data_root("/d", 40) == Path("/d/40")


def _run(seconds, rss=100.0, cpu=None, **extra):
    return {"seconds": seconds, "cpu_s": seconds if cpu is None else cpu, "peak_rss_mb": rss, "returncode": 0,
            **extra}


def test_report_maths_on_made_up_timings():
    by_size = {
        1000: scale.combine([{"doctor cold": _run(2.0), "frozen cold": _run(20.0, 1000, head_fit_s=1.0),
                              "frozen warm": _run(10.0, 900, head_fit_s=1.5, feature_cache_hit=True)}]),
        10000: scale.combine([{"doctor cold": _run(22.0), "frozen cold": _run(150.0, 1500, head_fit_s=9.0),
                               "frozen warm": _run(50.0, 1200, head_fit_s=11.0, feature_cache_hit=True)}]),
        50000: scale.combine([{"doctor cold": _run(140.0, 4000.0), "frozen cold": _run(700.0, 2500),
                               "frozen warm": _run(200.0, 2000, feature_cache_hit=True)}]),
    }
    rows = {(r["step"], r["images"]): r for r in scale.report_rows(by_size)}
    doc = rows["doctor cold", 10000]
    assert doc["s_per_1k"] == pytest.approx(2.2) and doc["ratio"] == pytest.approx(1.1) and doc["time_goal"]
    assert rows["doctor cold", 1000]["ratio"] == pytest.approx(1.0) and rows["doctor cold", 1000]["time_goal"] is None
    slow = rows["doctor cold", 50000]  # 2.8 s per 1k against 2.0: 1.4x, over the 1.3x goal; 4000 MB over 3 GB
    assert slow["ratio"] == pytest.approx(1.4) and slow["time_goal"] is False and slow["rss_goal"] is False
    ext = rows["extraction (cold - warm)", 50000]  # 500 s for 50k = 10 s per 1k, against 10 s per 1k at 1k
    assert ext["seconds"] == pytest.approx(500) and ext["ratio"] == pytest.approx(1.0) and ext["peak_rss_mb"] is None
    assert rows["frozen warm", 50000]["ratio"] == pytest.approx(0.4)
    assert rows["head fit (summary.json)", 1000]["seconds"] == pytest.approx(1.25)  # median of cold and warm
    assert rows["head fit (summary.json)", 10000]["ratio"] == pytest.approx(0.8)
    lines = scale.table(list(rows.values()), {"stamp": "s", "command": "c", "classes": 10, "source_px": 64,
                                              "backbone": "b", "image_size": 96, "repeats": 1, "cpus": 2,
                                              "base_is_1k": True})
    assert "| doctor cold | 50,000 | 140.0 | 140.0 | 2.80 | 1.40x | MISSED | 4000 | MISSED |" in lines
    assert lines[-1] == "Goals at 50,000: missed by doctor cold (time and RSS)"


def test_combine_takes_medians_and_drops_failed_or_unwarmed_runs():
    reps = [{"doctor cold": _run(3.0, 50), "frozen cold": _run(30.0), "frozen warm": _run(10.0)},
            {"doctor cold": _run(1.0, 70), "frozen cold": _run(40.0), "frozen warm": _run(12.0)},
            {"doctor cold": _run(2.0, 60), "frozen cold": _run(35.0),
             "frozen warm": _run(30.0, feature_cache_hit=False)},  # extracted again: not a warm run
            {"doctor cold": {**_run(99.0, 9999), "returncode": 1}}]
    out = scale.combine(reps)
    assert out["doctor cold"]["seconds"] == 2.0 and out["doctor cold"]["peak_rss_mb"] == 70
    assert len(out["doctor cold"]["runs"]) == 4
    assert out["extraction (cold - warm)"]["seconds"] == pytest.approx(24.0)  # median of 20 and 28
    assert scale.combine([{"frozen cold": {**_run(5.0), "returncode": 1}}])["frozen cold"]["seconds"] is None


def test_log_extraction_seconds():
    log = ("[2026-12-07 08:38:19,542][transferlab.tasks.train][INFO] - Input: InputSpec(image_size=96)\n"
           "  a continuation line\n"
           "[2026-12-07 08:38:26,827][transferlab.data.features][INFO] - Cached features in /x.pt\n")
    assert scale.log_extraction_s(log) == pytest.approx(7.285)
    assert scale.log_extraction_s(log.replace("Cached", "Loaded cached")) is None


def _leaky(n: int, copies: int) -> DatasetReport:
    """n entries, the first `copies` of them byte-identical (every fifth in val)."""
    entries, facts = [], {}
    for i in range(n):
        split = "val" if i % 5 == 0 else "train"
        path = f"/data/{split}/c{i % 3}/{i:06d}.jpg"
        entries.append(Entry(split, f"c{i % 3}", path))
        facts[path] = {"sha256": "same" if i < copies else f"h{i}"}
    return DatasetReport("/data", "train_val", ["c0", "c1", "c2"], {}, [], entries=entries, facts=facts)


def test_leaks_name_a_bounded_number_of_train_copies():
    report = _leaky(200, 100)
    _duplicates_and_leaks(report)
    leak, conflict = report.finding("leak"), report.finding("conflicting_labels")
    assert len(leak.items) == 20  # every val copy is still listed
    detail = leak.items[0].detail
    assert detail.startswith("also in train: train/c1/000001.jpg, train/c2/000002.jpg")
    assert detail.endswith(f"and {80 - LEAK_NAMES} more (all named under [conflicting_labels])")
    assert detail.count(".jpg") == LEAK_NAMES
    assert len(conflict.items[0].detail.split(", ")) == 79  # the train group's finding names every copy


def test_duplicate_check_is_linear_in_the_files():
    """A group of k identical files cost k^2 path names (34 s for 5,000 copies among 50,000 files); now ~k."""
    def seconds(n: int) -> float:
        report = _leaky(n, n // 10)
        start = time.perf_counter()
        _duplicates_and_leaks(report)
        return time.perf_counter() - start

    small, big = min(seconds(2000) for _ in range(3)), min(seconds(20000) for _ in range(3))
    assert big < 30 * small + 0.05  # 10x the files: ~10x the time (quadratic was ~100x: 2000 copies -> 0.6 s)


@pytest.mark.slow
def test_scale_bench_runs_end_to_end_at_1k(tmp_path):
    """The whole benchmark at 1k images: both doctor runs, the cold and warm frozen runs, the table."""
    import os
    import subprocess

    results = tmp_path / "results"  # not the tracked bench/results/
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--sizes", "1000",
                           "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TRANSFERLAB_BENCH_RESULTS": str(results)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (entry,) = json.loads((results / "scale" / "latest.json").read_text())["entries"].values()
    data = entry["data"]
    shutil.rmtree(data["work_dir"])  # the runs' caches and directories (outputs/bench/scale-<stamp>/)
    steps = {r["step"] for r in data["rows"]}
    assert steps >= {"doctor cold", "doctor warm", "frozen cold", "frozen warm", "extraction (cold - warm)"}
    warm = data["results"]["1000"]["doctor warm"]["runs"][0]
    assert warm["from_cache"] == warm["files_checked"] == 1000
    assert data["results"]["1000"]["frozen warm"]["runs"][0]["feature_cache_hit"] is True
