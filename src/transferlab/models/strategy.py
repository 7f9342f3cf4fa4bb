"""Transfer strategies as data: which parts of the network train, and at which learning-rate multiplier.

A strategy maps module-name prefixes of the classifier ("backbone", "head", "backbone.layer4", ...) to
learning-rate multipliers (`train`), and may add the last N backbone stages discovered from the model
(`trainable_stages`) or every stage with a layer-wise decaying multiplier (`lr_decay`). Parameters under no
rule are frozen: `requires_grad=False`, out of the optimizer, and (with `freeze_bn`) their BatchNorm layers
stay in eval mode so running statistics do not drift.

`unfreeze_at: k` delays every backbone rule until epoch k (gradual unfreezing). Those parameters are in the
optimizer from the start, with their own lr, but get no gradient until epoch k, so schedulers, and resuming
from a checkpoint taken on either side of k, behave as for any other parameter group (Lightning's
BackboneFinetuning adds the group at k, which a resumed run does not restore).

A new strategy is a new YAML file, not a new code path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferlab.config.schema import HeadFitConfig, StrategyConfig


@dataclass
class Strategy(StrategyConfig):
    """A strategy's settings are the fields of the config schema's `StrategyConfig` (their one definition,
    with comments); this class adds what they mean. A bare `Strategy()` is finetune: everything trains."""

    name: str = "finetune"
    train: dict[str, float] = field(default_factory=lambda: {"backbone": 1.0, "head": 1.0})

    @property
    def fits_head(self) -> bool:
        """The head is fitted to convergence on cached features first (`head_fit.enabled`: frozen, lpft)."""
        return bool(self.head_fit and self.head_fit.get("enabled"))

    def backbone_always_frozen(self, stages: Sequence[Sequence[str]] = ()) -> bool:
        """True when no rule ever trains a backbone parameter (so its features are constants)."""
        return not any(p == "backbone" or p.startswith("backbone.") for p in self.rules(stages))

    def rules(self, stages: Sequence[Sequence[str]] = ()) -> dict[str, float]:
        """Prefix -> lr multiplier, with stage-based settings expanded into module names."""
        if self.trainable_stages < 0 or self.trainable_stages > len(stages):
            raise ValueError(
                f"strategy.trainable_stages={self.trainable_stages}: this backbone has {len(stages)} stages."
            )
        rules = dict(self.train)
        top = list(reversed(stages))  # output side first
        for stage in top[: self.trainable_stages]:
            for module_name in stage:
                rules.setdefault(f"backbone.{module_name}", self.stage_lr_mult)
        if self.lr_decay is not None:
            if not 0 < self.lr_decay <= 1:
                raise ValueError(f"strategy.lr_decay={self.lr_decay}: expected 0 < lr_decay <= 1.")
            for depth, stage in enumerate(top, start=1):
                for module_name in stage:
                    rules.setdefault(f"backbone.{module_name}", self.lr_decay**depth)
        return rules

    def active_rules(self, rules: Mapping[str, float], epoch: int) -> dict[str, float]:
        """The rules that train at `epoch`: backbone rules wait for `unfreeze_at`."""
        if self.unfreeze_at is None or epoch >= self.unfreeze_at:
            return dict(rules)
        return {p: m for p, m in rules.items() if not (p == "backbone" or p.startswith("backbone."))}

    def apply(self, model: nn.Module, stages: Sequence[Sequence[str]] = (), epoch: int = 0,
              distributed: bool = False) -> dict[str, float]:
        """Set requires_grad for `epoch`; return all prefix -> lr multiplier rules (for the optimizer).

        `distributed`: every parameter a rule will ever train requires grad from the start, because DDP only
        all-reduces the gradients of parameters that required grad when it wrapped the model (the trap of
        Lightning's BackboneFinetuning, pytorch-lightning #20340); until its epoch its gradient is dropped
        (`waiting`), so it does not change, exactly as a frozen parameter."""
        rules = self.rules(stages)
        names = {n for n, _ in model.named_modules()}
        unknown = [p for p in rules if p not in names]
        if unknown:
            raise ValueError(
                f"strategy {self.name!r} names modules {unknown} that do not exist; "
                f"top-level modules are {[n for n, _ in model.named_children()]}."
            )
        active = self.active_rules(rules, epoch)
        for name, param in model.named_parameters():
            trains = lr_mult_for(rules if distributed else active, name) is not None
            param.requires_grad_(trains)
        return rules

    def waiting(self, model: nn.Module, stages: Sequence[Sequence[str]], epoch: int) -> list[nn.Parameter]:
        """Parameters a rule trains later but not at `epoch` (gradual unfreezing)."""
        rules = self.rules(stages)
        active = self.active_rules(rules, epoch)
        return [p for n, p in model.named_parameters()
                if lr_mult_for(rules, n) is not None and lr_mult_for(active, n) is None]

    def eval_modules(self, model: nn.Module, waiting: Iterable[nn.Parameter] = ()) -> Iterable[nn.Module]:
        """Modules that must stay in eval mode while training: a top-level part none of whose parameters trains
        (so a frozen backbone is a deterministic feature extractor, dropout included) and, with `freeze_bn`,
        every BatchNorm whose parameters do not train (so running statistics do not drift); with `keep_bn_stats`,
        every BatchNorm. A parameter trains when it requires grad and is not `waiting` for its epoch (see `apply`)."""
        held = {id(p) for p in waiting}

        def frozen(module: nn.Module) -> bool:
            return not any(p.requires_grad and id(p) not in held for p in module.parameters())

        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        if self.keep_bn_stats:
            return [m for m in model.children() if frozen(m)] + norms
        if not self.freeze_bn:
            return []
        return [m for m in model.children() if frozen(m)] + [m for m in norms if frozen(m)]


def lr_mult_for(rules: Mapping[str, float], param_name: str) -> float | None:
    """Multiplier of the longest matching prefix, or None when the parameter is frozen."""
    best, mult = -1, None
    for prefix, m in rules.items():
        if (param_name == prefix or param_name.startswith(prefix + ".")) and len(prefix) > best:
            best, mult = len(prefix), m
    return None if mult is None or mult <= 0 else float(mult)


def param_groups(model: nn.Module, rules: Mapping[str, float], base_lr: float) -> list[dict]:
    """Optimizer parameter groups, one per lr multiplier, holding every parameter a rule trains (now or
    after `unfreeze_at`); parameters under no rule never enter the optimizer."""
    groups: dict[float, list] = {}
    for name, param in model.named_parameters():
        mult = lr_mult_for(rules, name)
        if mult is not None:
            groups.setdefault(mult, []).append(param)
    if not groups:
        raise ValueError("The strategy leaves no trainable parameters.")
    return [{"params": ps, "lr": base_lr * m, "lr_mult": m} for m, ps in sorted(groups.items())]


def strategy_from_config(cfg: Mapping) -> Strategy:
    """A `Strategy` from plain data (a composed config or a checkpoint); unknown keys are an error."""
    known = {f.name for f in fields(Strategy)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"Unknown strategy key(s) {unknown}; known keys: {sorted(known)}.")
    values = {k: (dict(v) if k == "train" else v) for k, v in cfg.items()}
    values["head_fit"] = head_fit_settings(values.get("head_fit") or {})
    return Strategy(**values)


def head_fit_settings(raw: Mapping) -> dict:
    """`strategy.head_fit` as checked plain data: its keys are `HeadFitConfig`'s, its values in range."""
    known = {f.name for f in fields(HeadFitConfig)}
    if not isinstance(raw, Mapping):
        raise ValueError(f"strategy.head_fit: expected a mapping with keys {sorted(known)}, got {raw!r:.200}.")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"Unknown strategy.head_fit key(s) {unknown}; known keys: {sorted(known)}.")
    # a strategy saved before `seed` existed was fitted on the folds of seed 0
    settings = {**asdict(HeadFitConfig()), "seed": 0, **raw}
    l2 = settings["l2"]
    if (not isinstance(l2, list | tuple) or not l2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in l2)):
        raise ValueError(f"strategy.head_fit.l2={l2!r:.200}: expected a non-empty list of positive numbers.")
    for key, least in (("folds", 1), ("max_iter", 1), ("seed", 0)):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "a positive whole number" if least else "a whole number >= 0"
            raise ValueError(f"strategy.head_fit.{key}={value!r:.200}: expected {kind}.")
    if not isinstance(settings["enabled"], bool):
        raise ValueError(f"strategy.head_fit.enabled={settings['enabled']!r:.200}: expected true or false.")
    tops = settings["source_classes"]
    if (not isinstance(tops, list | tuple)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in tops)):
        raise ValueError(f"strategy.head_fit.source_classes={tops!r:.200}: expected a list of whole numbers >= 1 "
                         "(or [] for the features only).")
    std = settings["max_logit_std"]
    if std is not None and (not isinstance(std, int | float) or isinstance(std, bool) or not 0 < std < float("inf")):
        raise ValueError(f"strategy.head_fit.max_logit_std={std!r:.200}: expected a positive number, or null to "
                         "keep the head as fitted.")
    return {"enabled": settings["enabled"], "l2": [float(v) for v in l2], "folds": settings["folds"],
            "max_iter": settings["max_iter"], "source_classes": [int(v) for v in tops], "seed": settings["seed"],
            "max_logit_std": None if std is None else float(std)}
