"""What produced a run: its seed, the versions of the packages that shape its numbers, and the code's commit.

Recorded in every summary.json, so a figure can be traced to the code and libraries that made it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("transferlab", "torch", "torchvision", "lightning", "timm", "hydra-core", "torchmetrics", "numpy",
            "pillow")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The commit of the git checkout holding `path` (this package's source by default) and whether it had
    uncommitted changes; None outside a checkout or without git."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance() -> dict[str, Any]:
    """Seed (as Lightning's seed_everything recorded it), package versions and git commit."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return {"seed": int(seed) if seed is not None else None, "versions": package_versions(), "git": git_commit()}
