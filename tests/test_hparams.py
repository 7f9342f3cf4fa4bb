"""TensorBoard's HParams view compares runs: the choices that define a run, and several real metrics."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import compose_config, shrink
from transferlab.callbacks.hparams import HPARAM_METRICS
from transferlab.tasks.train import train


def test_hparams_session_lists_the_defining_choices_and_declares_real_metrics(tmp_path, tiny_folder):
    train(compose_config(tmp_path, shrink(tiny_folder, strategy="frozen", **{"trainer.max_epochs": 2,
                                                                          "strategy.head_fit.enabled": "false"})))
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = start.session_start_info.hparams

    assert hparams["strategy.name"].string_value == "frozen"
    assert hparams["optimizer.lr"].number_value == 0.001
    assert hparams["trainer.max_epochs"].number_value == 2  # a whole number stays a number
    assert hparams["seed"].number_value == 42
    assert len(hparams) < 25 and not any(k.startswith(("callbacks", "paths", "hydra")) for k in hparams)
    assert [m.name.tag for m in experiment.experiment.metric_infos] == list(HPARAM_METRICS)

    scalars = set(acc.Tags()["scalars"])
    assert set(HPARAM_METRICS) <= scalars  # every declared metric is a scalar the run really logged
    best = acc.Scalars("val/acc_best")
    val = {e.step: e.value for e in acc.Scalars("val/acc")}
    assert len(best) == 2 and all(e.value == max(v for s, v in val.items() if s <= e.step) for e in best)
