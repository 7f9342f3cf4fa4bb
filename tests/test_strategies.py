"""Each strategy's trainable parameters and learning rates, and gradual unfreezing across a resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from tests.conftest import compose_config, shrink
from transferlab.models.backbones import packaged_weights_path
from transferlab.tasks.train import build, train


def _model(tmp_path, folder, strategy, *extra):
    cfg = compose_config(tmp_path, [*shrink(folder, strategy=strategy), *extra])
    return build(cfg).model


def _lrs_by_param(model):
    opt = model.configure_optimizers()["optimizer"]
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_discriminative_every_stage_trains_with_lr_decaying_towards_the_input(tmp_path, tiny_folder):
    model = _model(tmp_path, tiny_folder, "discriminative", "strategy.lr_decay=0.5")
    assert all(p.requires_grad for p in model.parameters())
    lrs = _lrs_by_param(model)
    base = 0.001
    stage_lrs = []
    for stage in model.stages:
        params = [p for n in stage for p in model.backbone.get_submodule(n).parameters()]
        stage_lrs.append({lrs[id(p)] for p in params})
    assert all(len(s) == 1 for s in stage_lrs)
    flat = [s.pop() for s in stage_lrs]
    n = len(flat)
    assert flat == pytest.approx([base * 0.5 ** (n - i) for i in range(n)])
    assert {lrs[id(p)] for p in model.head.parameters()} == {base}


def test_gradual_backbone_is_in_the_optimizer_from_the_start_but_frozen_until_unfreeze(tmp_path, tiny_folder):
    model = _model(tmp_path, tiny_folder, "gradual", "strategy.unfreeze_at=2")
    lrs = _lrs_by_param(model)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    backbone_lrs = {lrs[id(p)] for p in model.backbone.parameters()}
    assert len(backbone_lrs) == 1 and backbone_lrs.pop() == pytest.approx(0.0001)
    assert not model.backbone.training  # a frozen backbone runs in eval mode
    model.strategy.apply(model, model.stages, epoch=2)
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.training


def test_scratch_uses_random_init_of_the_same_architecture(tmp_path, tiny_folder):

    def lite0(strategy):
        overrides = shrink(tiny_folder, strategy=strategy, backbone="efficientnet_lite0")
        cfg = compose_config(tmp_path, overrides)  # the default backbone: efficientnet_lite0, real weights
        return build(cfg).model

    pretrained, scratch = lite0("finetune"), lite0("scratch")
    source = torch.load(packaged_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(pretrained.backbone.conv_stem.weight, source["_conv_stem.weight"])
    assert not torch.equal(scratch.backbone.conv_stem.weight, source["_conv_stem.weight"])
    assert [n for n, _ in scratch.named_parameters()] == [n for n, _ in pretrained.named_parameters()]
    assert all(p.requires_grad for p in scratch.parameters())


class _Probe(L.Callback):
    """Records, at each train epoch start (after the module's hook), what trains and at which lr."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        opt = trainer.optimizers[0]
        backbone_ids = {id(p) for p in pl_module.backbone.parameters()}
        lrs = {g["lr"] for g in opt.param_groups if any(id(p) in backbone_ids for p in g["params"])}
        self.seen[trainer.current_epoch] = (
            all(p.requires_grad for p in pl_module.backbone.parameters()),
            pl_module.backbone.training,
            lrs,
        )


def test_gradual_resumed_after_unfreezing_keeps_the_backbone_trainable_at_its_lr(tmp_path, tiny_folder):
    common = {"strategy": "gradual", "strategy.unfreeze_at": 1, "scheduler.step_size": 100,
              "callbacks.early_stopping": "null"}
    first = train(compose_config(tmp_path / "a", shrink(tiny_folder, **common, **{"trainer.max_epochs": 2})))
    ckpt = torch.load(first["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1  # taken after the unfreeze point


    cfg = compose_config(tmp_path / "b", shrink(tiny_folder, **common, **{"trainer.max_epochs": 3,
                                                                           "ckpt_path": first["last_checkpoint"]}))
    built = build(cfg)
    dm, model = built.datamodule, built.model
    assert not any(p.requires_grad for p in model.backbone.parameters())  # a fresh model starts frozen
    probe = _Probe()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[probe])
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer.fit(model, dm, ckpt_path=first["last_checkpoint"])
    trainable, training_mode, lrs = probe.seen[2]
    assert trainable and training_mode
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.001 * 0.1)
    resumed_weights = torch.load(first["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    changed = [k for k, v in model.backbone.state_dict().items()
               if k.endswith("weight") and not torch.equal(v, resumed_weights[f"backbone.{k}"])]
    assert changed, "backbone weights did not change after resuming past the unfreeze point"
    assert before.keys() == model.backbone.state_dict().keys()


def test_keep_bn_stats_holds_every_batchnorm_still_while_its_weights_train(tmp_path, tiny_folder):
    def norms_after_a_training_forward(model):
        model.strategy.apply(model, model.stages, epoch=0)
        model.train()
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        before = [m.running_mean.clone() for m in norms]
        model(torch.randn(4, 3, 32, 32) * 3 + 1)
        return norms, [not torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True)]

    norms, moved = norms_after_a_training_forward(
        _model(tmp_path / "kept", tiny_folder, "finetune", "strategy.keep_bn_stats=true"))
    assert norms and all(m.weight.requires_grad and not m.training for m in norms)
    assert not any(moved)
    norms, moved = norms_after_a_training_forward(_model(tmp_path / "drifting", tiny_folder, "finetune"))
    assert all(m.training for m in norms) and all(moved)


def test_lpft_fast_experiment_fine_tunes_only_lite0s_last_five_stages_at_twice_the_tutorial_lr(tmp_path, tiny_folder):

    cfg = compose_config(tmp_path, ["experiment=lpft_fast", *shrink(tiny_folder, backbone="efficientnet_lite0")])
    model = build(cfg).model
    assert model.strategy.fits_head and len(model.stages) == 8
    stage_of = {name: i for i, stage in enumerate(model.stages) for name in stage}

    def trains(module_name):
        return {p.requires_grad for p in model.backbone.get_submodule(module_name).parameters()}

    assert all(trains(name) == {i >= 3} for name, i in stage_of.items())  # stem, blocks 0-1 frozen
    assert all(p.requires_grad for p in model.head.parameters())
    lrs = sorted(set(_lrs_by_param(model).values()))
    assert lrs == pytest.approx([0.002 * cfg.dataset.batch_size / 4])
    model.train()
    norms = {name: m for name, m in model.backbone.named_modules() if isinstance(m, _BatchNorm)}
    frozen = [name for name in norms if stage_of[name] < 3]
    assert frozen and not any(norms[name].training for name in frozen)  # they keep their statistics
    assert all(norms[name].training for name in norms if stage_of[name] >= 3)


def test_weight_decay_spares_biases_and_normalisation_parameters(tmp_path, tiny_folder):
    """timm's and fastai's rule: weight decay on the weights of convolutions and linear layers only; biases,
    BatchNorm scales and shifts (every 1-d parameter) are not pulled to zero. Each lr multiplier keeps its rate."""
    model = _model(tmp_path, tiny_folder, "discriminative", "optimizer=adamw", "optimizer.weight_decay=0.05")
    optimizer = model.configure_optimizers()["optimizer"]
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert set(decay) == {id(p) for p in names.values()}  # every parameter, once
    norms = {f"{m}.{n}" for m, mod in model.named_modules() if isinstance(mod, _BatchNorm)
             for n, _ in mod.named_parameters(recurse=False)}
    assert norms  # the tiny backbone has BatchNorm layers
    for name, param in names.items():
        spared = param.ndim <= 1 or name.endswith(".bias")
        assert decay[id(param)] == (0.0 if spared else 0.05), name
        if name in norms:
            assert decay[id(param)] == 0.0
    head_weight = model.head[-1].weight
    lrs = _lrs_by_param(model)
    assert lrs[id(head_weight)] == lrs[id(model.head[-1].bias)]  # the split keeps each group's rate
    sgd = _model(tmp_path / "sgd", tiny_folder, "finetune").configure_optimizers()["optimizer"]
    assert all("weight_decay" not in g or g["weight_decay"] == 0.0 for g in sgd.param_groups)  # the tutorial: none
