"""Classification heads placed on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn


def linear_head(in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """The tutorial's head: one Linear layer (optionally after dropout, as torchvision's EfficientNet)."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def mlp_head(in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.2) -> nn.Module:
    """Dropout -> Linear -> ReLU -> Dropout -> Linear: more capacity for a frozen backbone."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
