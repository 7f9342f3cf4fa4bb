"""Classification heads placed on a backbone's pooled features, chosen by a registry key (`head.kind`).

A checkpoint names its head by key (`linear`, `mlp`), never by a Python path, so loading one runs no code
the project did not register here. A new head is a function added to `HEADS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn


def linear_head(in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None) -> nn.Module:
    """The tutorial's head: one Linear layer (optionally after dropout, as torchvision's EfficientNet)."""
    if hidden is not None:
        raise ValueError(f"head.hidden={hidden}: a linear head has no hidden layer; use head=mlp.")
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def mlp_head(in_features: int, num_classes: int, hidden: int | None = 512, dropout: float = 0.2) -> nn.Module:
    """Dropout -> Linear -> ReLU -> Dropout -> Linear: more capacity for a frozen backbone."""
    hidden = 512 if hidden is None else hidden
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


HEADS: dict[str, Callable[..., nn.Module]] = {"linear": linear_head, "mlp": mlp_head}


def head_params(kind: str) -> list[str]:
    """The settings a head kind takes besides its input and output widths."""
    if kind not in HEADS:
        raise ValueError(f"head.kind={kind!r}: expected one of {sorted(HEADS)}.")
    return [p for p in inspect.signature(HEADS[kind]).parameters if p not in ("in_features", "num_classes")]


def create_head(kind: str, in_features: int, num_classes: int, **params: Any) -> nn.Module:
    """Build the head registered as `kind`; unknown settings are an error naming them."""
    allowed = head_params(kind)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"head.kind={kind!r} takes {allowed}, not {unknown}.")
    return HEADS[kind](in_features, num_classes, **params)
