"""Shared fixtures: compose the real Hydra config (debug=tiny shrinks it); build tiny image folders on the fly;
train the tiny models once per session for the tests that only read what a training run wrote.

- `trained_run`: a 3-class run trained once by the real `python train.py` (a genuine run directory: .hydra/,
  summary.json, best and last checkpoints). The eval, predict and export tests share it; it is also the default
  suite's command-line smoke test of train.py (tests/test_training.py).
- `tiny_training(strategy)`: the 2-class `tiny_folder` trained in process once per strategy.

Both are read-only: a test that changes a run directory copies it first (`copy_run`); the session checks at
the end that nobody wrote into them.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from transferlab.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
HYMENOPTERA = (ROOT / ".." / "shared" / "datasets" / "hymenoptera_data").resolve()

register_resolvers()  # the ${launch_dir:} resolver and the config schema, before any test composes conf/

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N (pyproject's addopts: -n auto): N workers share the cores, so each gets its share of torch
    # threads; on 2 cores two one-thread workers ran the suite in 142 s against 235 s serially (and 204 s with
    # two threads each, oversubscribed). The environment variable reaches the commands a test launches.
    import torch

    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def shrink(root: Path | str, **extra: object) -> list[str]:
    """Overrides for a run in seconds on the image folder `root`: conf/debug/tiny.yaml (tiny images, a tiny
    random timm model, a few batches, no progress bar) + `dataset=folder dataset.root=<root>`, then `extra` as
    `key=value` overrides (e.g. `strategy="frozen"`, `**{"trainer.max_epochs": 2}`, `backbone="efficientnet_lite0"`
    for real weights with the rest kept tiny)."""
    overrides = ["debug=tiny", "dataset=folder", f"dataset.root={root}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return overrides


def compose_config(tmp_path: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """The real conf/<config_name>.yaml (train, eval, predict, export), composed as Hydra would, with outputs
    redirected into tmp_path (this job's directory: tmp_path / "run")."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # as inside @hydra.main: the job's config has no hydra node
    return cfg


def run_script(script: str, *args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch,
               capsys) -> tuple[int, str, str]:
    """`python <script> <args>` launched from `cwd`, but in this process: the real script under Hydra's real
    `@hydra.main` (composition, command-line parsing, its error report), without a new interpreter's start-up
    (seconds per call here). Returns (exit status, stderr, stdout). Whatever Hydra does to logging is undone."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *args])
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    GlobalHydra.instance().clear()
    code: int | str | None = 0
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
        GlobalHydra.instance().clear()
    status = code if isinstance(code, int) else (0 if code is None else 1)
    captured = capsys.readouterr()
    return status, captured.err, captured.out


COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 30)]


def make_folder(root: Path, splits: dict[str, dict[str, int]], size: int = 24, seed: int = 0) -> Path:
    """Write root/<split>/<class>/<i>.png; class k is a noisy solid colour so it is learnable."""
    rng = np.random.default_rng(seed)
    all_classes = sorted({c for classes in splits.values() for c in classes})
    for split, classes in splits.items():
        for cls, n in classes.items():
            colour = np.array(COLOURS[all_classes.index(cls) % len(COLOURS)], dtype=np.int16)
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-25, 25, size=(size, size, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


TINY_SPLITS = {"train": {"ant": 12, "bee": 12}, "val": {"ant": 6, "bee": 6}}


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """2 classes, 12 + 6 images each, 24 px: a fresh copy per test (tests may change it)."""
    return make_folder(tmp_path / "data", TINY_SPLITS)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_untouched(folder: Path, before: dict[str, tuple[int, int]]) -> None:
    after = _snapshot(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared {folder} (copy it first: copy_run): {changed[:5]}"


# --- one run trained by the real train.py, shared by the eval / predict / export tests --------------------------
CLASSES = ["ant", "bee", "wasp"]  # trained_run's classes; val/ holds 5 images of each


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """A 3-class tiny model trained once per session through the real `python train.py`, launched from its own
    directory with a relative `dataset.root=data` (as a user would; eval then finds the data through the run's
    .hydra/ files). Returns summary.json plus run_dir, data, launch_dir and the command's stdout/stderr.

    Read-only: copy it (`copy_run`) before changing anything in it."""
    root = tmp_path_factory.mktemp("trained_run")
    folder = make_folder(root / "data", {"train": {c: 12 for c in CLASSES}, "val": {c: 5 for c in CLASSES}})
    overrides = shrink("data", **{"trainer.max_epochs": 2, "trainer.limit_train_batches": 9, "optimizer": "adamw",
                                  "optimizer.lr": 0.01, "strategy": "finetune", "logger": "none"})
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TORCH_HOME": str(root / "torch_home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True,
                          cwd=root, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_file,) = (root / "outputs" / "train" / "runs").glob("*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    run_dir = summary_file.parent
    before = _snapshot(root)
    yield {**summary, "run_dir": str(run_dir), "data": str(folder), "launch_dir": str(root), "overrides": overrides,
           "stdout": proc.stdout, "stderr": proc.stderr}
    _assert_untouched(root, before)


def copy_run(run: dict, dest: Path) -> Path:
    """A copy of a shared run directory (`trained_run`, `tiny_training(...)`) that a test may change."""
    shutil.copytree(run["run_dir"], dest)
    return dest


# --- the 2-class tiny folder trained in process, once per strategy --------------------------------------------
@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory) -> Callable[[str], dict]:
    """`tiny_training(strategy)`: `train(compose_config(..., shrink(<the tiny_folder images>, strategy=...)))`
    run once per strategy per session, with the TensorBoard logger and every validation batch
    (`trainer.limit_val_batches=null`, so the dashboards see all 12 val images). Returns the summary plus
    run_dir and data. Read-only, like `trained_run`."""
    from transferlab.tasks.train import train

    base = tmp_path_factory.mktemp("tiny_training")
    data = make_folder(base / "data", TINY_SPLITS)
    runs: dict[str, dict] = {}
    snapshots: dict[Path, dict] = {data: _snapshot(data)}

    def get(strategy: str) -> dict:
        if strategy not in runs:
            root = base / strategy
            cfg = compose_config(root, shrink(data, strategy=strategy, **{"trainer.limit_val_batches": "null"}))
            summary = train(cfg)
            GlobalHydra.instance().clear()
            runs[strategy] = {**summary, "run_dir": str(root / "run"), "data": str(data)}
            snapshots[root] = _snapshot(root)
        return runs[strategy]

    yield get
    for root, before in snapshots.items():
        _assert_untouched(root, before)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test may download, or write into the user's caches."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    GlobalHydra.instance().clear()


requires_hymenoptera = pytest.mark.skipif(
    not (HYMENOPTERA / "train").is_dir(), reason=f"hymenoptera data not found at {HYMENOPTERA}"
)
