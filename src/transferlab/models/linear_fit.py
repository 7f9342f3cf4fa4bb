"""A linear head fitted to convergence on fixed features, its L2 strength chosen on the training features only.

On a frozen backbone's cached features the head is a small convex problem (multinomial logistic regression):
25 epochs of SGD at batch 4 neither converge nor regularise it. Here it is solved full batch with L-BFGS, on
standardised features (as scikit-learn's probe is), with an L2 penalty whose strength is chosen by stratified
K-fold cross-validation on the training features: held-out accuracy, ties broken by held-out log-loss, then by
the stronger penalty. Validation images are never seen.

Why not scikit-learn's `LogisticRegressionCV` (the benchmark's baseline): the same model, but its fits start
over for every fold and strength, which costs 2-20 s on 1280 features; here each fold walks the strengths from
strong to weak, warm-starting each fit from the previous solution, so the whole search costs about one cold
fit, runs on the model's device, and its result is the head's own `nn.Linear` parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import nn
from torch.nn import functional as F

from transferlab.config.schema import HeadFitConfig

_DEFAULTS = HeadFitConfig()


@dataclass
class LinearFit:
    """A fitted head in the raw feature space, and how its penalty was chosen (for the run's summary)."""

    weight: torch.Tensor  # (classes, features)
    bias: torch.Tensor  # (classes,)
    scale: torch.Tensor  # (features,): the training features' std; the penalty is l2/2 |weight * scale|^2
    l2: float
    cv_accuracy: float | None  # mean held-out accuracy at `l2` (None: too few images per class to cross-validate)
    cv_scores: dict[float, float] = field(default_factory=dict)  # every strength tried -> mean held-out accuracy
    folds: int = 0
    train_accuracy: float = float("nan")

    def report(self) -> dict:
        return {"l2": self.l2, "cv_accuracy": self.cv_accuracy, "folds": self.folds,
                "train_accuracy": self.train_accuracy, "cv_scores": {str(k): v for k, v in self.cv_scores.items()}}

    def load_into(self, head: nn.Module) -> None:
        """Copy into a linear head."""
        linear = linear_layer(head)
        with torch.no_grad():
            linear.weight.copy_(self.weight.to(linear.weight))
            linear.bias.copy_(self.bias.to(linear.bias))


def linear_layer(head: nn.Module) -> nn.Linear:
    """The one `nn.Linear` of a linear head (dropout before it is allowed); any other head is an error."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"strategy.head_fit needs head=linear (one linear layer); this head has {len(linears)}. "
                         "Use head=linear, or strategy.head_fit.enabled=false to train this head by SGD.")
    return linears[0]


def penalised_loss(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                   l2: float, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The objective: mean cross-entropy + l2/2 |weight * scale|^2 (scale = the features' std makes the penalty
    the standardised problem's, in raw feature space)."""
    penalty = weight.pow(2).sum() if scale is None else (weight * scale).pow(2).sum()
    return F.cross_entropy(features @ weight.T + bias, labels) + 0.5 * l2 * penalty


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature stays unscaled


def _solve(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, classes: int, l2: float, init: tuple | None,
           max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each problem f (standardised features z[f] (N, D), the rows where mask[f] is 1):
    argmin mean CE(z W_f^T + b_f, y) + l2/2 |W_f|^2, all solved together by L-BFGS from `init` (or zeros).
    The problems share no parameter, so their summed objective has each one's optimum as its own."""
    problems, _, dim = z.shape
    w = init[0].clone() if init else z.new_zeros(problems, classes, dim)
    b = init[1].clone() if init else z.new_zeros(problems, classes)
    w.requires_grad_(True)
    b.requires_grad_(True)
    weights = mask / mask.sum(1, keepdim=True)  # each problem's mean over its own rows
    target = y.expand(problems, -1)[..., None]
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-4,
                                  tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.baddbmm(b[:, None, :], z, w.transpose(1, 2))
        nll = -logits.log_softmax(2).gather(2, target).squeeze(2)
        loss = (nll * weights).sum() + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if groups is None:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, classes: int,
                    l2: Sequence[float] = tuple(_DEFAULTS.l2), folds: int = _DEFAULTS.folds,
                    groups: torch.Tensor | None = None, seed: int = 0,
                    max_iter: int = _DEFAULTS.max_iter) -> LinearFit:
    """Fit `features (N, D) -> labels (N,)` with the L2 strength from `l2` that cross-validates best.

    `groups`: rows that must share a fold (several augmented views of one image). With one strength, or fewer
    than 2 images of some class, there is no cross-validation: the grid's middle strength is used."""
    return _fit(features, labels, classes, l2, folds, groups, seed, max_iter)


def _fit(features, labels, classes, l2, folds, groups, seed, max_iter) -> LinearFit:
    x = features.float()
    y = labels.long().to(x.device)
    grid = sorted({float(v) for v in l2}, reverse=True)  # strong -> weak: each fit warm-starts the next
    if not grid or min(grid) <= 0:
        raise ValueError(f"head_fit.l2: expected positive strengths, got {list(l2)}.")
    y_np = y.cpu().numpy()
    units = y_np if groups is None else _group_labels(y_np, groups.cpu().numpy())
    per_class = np.bincount(units, minlength=classes)
    k = int(min(folds, per_class[per_class > 0].min())) if len(grid) > 1 else 0
    k = k if k >= 2 else 0  # no cross-validation
    scores: dict[float, float] = {}
    cv_accuracy = None
    # Standardised once with the training rows' statistics (as a scaler fitted before scikit-learn's CV is), then
    # written in coordinates of the span of the rows: an L2-penalised solution lies in that span (the
    # representer theorem), so with fewer rows than features the problem shrinks to N dimensions, exactly.
    mean, std = _standardise(x)
    z = (x - mean) / std
    coords, basis = _row_span(z)
    if k >= 2:
        # The folds are independent problems in one batched objective: each L-BFGS step serves all of them.
        g_np = None if groups is None else groups.cpu().numpy()
        train_mask = torch.zeros(k, len(y), dtype=x.dtype, device=x.device)
        for f, (train_idx, _) in enumerate(_folds(y_np, g_np, k, seed)):
            train_mask[f, torch.as_tensor(train_idx, device=x.device)] = 1.0
        held_out = 1.0 - train_mask
        folds_z = coords.expand(k, -1, -1)
        solution = None
        correct, loss = {}, {}
        for v in grid:
            solution = _solve(folds_z, y, train_mask, classes, v, solution, max_iter)
            logits = torch.baddbmm(solution[1][:, None, :], folds_z, solution[0].transpose(1, 2))
            correct[v] = float(((logits.argmax(2) == y).float() * held_out).sum())
            nll = -logits.log_softmax(2).gather(2, y.expand(k, -1)[..., None]).squeeze(2)
            loss[v] = float((nll * held_out).sum())
        scores = {v: correct[v] / len(y) for v in grid}
        # best accuracy; then lowest log-loss; then the strongest penalty (grid order): max() keeps the first
        chosen = max(grid, key=lambda v: (round(scores[v], 9), -round(loss[v], 6)))
        cv_accuracy = scores[chosen]
    else:
        chosen = grid[len(grid) // 2]
    solution = None
    everything = torch.ones(1, len(y), dtype=x.dtype, device=x.device)
    for v in grid:  # the same warm-started path, on all rows, down to the chosen strength
        solution = _solve(coords[None], y, everything, classes, v, solution, max_iter)
        if v == chosen:
            break
    w, b = solution[0][0] @ basis.T, solution[1][0]
    train_accuracy = float(((z @ w.T + b).argmax(1) == y).float().mean())
    weight = w / std  # fold the standardisation into the layer: W z + b = (W / std) x + (b - (W / std) mean)
    bias = b - weight @ mean
    return LinearFit(weight=weight, bias=bias, scale=std, l2=chosen, cv_accuracy=cv_accuracy, cv_scores=scores,
                     folds=k, train_accuracy=train_accuracy)


def _row_span(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinates (N, r), orthonormal basis (D, r)) of the rows of z, with z = coordinates @ basis.T; the
    identity basis when there are at least as many rows as features."""
    rows, dim = z.shape
    if rows >= dim:
        return z, torch.eye(dim, dtype=z.dtype, device=z.device)
    values, vectors = torch.linalg.eigh((z @ z.T).double())  # the Gram matrix: N x N
    keep = values > values.max() * 1e-10
    scale = values[keep].sqrt()
    coords = (vectors[:, keep] * scale).to(z.dtype)
    basis = ((z.double().T @ vectors[:, keep]) / scale).to(z.dtype)
    return coords, basis


def _group_labels(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One label per group (the class of its first row), to count how many groups each class has."""
    _, first = np.unique(groups, return_index=True)
    return y[first]
