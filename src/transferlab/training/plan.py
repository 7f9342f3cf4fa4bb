"""Which phases a strategy trains in, decided once before anything is built.

- `fit_head`: the head trained on cached backbone features: a linear head solved (L-BFGS, L2 by stratified
  cross-validation), any other head trained by minibatch epochs (`transferlab.training.fit_head`). Seconds.
- `fit`: Lightning's `trainer.fit` on the network, images or (a backbone that never trains) cached features.

frozen = `fit_head`; lpft = `fit_head` then `fit` (fastai's `fine_tune` is the same shape: a frozen phase,
then unfreeze, but here the first phase runs on the feature cache); finetune, partial, gradual,
discriminative and scratch = `fit`. `strategy.head_fit.enabled=false` drops `fit_head`: a frozen strategy then
trains its head by the tutorial's SGD epochs on the cached features, in `fit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transferlab.errors import ConfigValueError

log = logging.getLogger(__name__)

FIT_HEAD = "fit_head"
FIT = "fit"


@dataclass(frozen=True)
class Plan:
    phases: tuple[str, ...]
    cache_features: bool  # the backbone's features are extracted once, into the feature cache
    strategy: str

    @property
    def fits_head(self) -> bool:
        return FIT_HEAD in self.phases

    @property
    def fits_network(self) -> bool:
        return FIT in self.phases

    def describe(self) -> str:
        names = {FIT_HEAD: "fit_head (the head on cached features)",
                 FIT: "fit (the network" + (", on cached features)" if self.cache_features else ")")}
        return f"strategy={self.strategy}: " + " -> ".join(names[p] for p in self.phases)


def make_plan(strategy, stages, cache_features: bool | str = "auto") -> Plan:
    """The plan of `strategy` (a `transferlab.models.strategy.Strategy`) on a backbone with these `stages`;
    refuses the combinations that cannot run, in one line naming the key."""
    frozen = strategy.backbone_always_frozen(stages)
    head_fit = strategy.head_fit
    phases = (FIT_HEAD,) if head_fit.enabled and frozen else (FIT_HEAD, FIT) if head_fit.enabled else (FIT,)
    if cache_features not in (True, False, "auto"):
        raise ConfigValueError(f"dataset.cache_features={cache_features!r}; use auto, true or false.")
    if cache_features is True and not frozen:
        log.warning("dataset.cache_features ignored: strategy %r trains the backbone.", strategy.name)
    use_cache = frozen and cache_features is not False
    if FIT_HEAD in phases and cache_features is False:
        raise ConfigValueError(
            f"dataset.cache_features=false: strategy={strategy.name} fits its head on cached features. Use "
            "dataset.cache_features=auto, or strategy.head_fit.enabled=false to train the head on images by SGD.")
    if phases == (FIT_HEAD,) and head_fit.max_logit_std is not None:
        raise ConfigValueError(
            f"strategy.head_fit.max_logit_std={head_fit.max_logit_std}: it tempers a head that is fine-tuned "
            f"afterwards (strategy=lpft); strategy={strategy.name} never trains its backbone, so it would only "
            "flatten the head's probabilities. Drop strategy.head_fit.max_logit_std.")
    return Plan(phases=phases, cache_features=use_cache, strategy=strategy.name)


def check_processes(plan: Plan, world_size: int) -> None:
    """A plan of `fit_head` alone runs in one process: it takes seconds, and DDP would only repeat it."""
    if plan.phases == (FIT_HEAD,) and world_size > 1:
        raise ConfigValueError(
            f"strategy={plan.strategy} fits its head in seconds in one process; it does not run under {world_size} "
            "processes. Drop trainer.strategy=ddp (or set trainer.devices=1), or set strategy.head_fit.enabled=false "
            "to train the head by SGD epochs.")
