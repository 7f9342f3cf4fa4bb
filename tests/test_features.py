"""The frozen-feature cache: same results as live features, reused when nothing changed, rebuilt otherwise;
the decoded-image cache (cache_images) feeds the same pixels; a sweep shares both across its jobs (slow)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, compose_config, shrink
from transferlab.config.checks import ConfigValueError
from transferlab.config.settings import RunSettings
from transferlab.tasks.train import train

# For the tests about which cache entries exist: the entry is written before the first training step, so one
# epoch shows it as well as four.
ONE_EPOCH = {"trainer.max_epochs": 1}
NO_AUGMENT = {"dataset.augment.scale": "[1.0,1.0]", "dataset.augment.ratio": "[1.0,1.0]",
              "dataset.augment.hflip": "false", "dataset.input.crop_pct": 1.0}


def _run(tmp_path, folder, name, **extra):
    settings = {"strategy": "frozen", "trainer.max_epochs": 4, "trainer.limit_train_batches": 6,
                "callbacks.early_stopping": "null", "optimizer.lr": 0.05, "paths.cache_dir": tmp_path / "cache"}
    # The real pretrained efficientnet_lite0 (the default backbone, offline) at 32 px: features that mean
    # something, extracted in well under a second for these 36 images.
    overrides = shrink(folder, backbone="efficientnet_lite0", **{**settings, **extra})
    return train(compose_config(tmp_path / name, overrides))


def _cache_files(tmp_path):
    return sorted((tmp_path / "cache" / "features").glob("*.pt"))


def test_cached_and_live_features_train_the_same_head(tmp_path, tiny_folder):
    sgd = {"strategy.head_fit.enabled": "false"}  # a head fit needs the cache (below)
    live = _run(tmp_path, tiny_folder, "live", **NO_AUGMENT, **sgd, **{"dataset.cache_features": "false"})
    cached = _run(tmp_path, tiny_folder, "cached", **NO_AUGMENT, **sgd)
    assert len(_cache_files(tmp_path)) == 1
    assert cached["val/acc_best"] == pytest.approx(live["val/acc_best"], abs=0.1)
    assert cached["val/acc_best"] >= 0.9  # the colours are separable: both must actually learn


def test_a_head_fit_without_the_cache_is_refused_naming_both_ways_out(tmp_path, tiny_folder):
    with pytest.raises(ConfigValueError, match=r"dataset.cache_features=false.*cache_features=auto.*enabled=false"):
        _run(tmp_path, tiny_folder, "live", **{"dataset.cache_features": "false"})
    assert not (tmp_path / "live" / "run" / "checkpoints").exists()


def test_second_run_reuses_the_cache_and_a_changed_file_invalidates_it(tmp_path, tiny_folder):
    _run(tmp_path, tiny_folder, "one", **ONE_EPOCH)
    (first,) = _cache_files(tmp_path)
    mtime = first.stat().st_mtime_ns
    _run(tmp_path, tiny_folder, "two", **ONE_EPOCH, **{"optimizer.lr": 0.01})  # the lr does not change features
    assert _cache_files(tmp_path) == [first] and first.stat().st_mtime_ns == mtime
    image = next((tiny_folder / "train" / "ant").glob("*.png"))
    image.write_bytes((tiny_folder / "train" / "bee" / image.name).read_bytes())  # other pixels: a new entry
    _run(tmp_path, tiny_folder, "three", **ONE_EPOCH)
    assert len(_cache_files(tmp_path)) == 2


def test_augmented_views_are_a_separate_cache_entry(tmp_path, tiny_folder):
    import torch

    _run(tmp_path, tiny_folder, "plain", **ONE_EPOCH)
    _run(tmp_path, tiny_folder, "views", **ONE_EPOCH, **{"dataset.feature_views": 3})
    files = _cache_files(tmp_path)
    shapes = sorted(tuple(torch.load(f, weights_only=True)["train"].shape[:2]) for f in files)
    assert shapes == [(1, 24), (3, 24)]


def test_strategies_that_train_the_backbone_never_use_the_cache(tmp_path, tiny_folder):
    # A feature cache would be written before the first training step: one short epoch through the real backbone.
    _run(tmp_path, tiny_folder, "partial", **ONE_EPOCH, **{"strategy": "partial", "dataset.cache_features": "true",
                                                            "strategy.trainable_stages": 1,
                                                            "trainer.limit_train_batches": 2})
    assert _cache_files(tmp_path) == []


@pytest.mark.slow  # a train.py multirun of four jobs; the cache reuse itself is checked in process above
def test_a_sweep_of_two_strategies_by_two_configs_reuses_the_caches_across_jobs(tmp_path, tiny_folder):
    """The issue's target: frozen,finetune x two heads. Both frozen jobs share one feature extraction; with
    cache_images=disk both finetune jobs share one decoding."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *shrink(tiny_folder), "strategy=frozen,finetune",
         "head=linear,mlp", "dataset.cache_images=disk", "logger=none",
         "strategy.head_fit.enabled=false"],  # an mlp head is trained, not solved
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "outputs" / "cache" / "features").glob("*.pt"))) == 1
    assert len(list((tmp_path / "outputs" / "cache" / "images").glob("*.pt"))) == 2  # train and val
    logs = "".join(p.read_text() for p in (tmp_path / "outputs" / "train" / "multiruns").rglob("*.log"))
    assert logs.count("Cached features in") == 1 and logs.count("Loaded cached features") == 1
    assert logs.count("Cached decoded images in") == 2 and logs.count("Memory-mapped") == 2


def test_decoded_image_cache_feeds_the_same_pixels_as_decoding_every_time(tmp_path, tiny_folder):

    from transferlab.data.dataset import ImageSamples
    from transferlab.data.decoded import DecodedImages
    from transferlab.data.folders import scan_folder
    from transferlab.data.input_spec import InputSpec
    from transferlab.data.transforms import eval_transform

    spec = InputSpec(image_size=16, crop_pct=1.0)
    samples = scan_folder(tiny_folder).val
    live = ImageSamples(samples, eval_transform(spec))
    decoded = DecodedImages(samples, eval_transform(spec), short_side=spec.resize_size)
    for i in range(len(samples)):
        (a, la), (b, lb) = live[i], decoded[i]
        assert la == lb and a.shape == b.shape == (3, 16, 16)
        # one extra resize step on noisy pixels: close on average, not bit-identical
        assert (a - b).abs().mean() < 0.1


def test_cache_images_trains(tmp_path, tiny_folder):
    summary = train(compose_config(tmp_path, shrink(tiny_folder, **{"dataset.cache_images": "true"})))
    assert summary["val/acc_best"] is not None


def test_disk_image_cache_is_reused_and_follows_file_changes(tmp_path, tiny_folder):
    """cache_images=disk: one file per image set, memory-mapped next time with the same pixels; a changed
    file makes a new entry instead of serving stale pixels."""
    from transferlab.data.decoded import DecodedImages
    from transferlab.data.folders import scan_folder

    samples = scan_folder(tiny_folder).train
    cache = tmp_path / "cache"
    first = DecodedImages(samples, None, short_side=20, cache_dir=cache)
    assert not first.cache_hit and first.cache_path.is_file()
    second = DecodedImages(samples, None, short_side=20, cache_dir=cache)
    assert second.cache_hit and second.cache_path == first.cache_path
    for (a, la), (b, lb) in zip(first, second, strict=True):
        assert la == lb and torch.equal(a, b)

    changed = samples[0].path
    with open(changed, "wb") as f, open(samples[-1].path, "rb") as other:  # other pixels: a new entry
        f.write(other.read())
    third = DecodedImages(samples, None, short_side=20, cache_dir=cache)
    assert not third.cache_hit and third.cache_path != first.cache_path
    assert len(list((cache / "images").glob("*.pt"))) == 2


def test_cache_images_disk_trains_and_a_second_run_skips_decoding(tmp_path, tiny_folder, caplog):
    import logging

    overrides = shrink(tiny_folder, **{"dataset.cache_images": "disk"})
    train(compose_config(tmp_path, overrides))
    with caplog.at_level(logging.INFO, logger="transferlab.data.decoded"):
        summary = train(compose_config(tmp_path, overrides))
    assert summary["val/acc_best"] is not None
    assert caplog.text.count("Memory-mapped") == 2 and "Decoded" not in caplog.text  # train and val sets


def test_cache_images_rejects_unknown_values(tmp_path, tiny_folder):
    cfg = compose_config(tmp_path, shrink(tiny_folder, **{"dataset.cache_images": "ssd"}))
    with pytest.raises(ConfigValueError, match=r"dataset.cache_images='ssd'.*memory.*disk"):
        RunSettings.from_config(cfg)


def test_the_extraction_bars_follow_the_trainers_progress_bar(tmp_path, tiny_folder, capsys):
    """`trainer.enable_progress_bar=false` (a notebook, a log file) silences the feature extraction's bars too."""
    _run(tmp_path, tiny_folder, "quiet", **{"trainer.enable_progress_bar": "false"})
    assert "features: train" not in capsys.readouterr().err
    _run(tmp_path, tiny_folder, "shown", **{"trainer.enable_progress_bar": "true", "paths.cache_dir": tmp_path / "c2"})
    assert "features: train" in capsys.readouterr().err
