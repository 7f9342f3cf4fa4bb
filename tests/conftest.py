"""Shared fixtures: compose the real Hydra config (debug=tiny shrinks it); build tiny image folders on the fly."""

from __future__ import annotations

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


def shrink(root: Path | str, **extra: object) -> list[str]:
    """Overrides for a run in seconds on the image folder `root`: conf/debug/tiny.yaml (tiny images, a tiny
    random timm model, a few batches, no progress bar) + `dataset=folder dataset.root=<root>`, then `extra` as
    `key=value` overrides (e.g. `strategy="frozen"`, `**{"trainer.max_epochs": 2}`, `backbone="efficientnet_lite0"`
    for real weights with the rest kept tiny)."""
    overrides = ["debug=tiny", "dataset=folder", f"dataset.root={root}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return overrides


def compose_config(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """The real conf/train.yaml, composed as Hydra would, with outputs redirected into tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # as inside @hydra.main: the job's config has no hydra node
    return cfg


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


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", {"train": {"ant": 12, "bee": 12}, "val": {"ant": 6, "bee": 6}})


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
