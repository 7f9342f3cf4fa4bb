"""The sweep report builder on synthetic sweep directories: complete, failed, partial and crashed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from transferlab.sweep_report import build_report, defining_keys, find_jobs, main


def make_job(sweep: Path, num: int, overrides: list[str], summary: dict | None | str) -> Path:
    """A job directory as Hydra and transferlab leave it; summary None: no summary.json (job never finished)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num, "name": "train"}}}))
    if isinstance(summary, str):
        (job / "summary.json").write_text(summary)
    elif summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def ok(acc: float, wall: float, **extra) -> dict:
    return {"status": "ok", "val/acc_best": acc, "best_epoch": 3, "val/loss": 0.25, "wall_time_s": wall,
            "train_images_per_s": 120.5, "trainable_params": 2562, "total_params": 3373570,
            "peak_memory_mb": 900.0, **extra}


COMMON = ["dataset=hymenoptera", "trainer.max_epochs=5"]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "2026-11-23" / "10-00-00"
    (sweep).mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    # Created out of order, and 10 after 2: jobs are ordered by number, not by name.
    make_job(sweep, 10, [*COMMON, "strategy=partial", "optimizer.lr=0.01"], ok(0.91, 130.0))
    make_job(sweep, 0, [*COMMON, "strategy=finetune", "optimizer.lr=0.01"], ok(0.95, 200.0))
    make_job(sweep, 1, [*COMMON, "strategy=frozen", "optimizer.lr=0.01"], ok(0.93, 60.0))
    make_job(sweep, 2, [*COMMON, "strategy=finetune", "optimizer.lr=-1"],
             {"status": "failed", "val/acc_best": None, "error": "ValueError: Invalid learning rate: -1"})
    return sweep


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_has_one_row_per_job_with_its_defining_overrides_and_metrics(sweep):
    paths = build_report(sweep)
    assert sorted(p.name for p in paths.values()) == ["summary.csv", "summary.md", "summary.png"]
    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]
    # Only the overrides that tell jobs apart get a column; the full list is kept too.
    assert list(rows[0])[:3] == ["job", "strategy", "optimizer.lr"]
    assert "dataset" not in rows[0]
    assert rows[0]["overrides"] == "dataset=hymenoptera trainer.max_epochs=5 strategy=finetune optimizer.lr=0.01"
    assert [r["strategy"] for r in rows] == ["finetune", "frozen", "finetune", "partial"]
    first = rows[0]
    assert float(first["val_acc_best"]) == 0.95 and first["best_epoch"] == "3"
    assert float(first["val_loss"]) == 0.25 and float(first["wall_time_s"]) == 200.0
    assert float(first["train_images_per_s"]) == 120.5
    assert first["trainable_params"] == "2562" and first["total_params"] == "3373570"
    assert float(first["peak_memory_mb"]) == 900.0 and first["status"] == "ok" and first["error"] == ""
    failed = rows[2]
    assert failed["status"] == "failed" and failed["error"] == "ValueError: Invalid learning rate: -1"
    assert failed["val_acc_best"] == "" and failed["optimizer.lr"] == "-1"


def test_markdown_names_the_best_job_and_shows_failures(sweep):
    build_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "4 jobs: 3 ok, 1 failed" in md
    assert "Best val acc 0.9500: #0 strategy=finetune optimizer.lr=0.01" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per job
    assert "| 1 | `frozen` | `0.01` | 0.9300 | 3 | 0.2500 | 1m 00.0s | 120.5 | 2,562 | 3,373,570 | 900 | ok |" in md
    assert "failed: ValueError: Invalid learning rate: -1" in table[3]


def test_png_is_a_real_image(sweep):
    build_report(sweep)
    with Image.open(sweep / "summary.png") as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 300
        # Not a blank canvas: the points and labels put some non-white pixels in it.
        assert len(im.convert("L").getcolors(maxcolors=1 << 16)) > 10


def test_partial_or_crashed_sweep_still_gets_a_report(tmp_path):
    """A sweep killed mid-way: job 0 finished, job 1 was running (no summary.json), job 2 died while writing
    its summary. Every job that started has a row; nothing is invented for the ones that did not."""
    sweep = tmp_path / "crashed"
    make_job(sweep, 0, ["strategy=finetune"], ok(0.9, 10.0))
    make_job(sweep, 1, ["strategy=frozen"], None)
    make_job(sweep, 2, ["strategy=partial"], '{"status": "ok", "val/acc')
    build_report(sweep)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["strategy"], r["status"]) for r in rows] == [
        ("0", "finetune", "ok"), ("1", "frozen", "incomplete"), ("2", "partial", "failed")]
    assert "no summary.json" in rows[1]["error"]
    assert "unreadable summary.json" in rows[2]["error"]
    md = (sweep / "summary.md").read_text()
    assert "3 jobs: 1 ok, 1 failed, 1 incomplete" in md
    assert (sweep / "summary.png").stat().st_size > 0


def test_sweep_where_no_job_finished_still_gets_all_three_files(tmp_path):
    sweep = tmp_path / "early"
    make_job(sweep, 0, ["strategy=finetune"], None)
    paths = build_report(sweep)
    assert all(p.is_file() for p in paths.values())
    assert read_csv(paths["summary.csv"])[0]["status"] == "incomplete"


def test_single_job_shows_all_its_overrides():
    from transferlab.sweep_report import Job

    jobs = [Job(dir=Path("0"), num=0, overrides={"a": "1", "b": "2"})]
    assert defining_keys(jobs) == ["a", "b"]


def test_summary_without_status_from_older_runs_counts_as_ok(tmp_path):
    sweep = tmp_path / "old"
    summary = ok(0.8, 5.0)
    del summary["status"]
    make_job(sweep, 0, ["strategy=frozen"], summary)
    assert find_jobs(sweep)[0].status == "ok"


def test_not_a_sweep_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="No job directories"):
        build_report(tmp_path)
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_command_line_rebuilds_the_report(sweep):
    proc = subprocess.run([sys.executable, "-m", "transferlab.sweep_report", str(sweep)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 jobs: 3 ok, 1 failed" in proc.stdout
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.png").is_file()
