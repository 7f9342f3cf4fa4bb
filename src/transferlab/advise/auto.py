"""`strategy=auto`: a training run measures its data and takes the recommended option; the advice goes into the
run record (`transferlab.record`, summary.json's `advice`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from omegaconf import OmegaConf

from transferlab.advise.measures import measure
from transferlab.advise.options import strategy_option
from transferlab.advise.recommend import recommend
from transferlab.advise.thresholds import Thresholds
from transferlab.config.schema import StrategyConfig

log = logging.getLogger(__name__)


def auto_strategy(settings) -> tuple[StrategyConfig, dict[str, Any]]:
    """`strategy=auto` (`settings`: a run's `RunSettings`): measure the data and return the recommended option
    with its settings (`conf/strategy/<name>.yaml` read as data, checked by the schema) and the advice.

    The features go to the feature cache, so when the advice is `frozen` the run loads them instead of
    extracting them again. Thresholds: `+advise.<name>=<value>` (see `Thresholds`)."""
    thresholds = Thresholds.from_mapping(settings.advise)
    measures, _ = measure(settings, thresholds)
    advice = recommend(measures, thresholds)
    option = OmegaConf.to_object(strategy_option(advice.recommendation.strategy, advice.recommendation.settings))
    # the chosen head fit draws its folds from the run's seed, as a composed strategy's does (schema.FOLLOW_THE_RUN)
    chosen = replace(option, head_fit=replace(option.head_fit, seed=settings.seed))
    log.info("strategy=auto: %s -> %s: %s", advice.case, " ".join(advice.recommendation.overrides()), advice.reason)
    return chosen, advice.to_dict()
