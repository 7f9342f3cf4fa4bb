"""Concurrent runs never share a directory; an output directory that cannot be written is refused up front."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _claim(base: str, barrier, results) -> None:
    from transferlab.config.run_dirs import unique_dir

    barrier.wait()  # both processes claim at the same moment, as two runs started in the same second
    results.put(unique_dir(base))


def test_two_processes_claiming_the_same_run_dir_get_two_dirs(tmp_path):
    base = str(tmp_path / "outputs" / "train" / "runs" / "2026-11-23" / "10-00-00")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(base, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    dirs = sorted(results.get(timeout=5) for _ in procs)
    assert dirs == [base, f"{base}_2"]


def test_within_one_process_a_run_dir_is_claimed_once(tmp_path):
    from transferlab.config.run_dirs import unique_dir

    base = str(tmp_path / "run")
    assert unique_dir(base) == unique_dir(base) == base


@pytest.mark.slow  # a train.py subprocess
def test_an_output_dir_that_cannot_be_created_is_refused_with_one_line(tmp_path):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the outputs folder should be")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=tiny", f"paths.log_dir={blocker}/x"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot create the output directory") and str(blocker) in last, proc.stderr
    assert "Traceback" not in proc.stderr and "Unable to configure handler" not in proc.stderr
