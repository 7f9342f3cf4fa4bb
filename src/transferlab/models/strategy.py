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
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferlab.config.schema import StrategyConfig, known_keys


@dataclass
class Strategy(StrategyConfig):
    """A strategy's settings are the fields of the config schema's `StrategyConfig` (their one definition,
    with comments); this class adds what they mean. A bare `Strategy()` is finetune: everything trains."""

    name: str = "finetune"
    train: dict[str, float] = field(default_factory=lambda: {"backbone": 1.0, "head": 1.0})

    @property
    def fits_head(self) -> bool:
        """The head is fitted to convergence on cached features first (`head_fit.enabled`: frozen, lpft)."""
        return self.head_fit.enabled

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


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether weight decay applies: not to biases, norm layers' scales or any 1-d parameter (timm's rule in
    `param_groups_weight_decay`, fastai's `bn_wd=False`): decaying them only pulls activations' scale and
    offset to zero."""
    return param.ndim > 1 and not name.endswith(".bias")


def param_groups(model: nn.Module, rules: Mapping[str, float], base_lr: float,
                 weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups, one per lr multiplier (and, with `weight_decay`, split into the parameters
    that decay and those that do not, `decays`), holding every parameter a rule trains (now or after
    `unfreeze_at`); parameters under no rule never enter the optimizer.

    Written here rather than with timm's `param_groups_weight_decay`/`param_groups_layer_decay`: those take
    the parameters that require grad now (gradual unfreezing adds parameters that do not yet) and timm's
    layer grouping (`group_matcher`), which torchvision backbones lack; the stages here come from either."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        mult = lr_mult_for(rules, name)
        if mult is not None:
            groups.setdefault((mult, bool(weight_decay) and decays(name, param)), []).append(param)
    if not groups:
        raise ValueError("The strategy leaves no trainable parameters.")
    out = []
    for (mult, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group = {"params": params, "lr": base_lr * mult, "lr_mult": mult}
        if weight_decay:
            group["weight_decay"] = float(weight_decay) if decay else 0.0
        out.append(group)
    return out


def strategy_from_config(raw: Mapping | StrategyConfig) -> Strategy:
    """A `Strategy` from the config's `StrategyConfig` or from plain data (a checkpoint's): unknown keys and
    out-of-range values are refused by the schema's own checks (`StrategyConfig.__post_init__`)."""
    if isinstance(raw, StrategyConfig):
        return Strategy(**{f.name: getattr(raw, f.name) for f in fields(StrategyConfig)})
    return Strategy(**known_keys(raw, Strategy, "strategy"))


def strategy_data(strategy: StrategyConfig) -> dict[str, Any]:
    """A strategy as plain data (checkpoints load with weights_only=True; `strategy_from_config` reads it)."""
    return asdict(strategy)
