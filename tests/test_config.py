"""The composed configuration: every group option composes and extends its schema, typos and wrong types fail at
composition naming the key, debug/experiment options compose, every entry point shares the hydra block."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, get_origin, get_type_hints

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_config, run_script, shrink
from transferlab.config import register_resolvers
from transferlab.config.schema import SCHEMAS, StrategyConfig, schema_node
from transferlab.models.backbones import packaged_weights_path
from transferlab.models.strategy import strategy_from_config


def test_default_config_resolves_completely(tmp_path):
    register_resolvers()
    cfg = compose_config(tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.dataset.name == "digits"
    assert cfg.backbone.name == "tf_efficientnet_lite0"
    # The config names a registry key, never a file path; the registry finds the package's file.
    assert cfg.backbone.weights == "packaged:efficientnet_lite0"
    assert packaged_weights_path("efficientnet_lite0").endswith("efficientnet-lite0-57934424.pth")
    assert cfg.optimizer.lr == pytest.approx(0.004) and cfg.optimizer.momentum == 0.9  # 0.001 x 16 / 4
    assert cfg.strategy.name == "finetune"
    assert cfg.scheduler.step_size == 7 and cfg.scheduler.gamma == 0.1
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.max_epochs == 6  # conf/dataset_trainer/digits.yaml
    assert not OmegaConf.missing_keys(cfg)


@pytest.mark.parametrize(("overrides", "epochs"), [
    ([], 6),  # digits' own budget
    (["dataset=hymenoptera"], 25),  # no dataset_trainer file: the trainer's default, the tutorial's 25
    (["experiment=hymenoptera_frozen"], 25),  # an experiment's dataset decides, not the default one
    (["trainer.max_epochs=25"], 25),  # the command line wins over the dataset's budget
    (["debug=tiny"], 1),  # and so does a debug config
])
def test_a_dataset_can_set_its_own_epoch_budget(tmp_path, overrides, epochs):
    assert compose_config(tmp_path, overrides).trainer.max_epochs == epochs


@pytest.mark.parametrize(("overrides", "lr"), [
    (["dataset.batch_size=4"], 0.001),  # the tutorial's batch, the tutorial's rate
    (["dataset.batch_size=32"], 0.008),
    (["dataset.batch_size=32", "optimizer.lr=0.01"], 0.01),  # a number given is used as it is
    (["dataset.batch_size=32", "recipe=strong"], 0.001),  # AdamW's rate is not scaled
])
def test_sgd_lr_is_the_tutorials_scaled_linearly_with_the_batch_size(tmp_path, overrides, lr):
    cfg = compose_config(tmp_path, overrides)
    OmegaConf.resolve(cfg)
    assert cfg.optimizer.lr == pytest.approx(lr)


@pytest.mark.parametrize("group", ["dataset", "backbone", "strategy", "head", "optimizer", "scheduler"])
def test_every_option_of_every_group_composes(tmp_path, group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose_config(tmp_path, [f"{group}={option}"])
        assert cfg[group] is not None, option


def test_typo_in_key_fails_at_startup_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(tmp_path, ["dataset.batchsize=4"])
    assert "batchsize" in str(err.value.__cause__ or err.value)


def test_typo_in_group_option_fails_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException, match="resnet81"):
        compose_config(tmp_path, ["backbone=resnet81"])


def test_unknown_strategy_key_is_rejected():
    from transferlab.models.strategy import strategy_from_config

    with pytest.raises(ValueError, match="trainable_stage"):
        strategy_from_config({"name": "x", "train": {"head": 1.0}, "trainable_stage": 2})


def test_cosine_scheduler_follows_max_epochs(tmp_path):
    cfg = compose_config(tmp_path, ["scheduler=cosine", "trainer.max_epochs=9"])
    assert cfg.scheduler.T_max == 9


# --- the schema (transferlab.config.schema) ------------------------------------------------------------------
SCHEMA_GROUPS = sorted(SCHEMAS)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _required(group: str, option: str) -> list[str]:
    """What an option needs on the command line to compose without missing values."""
    return {("dataset", "folder"): ["dataset.root=/tmp/x"],
            ("backbone", "torchvision"): ["backbone.name=resnet18"],
            ("backbone", "timm"): ["backbone.name=resnet26d"]}.get((group, option), [])


def _leaves(schema: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type hint of every leaf of a schema dataclass (nested dataclasses walked)."""
    leaves: dict[str, Any] = {}
    for key, hint in get_type_hints(schema).items():
        if dataclasses.is_dataclass(hint):
            leaves.update(_leaves(hint, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = hint
    return leaves


def _new_value(hint: Any) -> tuple[str, Any]:
    """An override string of the hint's type, and the value it should compose to."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    base = hint if not args or get_origin(hint) in (list, dict) else args[0]
    if get_origin(base) is dict:
        return "{head:0.25}", {"head": 0.25}
    if get_origin(base) is list:
        return ("[3,4]", [3, 4]) if base.__args__ == (int,) else ("[0.25,0.75]", [0.25, 0.75])
    return {str: ("changed", "changed"), int: ("7", 7), float: ("0.125", 0.125),
            bool: ("false", False)}.get(base, ("3", 3))  # Any: checked by its consumer, not the schema


def test_schema_matches_what_the_code_consumes():
    from transferlab.data.datamodule import FolderDataModule
    from transferlab.models.backbones import create_backbone
    from transferlab.models.heads import head_params
    from transferlab.models.strategy import Strategy

    assert [f.name for f in dataclasses.fields(Strategy)] == [f.name for f in dataclasses.fields(StrategyConfig)]
    assert issubclass(Strategy, StrategyConfig)
    backbone_args = set(inspect.signature(create_backbone).parameters)
    assert {f.name for f in dataclasses.fields(SCHEMAS["backbone"])} <= backbone_args
    head_fields = {f.name for f in dataclasses.fields(SCHEMAS["head"])} - {"kind"}
    assert all(head_fields == set(head_params(kind)) for kind in ("linear", "mlp"))
    dataset_fields = {f.name for f in dataclasses.fields(SCHEMAS["dataset"])} - {"_target_"}
    assert dataset_fields == set(inspect.signature(FolderDataModule.__init__).parameters) - {"self"}


@pytest.mark.parametrize("override", ["strategy.trainable_stages=two", "strategy.lr_decay=fast",
                                      "strategy.train.head=high", "head.hidden=wide", "head.dropout=some",
                                      "dataset.input.image_size=big", "dataset.augment.hflip=maybe",
                                      "dataset.batch_size=4.5"])
def test_wrong_type_fails_at_composition_naming_the_key(tmp_path, override):
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(tmp_path, [override])
    assert key.split(".")[-1] in str(err.value)
    assert key in str(err.value.__cause__)  # OmegaConf's message: full_key: strategy.trainable_stages


def test_wrong_type_on_the_command_line_stops_train_py_before_any_data(tmp_path, monkeypatch, capsys):
    returncode, stderr, _ = run_script("train.py", "strategy.trainable_stages=two", cwd=tmp_path,
                                    monkeypatch=monkeypatch, capsys=capsys)
    assert returncode != 0
    assert "trainable_stages" in stderr and "two" in stderr
    assert not (tmp_path / "outputs").exists()  # no run dir, so no checkpoint
    assert not (tmp_path / "data").exists()  # the default dataset (digits) was not written
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_every_key_of_the_schema_overrides_for_every_option(tmp_path, group):
    leaves = _leaves(SCHEMAS[group])
    for option in _options(group):
        overrides, expected = [f"{group}={option}"], {}
        for key, hint in leaves.items():
            text, value = _new_value(hint)
            overrides.append(f"{group}.{key}={text}")
            expected[key] = value
        cfg = compose_config(tmp_path, overrides)
        for key, value in expected.items():
            got = OmegaConf.select(cfg[group], key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            if isinstance(value, dict):  # Hydra merges a dict override into the existing dict
                got = {k: got[k] for k in value}
            assert got == value, f"{group}={option} {group}.{key}: {got!r} != {value!r}"


def test_every_option_has_every_key_of_its_schema(tmp_path):
    for group in SCHEMA_GROUPS:
        keys = set(_leaves(SCHEMAS[group]))
        for option in _options(group):
            cfg = compose_config(tmp_path, [f"{group}={option}", *_required(group, option)])
            node = cfg[group]
            have = {k for k in keys if OmegaConf.select(node, k, default="<absent>") != "<absent>"}
            assert have == keys, (group, option)
            assert not OmegaConf.missing_keys(node), (group, option, OmegaConf.missing_keys(node))


@pytest.mark.parametrize("option", _options("strategy"))
def test_strategy_train_is_exactly_what_its_option_says(tmp_path, option):
    """OmegaConf merges dicts key by key: a default `train` rule would leak into every option leaving it out."""
    stated = OmegaConf.to_container(OmegaConf.load(CONF / "strategy" / f"{option}.yaml"))
    assert "train" in stated, f"strategy/{option}.yaml must state its own `train`"
    cfg = compose_config(tmp_path, [f"strategy={option}"])
    assert OmegaConf.to_container(cfg.strategy.train) == stated["train"]
    if option == "frozen":
        assert set(cfg.strategy.train) == {"head"}  # a frozen strategy that trained the backbone: a disaster
        strategy = strategy_from_config(OmegaConf.to_container(cfg.strategy, resolve=True))
        assert strategy.backbone_always_frozen([["blocks"]])


def test_schema_train_default_is_empty():
    assert StrategyConfig().train == {}


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_each_option_states_only_what_differs_from_what_it_extends(tmp_path, group):
    for option in _options(group):
        raw = OmegaConf.load(CONF / group / f"{option}.yaml")
        defaults = OmegaConf.to_container(raw.pop("defaults"))
        parent, *selections, last = defaults
        assert last == "_self_" and isinstance(parent, str), (group, option, defaults)
        # a recipe also selects other groups (optimizer, scheduler); nothing else may sit between
        assert all(isinstance(s, dict) and all(k.startswith("override /") for k in s) for s in selections), (
            group, option, defaults)
        if parent == f"/{schema_node(group)}":
            base = OmegaConf.structured(SCHEMAS[group])
        else:
            base = compose_config(tmp_path, [f"{group}={parent}"])[group]
        for key, value in _flat(OmegaConf.to_container(raw)).items():
            before = OmegaConf.select(base, key, default=None, throw_on_missing=False)
            before = OmegaConf.to_container(before) if OmegaConf.is_config(before) else before
            assert before != value, f"{group}/{option}.yaml repeats {key}: {value!r} from {parent}"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value and key != "train":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_dataset_options_extend_folder_and_named_backbones_their_source(tmp_path):
    folder = compose_config(tmp_path, ["dataset=folder", "dataset.root=/tmp/x"]).dataset
    for option in ("digits", "hymenoptera"):
        assert list(OmegaConf.load(CONF / "dataset" / f"{option}.yaml").defaults) == ["folder", "_self_"]
        stated = _flat(OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / f"{option}.yaml")))
        data = compose_config(tmp_path, [f"dataset={option}"]).dataset
        assert set(data) == set(folder) and set(data.input) == set(folder.input)
        assert set(data.augment) == set(folder.augment)
        inherited = _flat(OmegaConf.to_container(data))
        for key, value in _flat(OmegaConf.to_container(folder)).items():
            if key not in stated and not any(k.startswith(key + ".") for k in stated):
                assert inherited[key] == value, (option, key)  # inherited from folder
    assert compose_config(tmp_path, ["dataset=digits"]).dataset.augment.hflip is False

    sources = {"torchvision": ["resnet18", "resnet50", "vgg16", "efficientnet_b0", "mobilenet_v3_large",
                               "convnext_tiny"], "timm": ["efficientnet_lite0", "tiny"]}
    for source, options in sources.items():
        for option in options:
            raw = OmegaConf.load(CONF / "backbone" / f"{option}.yaml")
            assert list(raw.defaults) == [source, "_self_"], option
            assert set(raw) - {"defaults"} <= {"name", "weights"}, option
            assert compose_config(tmp_path, [f"backbone={option}"]).backbone.source == source


# --- debug, experiment, the hydra block of every entry point ----------------------------------------------------
def test_debug_tiny_is_what_the_tests_rely_on(tmp_path):
    for overrides in (["debug=tiny"], shrink(tmp_path / "images")):
        cfg = compose_config(tmp_path, overrides)
        assert OmegaConf.to_container(cfg.backbone) == {"source": "timm", "name": "test_efficientnet",
                                                        "weights": None, "weights_key_map": "name"}
        assert cfg.dataset.input.image_size == 32
        assert cfg.dataset.batch_size == 4 and cfg.dataset.num_workers == 0
        t = cfg.trainer
        assert (t.max_epochs, t.limit_train_batches, t.limit_val_batches) == (1, 3, 2)
        assert t.enable_progress_bar is False and t.enable_model_summary is False
    assert compose_config(tmp_path, ["debug=tiny"]).dataset.name == "digits"  # the default data, shrunk
    assert compose_config(tmp_path, shrink(tmp_path / "images")).dataset.root == str(tmp_path / "images")
    # A backbone on the command line wins over debug's; the rest stays tiny.
    real = compose_config(tmp_path, shrink(tmp_path / "images", backbone="efficientnet_lite0"))
    assert real.backbone.weights == "packaged:efficientnet_lite0" and real.dataset.input.image_size == 32


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_names_its_table_and_command(tmp_path, experiment):
    cfg = compose_config(tmp_path, [f"experiment={experiment}"])
    OmegaConf.resolve(cfg)
    assert not OmegaConf.missing_keys(cfg)
    header = (CONF / "experiment" / f"{experiment}.yaml").read_text().split("\ndefaults:")[0]
    assert "# @package _global_" in header and ("README" in header or "docs:" in header)
    assert "python train.py" in header and f"experiment={experiment}" in header


def test_strategy_sweep_experiment_sweeps_every_strategy(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", "experiment=hymenoptera_strategies"],
                      return_hydra_config=True)
    swept = cfg.hydra.sweeper.params.strategy.split(",")
    assert sorted(swept) == sorted(o for o in _options("strategy") if o != "auto")  # auto becomes one of them
    assert swept[0] == "frozen"  # job 0 as in the README's table
    assert cfg.dataset.name == "hymenoptera" and cfg.backbone.name == "tf_efficientnet_lite0"
    assert cfg.trainer.max_epochs == 3 and cfg.strategy.unfreeze_at == 1
    assert cfg.callbacks.dashboards.max_images == 0


@pytest.mark.parametrize("task, required", [("train", []), ("eval", ["ckpt_path=x.ckpt"]),
                                            ("predict", ["ckpt_path=x.ckpt", "inputs=x.png"]),
                                            ("export", ["ckpt_path=x.ckpt"])])
def test_every_entry_point_shares_the_hydra_block_with_its_task_name(tmp_path, task, required):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(task, overrides=[f"paths.root_dir={tmp_path}", *required], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.task_name == task
    assert str(cfg.hydra.run.dir).startswith(f"{tmp_path}/outputs/{task}/runs/")
    assert str(cfg.hydra.sweep.dir).startswith(f"{tmp_path}/outputs/{task}/multiruns/")
    assert cfg.hydra.job.chdir is False
    callbacks = set(cfg.hydra.callbacks or {})
    assert callbacks == ({"sweep_report"} if task == "train" else set())  # the sweep report is train's only
