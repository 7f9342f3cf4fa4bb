"""Values that would fail late (or worse, silently) are refused at start-up, naming the key and the range.

The schema (types) is checked by Hydra at composition; these are the ranges and combinations a type cannot
say. They run before any data is prepared or any model is built.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigValueError(ValueError):
    """A config value is out of its allowed range; the message names the key, the value and the range."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _refuse(key: str, value: Any, allowed: str) -> None:
    raise ConfigValueError(f"{key}={value!r}: {allowed}.")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_train_config(cfg: DictConfig) -> None:
    """Refuse out-of-range values of a composed training config (`python train.py`)."""
    # the batch size first: the SGD learning rate is scaled from it
    for key in ("dataset.batch_size", "dataset.eval_batch_size"):
        value = _get(cfg, key)
        if value not in (None, "auto") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            _refuse(key, value, "must be an integer >= 1" + (" or auto" if "eval" in key else ""))
    lr = _get(cfg, "optimizer.lr")
    if lr is not None and not lr > 0:
        _refuse("optimizer.lr", lr, "the learning rate must be > 0 (the tutorial's is 0.001)")
    max_epochs = _get(cfg, "trainer.max_epochs")
    if max_epochs is not None and max_epochs < 1:
        _refuse("trainer.max_epochs", max_epochs, "must be >= 1 (a run of no epoch trains nothing)")
    fraction = _get(cfg, "dataset.val_fraction")
    if fraction is not None and not 0 < fraction < 1:
        _refuse("dataset.val_fraction", fraction, "must be between 0 and 1, exclusive (e.g. 0.2)")
    root = _get(cfg, "dataset.root")
    if isinstance(root, str) and os.path.isfile(os.path.expanduser(root)):
        _refuse("dataset.root", root, "is a file; point it at a folder holding train/ and val/ (or class folders)")
    precision = str(_get(cfg, "trainer.precision"))
    accelerator = str(_get(cfg, "trainer.accelerator"))
    if precision.startswith("16") and (accelerator == "cpu" or (accelerator == "auto" and not _cuda_available())):
        _refuse("trainer.precision", precision, "16-bit mixed precision needs a GPU; on a CPU use "
                "trainer.precision=bf16-mixed or 32")
    check_recipe(cfg)
    if _get(cfg, "strategy.head_fit.enabled"):
        if _get(cfg, "head.kind") != "linear":
            _refuse("head", _get(cfg, "head.kind"),
                    f"strategy={_get(cfg, 'strategy.name')} fits a linear head (strategy.head_fit); use head=linear, "
                    "or strategy.head_fit.enabled=false to train this head by SGD")
        l2 = _get(cfg, "strategy.head_fit.l2")
        if not l2 or any(not v > 0 for v in l2):
            _refuse("strategy.head_fit.l2", list(l2 or []), "must be a non-empty list of positive strengths")
        for key in ("folds", "max_iter"):
            value = _get(cfg, f"strategy.head_fit.{key}")
            if value < 1:
                _refuse(f"strategy.head_fit.{key}", value, "must be >= 1")
        std = _get(cfg, "strategy.head_fit.max_logit_std")
        if std is not None and not 0 < std < float("inf"):
            _refuse("strategy.head_fit.max_logit_std", std, "must be a positive number (lpft's is 0.3), or null to "
                    "keep the head as fitted")


def check_recipe(cfg: DictConfig) -> None:
    """The recipe's and dataset.balance's ranges (called by check_train_config)."""
    smoothing = _get(cfg, "recipe.label_smoothing")
    if smoothing is not None and not 0 <= smoothing < 1:
        _refuse("recipe.label_smoothing", smoothing, "must be in [0, 1) (0.1 is usual)")
    for key in ("recipe.mixup_alpha", "recipe.cutmix_alpha"):
        value = _get(cfg, key)
        if value is not None and value < 0:
            _refuse(key, value, "must be >= 0 (0 switches it off; 0.2 to 1.0 is usual)")
    prob = _get(cfg, "recipe.mix_prob")
    if prob is not None and not 0 <= prob <= 1:
        _refuse("recipe.mix_prob", prob, "must be in [0, 1]")
    decay = _get(cfg, "recipe.ema_decay")
    if decay is not None and not 0 < decay < 1:
        _refuse("recipe.ema_decay", decay, "must be between 0 and 1 (e.g. 0.998), or null to switch the EMA off")
    balance = _get(cfg, "dataset.balance")
    if balance is not None and balance not in ("none", "sampler", "loss"):
        _refuse("dataset.balance", balance, "use none, sampler (class-balanced draws) or loss (class weights)")
