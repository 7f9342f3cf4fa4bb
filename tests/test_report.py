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


@pytest.mark.slow  # a subprocess; the report itself is tested in process above
def test_command_line_rebuilds_the_report(sweep):
    proc = subprocess.run([sys.executable, "-m", "transferlab.sweep_report", str(sweep)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 jobs: 3 ok, 1 failed" in proc.stdout
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.png").is_file()


# --- repetitions (seed=..., dataset.fold=...) ----------------------------------------------------------------
@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """2 strategies x 3 seeds; one frozen seed failed."""
    sweep = tmp_path / "seeds"
    accs = {"finetune": [0.90, 0.92, 0.94], "frozen": [0.95, 0.97, None]}
    num = 0
    for strategy, values in accs.items():
        for seed, acc in enumerate(values):
            summary = ok(acc, 100.0 + 10 * seed) if acc is not None else {"status": "failed", "error": "boom"}
            make_job(sweep, num, [*COMMON, f"strategy={strategy}", f"seed={seed}"], summary)
            num += 1
    return sweep


def test_seeds_are_repetitions_aggregated_per_configuration(seeds):
    paths = build_report(seeds)
    assert sorted(p.name for p in paths.values()) == ["summary.csv", "summary.md", "summary.png", "summary_jobs.csv"]
    rows = read_csv(seeds / "summary.csv")
    assert [r["strategy"] for r in rows] == ["finetune", "frozen"]
    assert "seed" in rows[0] and rows[0]["seed"] == "0 1 2" and rows[1]["seed"] == "0 1"  # the ok repetitions
    fine, frozen = rows
    assert fine["n"] == "3" and float(fine["val_acc_best_mean"]) == pytest.approx(0.92)
    assert float(fine["val_acc_best_std"]) == pytest.approx(0.02)  # sample std (n - 1)
    assert float(fine["val_acc_best_min"]) == 0.90 and float(fine["val_acc_best_max"]) == 0.94
    assert float(fine["wall_time_s_mean"]) == pytest.approx(110.0) and float(fine["wall_time_s_std"]) == 10.0
    assert frozen["n"] == "2" and float(frozen["val_acc_best_mean"]) == pytest.approx(0.96)
    assert frozen["jobs"] == "3 4 5" and frozen["status"] == "2 ok, 1 failed"
    # every job is still listed, one row each
    jobs = read_csv(seeds / "summary_jobs.csv")
    assert [(r["job"], r["strategy"], r["seed"]) for r in jobs][:2] == [("0", "finetune", "0"), ("1", "finetune", "1")]
    md = (seeds / "summary.md").read_text()
    assert "6 jobs: 5 ok, 1 failed; 2 configurations, repeated over seed (3 values)" in md
    assert "Best mean val acc 0.9600 ± 0.0141 (n=2): strategy=frozen." in md
    assert "| `finetune` | 3 | 0.9200 ± 0.0200 | 0.9000 – 0.9400 | 1m 50.0s ± 10.0s | 1m 40.0s – 2m 00.0s |" in md
    assert "## Jobs" in md and "| 5 | `frozen` | `2` | - |" in md
    with Image.open(seeds / "summary.png") as im:
        assert im.format == "PNG" and len(im.convert("L").getcolors(maxcolors=1 << 16)) > 10


def test_folds_count_as_repetitions_and_a_fixed_seed_does_not(tmp_path):
    from transferlab.sweep_report import REPEAT_KEYS, repeat_keys

    assert REPEAT_KEYS == ("seed", "dataset.fold")
    sweep = tmp_path / "folds"
    for num, (strategy, fold) in enumerate([("a", 0), ("a", 1), ("b", 0), ("b", 1)]):
        make_job(sweep, num, ["seed=7", f"strategy={strategy}", f"dataset.fold={fold}"], ok(0.8 + num / 100, 5.0))
    jobs = find_jobs(sweep)
    assert repeat_keys(jobs, defining_keys(jobs)) == ["dataset.fold"]
    build_report(sweep)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["strategy"], r["n"], r["dataset.fold"]) for r in rows] == [("a", "2", "0 1"), ("b", "2", "0 1")]
    assert "seed" not in rows[0]  # the same in every job: not a column


# --- paired comparisons on the same images ---------------------------------------------------------------
def write_predictions(job: Path, files: list[str], truth: list[str], correct: list[bool]) -> None:
    lines = ["file,true,predicted,probability,true_probability"]
    for f, t, c in zip(files, truth, correct, strict=True):
        predicted = t if c else ("bee" if t == "ant" else "ant")
        lines.append(f"{f},{t},{predicted},0.800000,{0.8 if c else 0.2:.6f}")
    (job / "val_predictions.csv").write_text("\n".join(lines) + "\n")


def known_pair(n=200, a_only=15, b_only=5, both=150, seed=0):
    """Correctness of A and B on n images: A alone right on a_only, B alone on b_only, both on `both`."""
    import numpy as np

    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:a_only] = True
    b[a_only:a_only + b_only] = True
    a[a_only + b_only:a_only + b_only + both] = b[a_only + b_only:a_only + b_only + both] = True
    order = np.random.default_rng(seed).permutation(n)
    return a[order].tolist(), b[order].tolist()


FILES200 = [f"/data/val/{'ant' if i % 2 else 'bee'}/{i:03d}.png" for i in range(200)]
TRUTH200 = ["ant" if i % 2 else "bee" for i in range(200)]


def test_paired_comparison_matches_a_direct_computation(tmp_path):
    import numpy as np
    from scipy.stats import binomtest

    from transferlab.sweep_report import BOOT_SEED, N_BOOT

    sweep = tmp_path / "paired"
    a, b = known_pair()
    job_a = make_job(sweep, 0, ["strategy=frozen"], ok(sum(a) / 200, 10.0))
    job_b = make_job(sweep, 1, ["strategy=finetune"], ok(sum(b) / 200, 50.0))
    write_predictions(job_a, FILES200, TRUTH200, a)
    # B's file lists the images in another order: they are matched by file, not by row
    order = list(reversed(range(200)))
    write_predictions(job_b, [FILES200[i] for i in order], [TRUTH200[i] for i in order], [b[i] for i in order])
    paths = build_report(sweep)
    assert "comparisons.csv" in {p.name for p in paths.values()}
    (row,) = read_csv(sweep / "comparisons.csv")
    assert (row["a"], row["b"], row["a_only"], row["b_only"], row["images"]) == ("frozen", "finetune", "15", "5", "200")
    p = binomtest(5, 20, 0.5).pvalue  # two-sided
    assert float(row["p_value"]) == pytest.approx(p, rel=1e-12)
    assert float(row["diff"]) == pytest.approx(10 / 200)
    d = np.array(a, dtype=float) - np.array(b, dtype=float)
    idx = np.random.default_rng(BOOT_SEED).integers(0, 200, size=(N_BOOT, 200))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((lo, hi), abs=1e-12)
    assert lo < 10 / 200 < hi
    md = (sweep / "summary.md").read_text()
    sentence = (f"`frozen` vs `finetune`: +5.0 points, 95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}], p = {p:.2f}: ")
    assert sentence in md
    assert "(15 images only `frozen` got right, 5 only `finetune`; 200 images)" in md
    # the per-job table is unchanged by the new section
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 2


def test_jobs_without_predictions_or_with_other_val_images_are_not_compared(tmp_path):
    sweep = tmp_path / "mixed"
    a, b = known_pair()
    write_predictions(make_job(sweep, 0, ["strategy=frozen"], ok(0.9, 1.0)), FILES200, TRUTH200, a)
    write_predictions(make_job(sweep, 1, ["strategy=finetune"], ok(0.8, 1.0)), FILES200, TRUTH200, b)
    make_job(sweep, 2, ["strategy=partial"], ok(0.7, 1.0))  # an old job: no val_predictions.csv
    other = [f.replace("/data/", "/other/") for f in FILES200]
    write_predictions(make_job(sweep, 3, ["strategy=gradual"], ok(0.6, 1.0)), other, TRUTH200, b)
    build_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "- `partial`: no val_predictions.csv (#2); not compared" in md
    assert "- `gradual`: val sets differ (different files) (#3); not compared" in md
    assert "- `frozen` vs `finetune`: +5.0 points" in md
    rows = read_csv(sweep / "comparisons.csv")
    assert [(r["b"], r["p_value"] != "") for r in rows] == [("finetune", True), ("partial", False), ("gradual", False)]


def test_an_old_sweep_without_any_predictions_says_so_in_one_line(sweep):
    paths = build_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "Paired comparison: no job wrote val_predictions.csv" in md
    assert "comparisons.csv" not in {p.name for p in paths.values()}


def test_paired_comparison_over_seeds_pairs_repetition_i_with_repetition_i(tmp_path):
    import numpy as np
    from scipy.stats import binomtest

    from transferlab.evaluation.stats import paired_bootstrap_ci
    from transferlab.sweep_report import BOOT_SEED, N_BOOT

    sweep = tmp_path / "paired_seeds"
    pairs = [known_pair(seed=s) for s in range(3)]  # per seed: 15 A-only, 5 B-only
    num = 0
    for strategy, which in (("frozen", 0), ("finetune", 1)):
        for seed in (2, 0, 1):  # created out of seed order: pairing is by seed value, not by position
            correct = pairs[seed][which]
            job = make_job(sweep, num, [f"strategy={strategy}", f"seed={seed}"], ok(sum(correct) / 200, 1.0))
            write_predictions(job, FILES200, TRUTH200, correct)
            num += 1
    build_report(sweep)
    (row,) = read_csv(sweep / "comparisons.csv")
    assert (row["repetitions"], row["a_only"], row["b_only"]) == ("3", "45", "15")
    assert float(row["p_value"]) == pytest.approx(binomtest(15, 60, 0.5).pvalue, rel=1e-12)
    # the same numbers as the function on the pairs in seed order (2, 0, 1: frozen's job order)
    files = sorted(FILES200)
    pos = [FILES200.index(f) for f in files]
    ca = [np.array(pairs[s][0])[pos] for s in (2, 0, 1)]
    cb = [np.array(pairs[s][1])[pos] for s in (2, 0, 1)]
    diff, lo, hi = paired_bootstrap_ci(ca, cb, n_boot=N_BOOT, seed=BOOT_SEED)
    assert float(row["diff"]) == pytest.approx(diff) == pytest.approx(0.05)
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((lo, hi), abs=1e-12)
    md = (sweep / "summary.md").read_text()
    assert "200 images × 3 repetitions" in md and "pooled over repetitions paired by seed" in md


def test_a_configuration_whose_jobs_all_failed_is_noted_not_compared(tmp_path):
    sweep = tmp_path / "failed_other"
    a, _ = known_pair()
    write_predictions(make_job(sweep, 0, ["strategy=frozen"], ok(0.9, 1.0)), FILES200, TRUTH200, a)
    make_job(sweep, 1, ["strategy=finetune"], {"status": "failed", "error": "boom"})
    build_report(sweep)
    assert "- `finetune`: no ok job; not compared" in (sweep / "summary.md").read_text()


def test_a_repeat_job_is_reported_as_its_repetitions(tmp_path):
    """`+repeat.seeds=[1,2]` runs both seeds inside one job dir (rep_seed1/, rep_seed2/): the report lists and
    aggregates them as two repetitions of one configuration, not as extra jobs without overrides."""
    sweep = tmp_path / "sweep"
    for num, strategy, accs in ((0, "frozen", (0.9, 0.8)), (1, "finetune", (0.7, 0.6))):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- strategy={strategy}\n")
        (job / "summary.json").write_text(json.dumps({"status": "ok", "val/acc_best": sum(accs) / 2}))
        for seed, acc in zip((1, 2), accs, strict=True):
            (job / f"rep_seed{seed}").mkdir()
            (job / f"rep_seed{seed}" / "summary.json").write_text(json.dumps({"status": "ok", "val/acc_best": acc}))
    jobs = find_jobs(sweep)
    assert sorted((j.num, j.overrides["strategy"], j.overrides["seed"]) for j in jobs) == [
        (0, "frozen", "1"), (0, "frozen", "2"), (1, "finetune", "1"), (1, "finetune", "2")]
    build_report(sweep)
    with open(sweep / "summary.csv", newline="") as f:
        rows = {r["strategy"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"frozen", "finetune"}
    assert float(rows["frozen"]["val_acc_best_mean"]) == pytest.approx(0.85)


def test_repetition_directories_are_named_and_parsed_in_one_place():
    """The job runner names a repetition's directory and the report reads the seed and fold back from it, with
    the same pair of functions (transferlab.jobs.repetitions)."""
    from omegaconf import OmegaConf

    from transferlab.jobs.repetitions import RepDir, parse_rep_dir, rep_dir_name, repetitions

    reps = repetitions(OmegaConf.create({"repeat": {"seeds": [1, -2], "folds": 3}}))
    assert [name for name, _ in reps][:4] == ["rep_seed1_fold0", "rep_seed1_fold1", "rep_seed1_fold2",
                                             "rep_seed-2_fold0"]
    for name, changes in reps:
        assert parse_rep_dir(name) == RepDir(changes["seed"], changes["dataset.fold"])
    assert rep_dir_name(7, None) == "rep_seed7" and rep_dir_name(None, 0) == "rep_fold0"
    assert parse_rep_dir("rep_seed7") == (7, None) and parse_rep_dir("rep_fold0") == (None, 0)
    assert [parse_rep_dir(n) for n in ("0", "rep_seedx", "rep_fold0_seed1", "prep_seed1")] == [None] * 4


def test_a_job_no_better_than_chance_is_flagged_in_the_job_table(tmp_path):
    sweep = tmp_path / "chance"
    make_job(sweep, 0, ["optimizer.lr=0.008"], ok(0.95, 10.0, chance_acc=0.54, learned=True))
    make_job(sweep, 1, ["optimizer.lr=10"], ok(0.54, 10.0, chance_acc=0.54, learned=False))
    md = (build_report(sweep)["summary.md"]).read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| 0 ") or
            line.startswith("| 1 ")}
    assert "ok: no better than chance" in rows["1"] and "no better than chance" not in rows["0"]


def test_a_job_whose_val_set_leaked_gets_a_leak_free_column_and_a_warning(sweep):
    make_job(sweep, 11, [*COMMON, "strategy=lpft", "optimizer.lr=0.01"],
             ok(0.97, 90.0, val_acc_leak_free={"accuracy": 0.96, "images": 145, "leaked": 8}))
    paths = build_report(sweep)
    rows = {r["job"]: r for r in read_csv(paths["summary.csv"])}
    assert rows["11"]["val_acc_leak_free"] == "0.96" and rows["11"]["leaked_val"] == "8"
    assert rows["0"]["val_acc_leak_free"] == ""
    md = paths["summary.md"].read_text()
    assert "leak-free val acc" in md and "0.9600 (8 leaked)" in md
    assert "1 job(s) found val images with a near-duplicate in train" in md


def test_no_leak_no_leak_free_column(sweep):
    assert "leak-free" not in build_report(sweep)["summary.md"].read_text()
