"""The checks that span config groups, refused at start-up naming the key, the value and the range.

Each group's own fields are checked by its schema dataclass (`transferlab.config.schema`, `__post_init__`);
what only makes sense across groups is checked here, on the typed settings (`transferlab.config.settings`),
before any data is prepared or any model is built. What depends on the model (its stages) is the training
plan's to check (`transferlab.training.plan`).
"""

from __future__ import annotations

import os
from typing import Any

from transferlab.errors import ConfigValueError

__all__ = ["ConfigValueError", "check_run"]


def _refuse(key: str, value: Any, allowed: str) -> None:
    raise ConfigValueError(f"{key}={value!r}: {allowed}.")


def _cuda_available() -> bool:
    import torch  # only asked when 16-bit precision is requested

    return torch.cuda.is_available()


def check_run(settings: Any) -> None:
    """Refuse combinations no single group can judge (`settings`: a `transferlab.config.settings.RunSettings`)."""
    lr = settings.optimizer.get("lr")
    if lr is not None and not lr > 0:
        _refuse("optimizer.lr", lr, "the learning rate must be > 0 (the tutorial's is 0.001)")
    max_epochs = settings.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs < 1:
        _refuse("trainer.max_epochs", max_epochs, "must be >= 1 (a run of no epoch trains nothing)")
    root = settings.dataset.root
    if isinstance(root, str) and os.path.isfile(os.path.expanduser(root)):
        _refuse("dataset.root", root, "is a file; point it at a folder holding train/ and val/ (or class folders)")
    precision, accelerator = str(settings.trainer.get("precision")), str(settings.trainer.get("accelerator"))
    if precision.startswith("16") and (accelerator == "cpu" or (accelerator == "auto" and not _cuda_available())):
        _refuse("trainer.precision", precision, "16-bit mixed precision needs a GPU; on a CPU use "
                "trainer.precision=bf16-mixed or 32")
    if settings.strategy.head_fit.enabled and settings.strategy.head_fit.solver == "lbfgs" \
            and settings.head.kind != "linear":
        _refuse("strategy.head_fit.solver", "lbfgs", f"solves a linear head, and head={settings.head.kind}; use "
                "strategy.head_fit.solver=auto (minibatch epochs on the cached features for this head)")
