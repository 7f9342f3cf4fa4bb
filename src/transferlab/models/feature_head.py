"""Any head trained on fixed features by minibatch epochs, early-stopped on held-out *training* rows.

A linear head on cached features is a convex problem and is solved (`transferlab.models.linear_fit`); an MLP
head, or a head a user registers, is not. It is trained here, on the cached features as tensors (no images, no
Lightning loop: an epoch over a few thousand feature rows takes milliseconds), by AdamW or SGD:

- a stratified share of the training *images* (`holdout`; the augmented views of one image stay together) is
  held out, and the number of epochs is the one with the lowest held-out loss, with `patience` epochs of
  waiting (choosing on the val set would inflate the val figure the run reports);
- with `refit`, the head is then trained again from the same initialisation on every training row for that
  many epochs (the held-out rows are training data too), as a cross-validated choice is refitted.

The inputs are standardised with the training rows' statistics for the optimisation, and the standardisation
is folded into the head's first linear layer afterwards, so the head works on raw features like any other.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from transferlab.config.schema import HeadTrainingConfig


@dataclass
class MinibatchFit:
    """How the head was trained (the run's summary: `head_fit`)."""

    epochs: int  # the chosen number of epochs (held-out loss)
    holdout_accuracy: float | None
    holdout_loss: float | None
    holdout_curve: list[float] = field(default_factory=list)  # held-out loss after each epoch
    train_accuracy: float = float("nan")
    refit: bool = True
    balanced: bool = False

    def report(self) -> dict:
        return {"solver": "minibatch", "epochs": self.epochs, "holdout_accuracy": self.holdout_accuracy,
                "holdout_loss": self.holdout_loss, "holdout_curve": [round(v, 5) for v in self.holdout_curve],
                "train_accuracy": self.train_accuracy, "refit": self.refit, "balanced": self.balanced}


def first_linear(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("The head has no nn.Linear layer to train on the features.")
    return linears[0]


def last_linear(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("The head has no nn.Linear layer.")
    return linears[-1]


def holdout_split(labels: np.ndarray, groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask of held-out rows: `share` of each class's images (at least one, never all), whole images."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    images, first = np.unique(groups, return_index=True)
    image_labels = labels[first]
    for c in np.unique(image_labels):
        mine = images[image_labels == c]
        n = min(len(mine) - 1, max(1, round(share * len(mine))))
        if n >= 1:
            held[np.isin(groups, rng.choice(mine, n, replace=False))] = True
    return held


def _optimizer(params: list[tuple[str, nn.Parameter]], settings: HeadTrainingConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in params if p.ndim > 1 and not n.endswith(".bias")]
    rest = [p for n, p in params if not (p.ndim > 1 and not n.endswith(".bias"))]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=settings.lr)


MIN_DELTA = 1e-4  # a held-out loss lower by less than this is no improvement (as EarlyStopping's min_delta)


def _epochs(head: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: HeadTrainingConfig, epochs: int,
            generator: torch.Generator, class_weight: torch.Tensor | None,
            held: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[list[float], int]:
    """Train `head` in place for up to `epochs`. With `held` rows: the held-out loss after each epoch, and the
    best epoch (the last that lowered it by at least MIN_DELTA); training stops once `patience` epochs have
    passed without one, and the head is left as it was at its best epoch."""
    optimizer = _optimizer(list(head.named_parameters()), settings)
    weight = None if class_weight is None else class_weight.to(x)
    curve: list[float] = []
    best, best_epoch, best_state = math.inf, epochs, None
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(len(y), generator=generator, device="cpu").to(x.device)
        for start in range(0, len(y), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            if len(batch) < 2 and len(y) > 1:
                continue  # a batch of one breaks BatchNorm in a registered head; it is reshuffled next epoch
            loss = F.cross_entropy(head(x[batch]), y[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if held is None:
            continue
        head.eval()
        with torch.no_grad():
            loss = float(F.cross_entropy(head(held[0]), held[1], weight=weight))
        curve.append(loss)
        if loss < best - MIN_DELTA:
            best, best_epoch, best_state = loss, epoch, copy.deepcopy(head.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return curve, best_epoch


def train_head_on_features(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                           groups: torch.Tensor | None, settings: HeadTrainingConfig, seed: int = 0,
                           class_weight: torch.Tensor | None = None) -> MinibatchFit:
    """Train `head` (in place) on `features (N, D) -> labels (N,)`; see the module docstring. `groups`: the
    image each row comes from (rows of one image are held out together)."""
    x, y = features.float(), labels.long().to(features.device)
    groups_np = np.arange(len(y)) if groups is None else groups.cpu().numpy()
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    z = (x - mean) / std
    initial = copy.deepcopy(head.state_dict())
    torch.manual_seed(seed)  # dropout masks
    held = holdout_split(y.cpu().numpy(), groups_np, settings.holdout, seed)
    generator = torch.Generator().manual_seed(seed)
    fit_rows = torch.as_tensor(~held, device=x.device)
    held_rows = torch.as_tensor(held, device=x.device)
    curve: list[float] = []
    if held.any():
        curve, epochs = _epochs(head, z[fit_rows], y[fit_rows], settings, settings.max_epochs, generator,
                                class_weight, held=(z[held_rows], y[held_rows]))
        with torch.no_grad():
            held_acc = float((head(z[held_rows]).argmax(1) == y[held_rows]).float().mean())
        held_loss = curve[epochs - 1]
    else:  # a class of one image: nothing to hold out
        epochs, held_acc, held_loss = settings.max_epochs, None, None
    refit = settings.refit or not held.any()
    if refit:
        head.load_state_dict(initial)
        _epochs(head, z, y, settings, epochs, torch.Generator().manual_seed(seed), class_weight)
    with torch.no_grad():
        train_acc = float((head(z).argmax(1) == y).float().mean())
    fold_standardisation(head, mean, std)
    return MinibatchFit(epochs=epochs, holdout_accuracy=held_acc, holdout_loss=held_loss, holdout_curve=curve,
                        train_accuracy=train_acc, refit=refit, balanced=class_weight is not None)


@torch.no_grad()
def fold_standardisation(head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make a head trained on (x - mean) / std take x: W z + b = (W / std) x + (b - (W / std) mean). Exact at
    evaluation; a dropout before the layer then drops raw rather than standardised inputs while fine-tuning."""
    linear = first_linear(head)
    weight = linear.weight / std.to(linear.weight)
    linear.bias.sub_(weight @ mean.to(weight))
    linear.weight.copy_(weight)


@torch.no_grad()
def temper(head: nn.Module, features: torch.Tensor, max_std: float) -> float:
    """Divide the head's last linear layer by the factor that brings its logits' spread on `features` (their
    standard deviation) down to `max_std`, if it is above; every prediction is unchanged. Returns the factor."""
    was_training = head.training
    head.eval()
    std = float(head(features.float().to(last_linear(head).weight.device)).std())
    head.train(was_training)
    temperature = max(1.0, std / max_std)
    layer = last_linear(head)
    layer.weight.div_(temperature)
    layer.bias.div_(temperature)
    return temperature
