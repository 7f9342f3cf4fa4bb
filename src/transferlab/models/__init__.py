"""Backbone registry, heads, strategies and the LightningModule."""

from transferlab.models.backbones import Backbone, InputSpec, WeightsUnavailableError, create_backbone
from transferlab.models.classifier import TransferClassifier
from transferlab.models.strategy import Strategy

__all__ = ["Backbone", "InputSpec", "Strategy", "TransferClassifier", "WeightsUnavailableError", "create_backbone"]
