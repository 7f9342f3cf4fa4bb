"""A linear head fitted to convergence on fixed features, its L2 strength chosen on the training features only.

On a frozen backbone's cached features the head is a small convex problem (multinomial logistic regression):
25 epochs of SGD at batch 4 neither converge nor regularise it. Here it is solved full batch with L-BFGS, on
standardised features (as scikit-learn's probe is), with an L2 penalty whose strength is chosen by stratified
K-fold cross-validation on the training features: held-out accuracy, ties broken by held-out log-loss, then by
the stronger penalty. Validation images are never seen. With class weights (`dataset.balance`), every row's
loss and held-out score weighs its class's weight: the fit is scikit-learn's `class_weight="balanced"` one, its
strength chosen by balanced accuracy.

The pretrained network's own classifier can be a better basis than its features: when the folder's classes are
(near) classes of the pretraining label space (ants and bees are ImageNet classes), a head on the few relevant
outputs of that classifier has far fewer weights to learn and carries the pretraining's decision boundary.
With `source_classes=[m, ...]`, each m is a candidate basis: for every class, the m pretrained classes with the
highest mean probability on its training images (the "frequency label mapping" of Chen et al., CVPR 2023,
generalised to top m), their logits standardised like features. The candidates and the plain features compete
in the same cross-validation, the mapping re-chosen inside every fold from that fold's training rows only; the
plain features win unless the training rows say otherwise (flowers12, Lite0: CV 0.975 against at most 0.897). The result
is always one `nn.Linear` on the features (a linear map of a linear map), so checkpoints and exports are unchanged.

Why not scikit-learn's `LogisticRegressionCV` (the benchmark's baseline): the same model, but its fits start
over for every fold and strength, which costs 2-20 s on 1280 features; here each fold walks the strengths from
strong to weak, warm-starting each fit from the previous solution, so the whole search costs about one cold
fit, runs on the model's device, and its result is the head's own `nn.Linear` parameters. The final fit on all
rows starts from the folds' mean solution at the chosen strength (as `LogisticRegressionCV`'s refit does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
    scale: torch.Tensor  # (inputs,): the training inputs' std; the penalty is l2/2 |coefficients * scale|^2
    l2: float
    cv_accuracy: float | None  # mean held-out accuracy at `l2` (None: too few images per class to cross-validate)
    cv_scores: dict[float, float] = field(default_factory=dict)  # every strength tried -> mean held-out accuracy
    folds: int = 0
    train_accuracy: float = float("nan")
    # The inputs the head was fitted on: None = the features themselves; else (k, features) rows of the pretrained
    # classifier (the head is then `coefficients @ basis`), `source_classes` their indices in its label space.
    basis: torch.Tensor | None = None
    source_classes: list[int] | None = None
    top: int = 0  # the chosen m (pretrained classes per class); 0: the features
    candidates: dict[str, float] = field(default_factory=dict)  # every basis tried -> its best mean CV accuracy
    balanced: bool = False  # fitted (and cross-validated) with class weights: every class counts alike
    # (N, classes): each row's logits from the fold that held it out, at the chosen strength and inputs (None
    # without CV): out-of-sample predictions of the training rows, which the quality check's label audit reads
    oof_logits: torch.Tensor | None = field(default=None, repr=False)
    cv_skipped: str | None = None  # why there was no cross-validation (folds 0), e.g. "class 'x' has 1 training image"

    @property
    def inputs(self) -> str:
        return "features" if self.source_classes is None else f"source top {self.top}"

    def tempered(self, features: torch.Tensor, max_std: float) -> tuple[LinearFit, float]:
        """This head and its temperature: when its logits on `features` spread more than `max_std` (standard
        deviation), divided by the factor that brings them to it, else as it is (temperature 1). Dividing weights
        and bias alike leaves every prediction as it was."""
        with torch.no_grad():
            std = float((features @ self.weight.to(features).T + self.bias.to(features)).std())
        temperature = max(1.0, std / max_std)
        return replace(self, weight=self.weight / temperature, bias=self.bias / temperature), temperature

    def report(self) -> dict:
        return {"l2": self.l2, "cv_accuracy": self.cv_accuracy, "folds": self.folds,
                "train_accuracy": self.train_accuracy, "cv_scores": {str(k): v for k, v in self.cv_scores.items()},
                "inputs": self.inputs, "source_classes": self.source_classes, "candidates": self.candidates,
                "balanced": self.balanced, "cv_skipped": self.cv_skipped}

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
                   l2: float, scale: torch.Tensor | None = None, basis: torch.Tensor | None = None,
                   class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The objective: mean cross-entropy + l2/2 |weight * scale|^2 (scale = the inputs' std makes the penalty
    the standardised problem's, in raw feature space). With a `basis` (a fit on pretrained logits), the head is
    `coefficients @ basis`: the weight is projected onto the basis's rows and its coefficients are penalised.
    With `class_weight`, the cross-entropy is the class-weighted mean (`F.cross_entropy(weight=)`)."""
    if basis is not None:
        coefficients = weight @ torch.linalg.pinv(basis)
        weight = coefficients @ basis
    else:
        coefficients = weight
    penalty = coefficients.pow(2).sum() if scale is None else (coefficients * scale).pow(2).sum()
    weights = None if class_weight is None else class_weight.to(features)
    return F.cross_entropy(features @ weight.T + bias, labels, weight=weights) + 0.5 * l2 * penalty


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, standardised x) with the statistics of all training rows (as a scaler fitted before
    scikit-learn's CV is: no labels involved)."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature stays unscaled
    return mean, std, (x - mean) / std


def _solve(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, classes: int, l2: float, init: tuple | None,
           max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each problem f (standardised features z[f] (N, D), each row weighted by mask[f]: 0 = not in it):
    argmin weighted mean CE(z W_f^T + b_f, y) + l2/2 |W_f|^2, all solved together by L-BFGS from `init` (or
    zeros). The problems share no parameter, so their summed objective has each one's optimum as its own."""
    problems, _, dim = z.shape
    w = init[0].clone() if init else z.new_zeros(problems, classes, dim)
    b = init[1].clone() if init else z.new_zeros(problems, classes)
    weights = (mask / mask.sum(1, keepdim=True))[..., None]  # each problem's (weighted) mean over its own rows
    target = y.expand(problems, -1)[..., None]
    onehot = F.one_hot(y, classes).to(z)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-4,
                                  tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        # The softmax cross-entropy gradient written out, not autograd: these problems are small enough that
        # autograd's bookkeeping and log_softmax over a 2-20-wide last dimension dominate each evaluation
        # (measured on flowers12's fit: 1.5x faster with 1280 features, 3.4x on the pretrained-logit candidates).
        logits = torch.baddbmm(b[:, None, :], z, w.transpose(1, 2))  # (problems, N, classes)
        log_norm = logits.logsumexp(2, keepdim=True)
        nll = log_norm - logits.gather(2, target)
        loss = (nll * weights).sum() + 0.5 * l2 * w.pow(2).sum()
        residual = (logits - log_norm).exp_().sub_(onehot).mul_(weights)  # d loss / d logits
        w.grad = torch.baddbmm(w, residual.transpose(1, 2), z, beta=l2)
        b.grad = residual.sum(1)
        return loss

    optimizer.step(closure)
    w.grad = b.grad = None  # the solutions are kept per strength (_cross_validate): not their last gradients
    return w, b


def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; rows of one group (views of one image) share a fold. StratifiedGroupKFold is only used
    when some group has several rows: it places groups one by one (0.3 s for 720 images, linear in them)."""
    if groups is None or len(np.unique(groups)) == len(groups):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


@dataclass
class SourceHead:
    """The pretrained network's own classifier (e.g. ImageNet's 1000 outputs) on the same pooled features."""

    weight: torch.Tensor  # (source classes, features)
    bias: torch.Tensor  # (source classes,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.to(features).T + self.bias.to(features)


def top_source_classes(probs: torch.Tensor, labels: torch.Tensor, classes: int, top: int) -> torch.Tensor:
    """For each class, the `top` pretrained classes with the highest mean probability on its rows; their union."""
    chosen = set()
    for c in range(classes):
        rows = probs[labels == c]
        if len(rows):
            chosen.update(rows.mean(0).topk(min(top, probs.shape[1])).indices.tolist())
    return torch.tensor(sorted(chosen), dtype=torch.long, device=probs.device)


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, classes: int,
                    l2: Sequence[float] = tuple(_DEFAULTS.l2), folds: int = _DEFAULTS.folds,
                    groups: torch.Tensor | None = None, seed: int = 0,
                    max_iter: int = _DEFAULTS.max_iter, source: SourceHead | None = None,
                    source_classes: Sequence[int] = (), class_weight: torch.Tensor | None = None,
                    class_names: Sequence[str] | None = None) -> LinearFit:
    """Fit `features (N, D) -> labels (N,)` with the L2 strength from `l2` (and, given the pretrained classifier
    `source`, the inputs: the features or the top-m pretrained logits, m from `source_classes`) that
    cross-validates best.

    `groups`: rows that must share a fold (several augmented views of one image). With one strength, or fewer
    than 2 images of some class, there is no cross-validation: the grid's middle strength is used, on the features,
    and `cv_skipped` says why (naming the class from `class_names`).
    `class_weight` (classes,): each row's loss weighs its class's weight (`dataset.balance`), in the fit and in the
    held-out scores that choose among the strengths (with "balanced" weights, balanced accuracy)."""
    x = features.float()
    y = labels.long().to(x.device)
    grid = sorted({float(v) for v in l2}, reverse=True)  # strong -> weak: each fit warm-starts the next
    if not grid or min(grid) <= 0:
        raise ValueError(f"head_fit.l2: expected positive strengths, got {list(l2)}.")
    if any(int(m) < 1 for m in source_classes):
        raise ValueError(f"head_fit.source_classes: expected counts >= 1, got {list(source_classes)}.")
    y_np = y.cpu().numpy()
    row_weight = torch.ones_like(y, dtype=x.dtype) if class_weight is None else class_weight.to(x)[y]
    units = y_np if groups is None else _group_labels(y_np, groups.cpu().numpy())
    per_class = np.bincount(units, minlength=classes)
    k = int(min(folds, per_class[per_class > 0].min())) if len(grid) > 1 else 0
    k = k if k >= 2 else 0  # no cross-validation
    cv_skipped = None if k else _why_no_cv(grid, folds, per_class, class_names, "row" if groups is None else "image")
    # Standardised once with the training rows' statistics, then written in coordinates of the span of the rows:
    # an L2-penalised solution lies in that span (the representer theorem), so with fewer rows than features the
    # problem shrinks to N dimensions, exactly.
    plain = _standardise(x)  # (mean, std, standardised features)
    span = _row_span(plain[2])  # (coordinates, basis)
    source_logits = source.logits(x) if source is not None and source_classes else None
    tops = [0] + ([int(m) for m in dict.fromkeys(source_classes)] if source_logits is not None and k else [])
    scores: dict[float, float] = {}
    candidates: dict[str, float] = {}
    cv_accuracy, chosen, chosen_top, start, oof_logits = None, grid[len(grid) // 2], 0, None, None
    if k >= 2:
        g_np = None if groups is None else groups.cpu().numpy()
        train_mask = torch.zeros(k, len(y), dtype=x.dtype, device=x.device)
        for f, (train_idx, _) in enumerate(_folds(y_np, g_np, k, seed)):
            train_mask[f, torch.as_tensor(train_idx, device=x.device)] = 1.0
        train_mask *= row_weight  # a row's weight in its fold's fit (and, held out, in its score)
        results = _cross_validate(span[0].expand(k, -1, -1), y, train_mask, row_weight, grid, classes, max_iter)
        fold_solutions = results[0][2]
        if len(tops) > 1:  # every fold of every mapping in one batched problem: they are small (m x classes wide)
            # the mapping is part of the fit: chosen inside each fold from its training rows only
            mapped = _padded([_source_inputs(source_logits, top, y, classes, mask > 0)[3]
                              for top in tops[1:] for mask in train_mask])
            results += _cross_validate(mapped, y, train_mask.repeat(len(tops) - 1, 1), row_weight, grid, classes,
                                       max_iter, k)
        best_key = None
        for top, (accuracy, loss, _, held_out_logits) in zip(tops, results, strict=True):
            # best accuracy; then lowest log-loss; then the stronger penalty (the larger l2)
            key, v = max(((round(accuracy[v], 9), -round(loss[v], 6)), v) for v in accuracy)
            candidates["features" if top == 0 else f"source top {top}"] = accuracy[v]
            if best_key is None or key > best_key:  # ties keep the earlier candidate: the features first
                best_key, chosen, chosen_top, scores, cv_accuracy = key, v, top, accuracy, accuracy[v]
                oof_logits = held_out_logits[v]
        if not chosen_top:  # the folds' mean solution at that strength: the refit starts next to its optimum
            start = tuple(t.mean(0, keepdim=True) for t in fold_solutions[chosen])
    if chosen_top:
        indices, mean, std, z = _source_inputs(source_logits, chosen_top, y, classes)
        coords, basis = _row_span(z)
    else:
        indices, (mean, std, z), (coords, basis) = None, plain, span
    everything = row_weight[None]
    # on all rows; from the folds' mean (as LogisticRegressionCV's refit), else down the warm-started path
    path = [chosen] if start is not None else grid[:grid.index(chosen) + 1]
    solution = start
    for v in path:
        solution = _solve(coords[None], y, everything, classes, v, solution, max_iter)
    w, b = solution[0][0] @ basis.T, solution[1][0]
    train_accuracy = float(((z @ w.T + b).argmax(1) == y).float().mean())
    coefficients = w / std  # fold the standardisation into the layer: W z + b = (W / std) u + (b - (W / std) mean)
    bias = b - coefficients @ mean
    rows = None
    if indices is None:
        weight = coefficients
    else:  # u = x S^T + s (the chosen rows of the pretrained classifier): one linear map of the features
        rows = source.weight.to(x)[indices]
        weight = coefficients @ rows
        bias = bias + coefficients @ source.bias.to(x)[indices]
    return LinearFit(weight=weight, bias=bias, scale=std, l2=chosen, cv_accuracy=cv_accuracy, cv_scores=scores,
                     folds=k, train_accuracy=train_accuracy, basis=rows,
                     source_classes=None if indices is None else indices.tolist(), top=chosen_top,
                     candidates=candidates, balanced=class_weight is not None, oof_logits=oof_logits,
                     cv_skipped=cv_skipped)


def _why_no_cv(grid: Sequence[float], folds: int, per_class: np.ndarray, class_names: Sequence[str] | None,
               unit: str) -> str:
    """Why the strength was not cross-validated, for the run's record: one strength given, one fold asked for,
    or a class with fewer training images than the 2 that two folds need (its name and count)."""
    if len(grid) == 1:
        return f"one l2 strength given ({grid[0]:g})"
    if folds < 2:
        return f"head_fit.folds={folds}"
    smallest = int(np.flatnonzero(per_class == per_class[per_class > 0].min())[0])
    name = class_names[smallest] if class_names else smallest
    n = int(per_class[smallest])
    return f"class {name!r} has {n} training {unit}{'' if n == 1 else 's'}, fewer than the 2 that 2 folds need"


def _source_inputs(source_logits: torch.Tensor, top: int, y: torch.Tensor, classes: int,
                   rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(indices, mean, std, standardised logits) of the top-`top` mapping chosen on `rows` (a mask; None: all)."""
    probs, labels = (source_logits, y) if rows is None else (source_logits[rows], y[rows])
    indices = top_source_classes(probs.softmax(1), labels, classes, top)
    return indices, *_standardise(source_logits[:, indices])


def _padded(per_fold: list[torch.Tensor]) -> torch.Tensor:
    """Stack (N, d_f) inputs into (folds, N, max d); the zero columns get zero weights (L2), changing nothing."""
    width = max(z.shape[1] for z in per_fold)
    return torch.stack([F.pad(z, (0, width - z.shape[1])) for z in per_fold])


def _cross_validate(folds_z: torch.Tensor, y: torch.Tensor, train_mask: torch.Tensor, row_weight: torch.Tensor,
                    grid: list[float], classes: int, max_iter: int, block: int | None = None,
                    patience: int = 3) -> list[tuple[dict, dict, dict, dict]]:
    """For each block of `block` problems (default: all of them; one block = one candidate's folds): the mean
    held-out accuracy, the summed held-out log-loss (each row weighted by `row_weight`), the block's
    solutions (weights, biases) and every row's logits from the fold holding it out, per strength tried.
    `train_mask` holds each fold's training rows (> 0, their
    weights in its fit). The problems are independent in one batched objective: each L-BFGS step serves all.

    The path goes from strong to weak penalties and stops once no block's held-out log-loss has improved for
    `patience` strengths (1.5 decades on the default grid): past its minimum the held-out loss only grows, the
    model overfits, and the weakest penalties are the slowest to solve (glmnet stops its path early likewise)."""
    problems = len(train_mask)
    block = block or problems
    held_out = ((train_mask == 0) * row_weight).reshape(-1, block, len(y))  # every row is held out once per block
    held_out_rows = (train_mask == 0).to(folds_z.dtype).reshape(-1, block, len(y), 1)
    solution = None
    results = [({}, {}, {}, {}) for _ in range(problems // block)]
    best: list[tuple] = [(float("inf"), -1)] * len(results)  # (lowest held-out loss, index of its strength)
    for i, v in enumerate(grid):
        solution = _solve(folds_z, y, train_mask, classes, v, solution, max_iter)
        logits = torch.baddbmm(solution[1][:, None, :], folds_z, solution[0].transpose(1, 2))
        correct = (logits.argmax(2) == y).float().reshape(-1, block, len(y))
        nll = logits.logsumexp(2) - logits.gather(2, y.expand(problems, -1)[..., None]).squeeze(2)
        nll = nll.reshape(-1, block, len(y))
        oof = (logits.reshape(-1, block, len(y), logits.shape[2]) * held_out_rows).sum(1)  # (blocks, N, classes)
        for b, (accuracy, loss, solutions, held_out_logits) in enumerate(results):
            held_out_logits[v] = oof[b]
            accuracy[v] = float((correct[b] * held_out[b]).sum() / row_weight.sum())
            loss[v] = float((nll[b] * held_out[b]).sum())
            solutions[v] = tuple(t[b * block:(b + 1) * block] for t in solution)
            if loss[v] < best[b][0]:
                best[b] = (loss[v], i)
        if all(i - at >= patience for _, at in best):
            break
    return results


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
