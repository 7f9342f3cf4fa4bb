"""The dataset doctor finds every planted fault and names each file; training applies dataset.on_bad_file."""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.conftest import HYMENOPTERA, compose_config, make_folder, requires_hymenoptera, shrink
from tests.fixtures_messy import BAD, LAYOUT_ERRORS, MAX_PIXELS, NOTES, WARNINGS, make_messy, write_png
from transferlab.data.datamodule import FolderDataModule
from transferlab.data.dataset import ImageSamples
from transferlab.data.doctor import BadFilesError, diagnose
from transferlab.data.doctor import inspect as doctor_module  # where diagnose's inspect_all finds inspect_file
from transferlab.data.doctor.__main__ import main as doctor_main
from transferlab.data.folders import DatasetLayoutError, Sample
from transferlab.data.images import BadImageError, load_rgb
from transferlab.data.input_spec import InputSpec
from transferlab.data.transforms import eval_transform
from transferlab.tasks.train import train

# An identity input pipeline for 32 px images: resize/crop to the same size, mean 0, std 1, no augmentation.
IDENTITY = dict(input={"image_size": 32, "crop_pct": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]},
                augment={"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "hflip": False})
SPEC = InputSpec(image_size=32, crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def found(report) -> dict[str, set[str]]:
    return {f.code: {i.path for i in f.items} for f in report.findings}


@pytest.fixture
def messy(tmp_path) -> Path:
    return make_messy(tmp_path / "messy")


def test_doctor_finds_every_planted_fault_and_names_each_file(tmp_path):
    root = make_messy(tmp_path / "messy", layout_faults=True)
    report = diagnose(root, crop_size=24, max_pixels=MAX_PIXELS)
    expected = {**BAD, **NOTES, **WARNINGS, **LAYOUT_ERRORS, "missing_val_class": {"val/moth", "val/wasp"}}
    assert found(report) == expected
    assert {f.code for f in report.errors} == set(BAD) | set(LAYOUT_ERRORS)
    assert {f.code for f in report.warnings} == set(WARNINGS)
    assert {report.rel(p) for p in report.bad_files} == BAD["unreadable"] | BAD["too_large"]
    # hidden/tool folders never become classes; the empty one does (and is an error)
    assert report.class_names == ["ant", "bee", "moth", "wasp"]
    details = {i.path: i.detail for f in report.findings for i in f.items}
    assert "truncated" in details["train/ant/truncated.jpg"]
    assert details["train/ant/empty.jpg"] == "empty file (0 bytes)"
    assert details["train/ant/notes.jpg"].startswith("text, not an image")
    assert details["train/bee/huge.png"].startswith("80x80 = 6,400 px")
    assert details["train/ant/000.png"] == "same content as train/ant/000_copy.png"
    assert details["val/ant/leaked.png"] == "also in train: train/ant/001.png"
    assert details["train"] == "ant: 13 vs wasp: 3 (4.3x)"
    assert details["train/ant/.DS_Store"] == "os_litter" and details["train/ant/readme.txt"] == "non_image"
    text = report.format(limit=None)
    for path in set().union(*found(report).values()) - {"train"}:
        assert path in text
    assert "NOT READY" in text
    assert "dataset.balance=loss" in text  # the imbalance finding names the switch that addresses it


def test_counts_ignore_bad_files_and_follow_the_train_mapping(messy):
    report = diagnose(messy, crop_size=24, max_pixels=MAX_PIXELS)
    assert not report.layout_errors
    assert report.counts == {"train": {"ant": 13, "bee": 9, "wasp": 3}, "val": {"ant": 4, "bee": 3, "wasp": 0}}
    assert report.imbalance == {"train": 4.33, "val": 1.33}
    labels = {os.path.relpath(s.path, messy): s.label for s in report.splits.train + report.splits.val}
    assert labels["train/wasp/000.png"] == 2 and labels["val/bee/000.png"] == 1
    assert not {p for p in labels if ".ipynb_checkpoints" in p or p.startswith("train/__")}
    d = json.loads(json.dumps(report.to_dict()))  # JSON-safe
    assert d["class_to_idx"] == {"ant": 0, "bee": 1, "wasp": 2} and d["ok"] is False
    assert set(d["bad_files"]) == BAD["unreadable"] | BAD["too_large"]


def test_root_one_level_too_high_and_split_named_classes_are_errors(tmp_path):
    make_folder(tmp_path / "outer" / "ants_bees", {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}})
    report = diagnose(tmp_path / "outer")
    assert [f.code for f in report.errors] == ["root_too_high"]
    assert f"dataset.root={tmp_path / 'outer' / 'ants_bees'}" in report.errors[0].message
    make_folder(tmp_path / "caps", {"Train": {"a": 1, "b": 1}, "Val": {"a": 1, "b": 1}})
    report = diagnose(tmp_path / "caps")
    assert [f.code for f in report.errors] == ["root_too_high"]
    assert found(report)["root_too_high"] == {"Train", "Val"}
    with pytest.raises(DatasetLayoutError, match="split names"):
        FolderDataModule(str(tmp_path / "caps")).scan()


def test_pointing_at_train_or_having_valid_instead_of_val_warns(tmp_path):
    root = make_folder(tmp_path / "d", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    assert "root_is_a_split" in found(diagnose(root / "train"))
    (root / "val").rename(root / "valid")
    report = diagnose(root)
    assert report.layout == "split" and found(report)["no_val_folder"] == {"valid"}


def test_second_scan_comes_from_the_cache_and_sees_changed_files(messy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = diagnose(messy, crop_size=24, max_pixels=MAX_PIXELS, cache_dir=cache)
    assert first.from_cache == 0 and first.files_checked == 36
    calls = []
    real = doctor_module.inspect_file
    monkeypatch.setattr(doctor_module, "inspect_file", lambda p, m: calls.append(p) or real(p, m))
    second = diagnose(messy, crop_size=24, max_pixels=MAX_PIXELS, cache_dir=cache)
    assert calls == [] and second.from_cache == 36
    assert found(second) == found(first)
    # a file fixed in place (new size + mtime) is decoded again; a raised cap re-checks the huge image
    write_png(messy / "train" / "ant" / "truncated.jpg", np.zeros((32, 32, 3), np.uint8))
    third = diagnose(messy, crop_size=24, max_pixels=100 * 100, cache_dir=cache)
    assert sorted(os.path.relpath(p, messy) for p in calls) == ["train/ant/truncated.jpg", "train/bee/huge.png"]
    assert found(third)["unreadable"] == {"train/ant/empty.jpg", "train/ant/notes.jpg"}
    assert "too_large" not in found(third)
    calls.clear()  # a lower cap needs no decoding: sizes are cached
    fourth = diagnose(messy, crop_size=24, max_pixels=48 * 32 - 1, cache_dir=cache)
    assert calls == [] and found(fourth)["too_large"] == {"train/ant/rotated.jpg", "train/bee/huge.png"}


def test_cli_prints_each_bad_file_and_exits_non_zero(messy, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    code = doctor_main([str(messy), "--no-cache", "--crop-size", "24", "--max-pixels", str(MAX_PIXELS),
                        "--json", str(out_json)])
    text = capsys.readouterr().out
    assert code == 1
    for path in BAD["unreadable"] | BAD["too_large"] | WARNINGS["suspicious"] | WARNINGS["leak"]:
        assert path in text
    assert json.loads(out_json.read_text())["errors"] == 2


def test_cli_module_entry_exit_codes(tiny_folder, monkeypatch, capsys):
    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["transferlab.data.doctor", str(tiny_folder), "--no-cache", *args])
        monkeypatch.delitem(sys.modules, "transferlab.data.doctor.__main__", raising=False)  # as a fresh `python -m`
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module("transferlab.data.doctor", run_name="__main__")
        return exit_.value.code

    assert run("--crop-size", "24") == 0
    assert "Verdict: OK to train (0 warning(s))" in capsys.readouterr().out
    assert run("--crop-size", "32", "--strict") == 1  # 24 px images under a 32 px crop: a warning
    assert "[tiny] 36 image(s)" in capsys.readouterr().out


def _datamodule(root: Path, **kwargs) -> FolderDataModule:
    return FolderDataModule(str(root), batch_size=4, num_workers=0, max_pixels=MAX_PIXELS, **{**IDENTITY, **kwargs})


def test_skip_policy_warns_listing_every_skipped_file_and_trains_on_the_rest(messy, caplog):
    dm = _datamodule(messy, on_bad_file="skip")
    with caplog.at_level(logging.WARNING):
        assert dm.class_names == ["ant", "bee", "wasp"]
    bad = BAD["unreadable"] | BAD["too_large"]
    assert {os.path.relpath(p, messy) for p in dm.skipped} == bad
    warning = next(r.getMessage() for r in caplog.records if "Skipping 4 bad file(s)" in r.getMessage())
    assert all(str(messy / p) in warning for p in bad)
    used = {os.path.relpath(s.path, messy) for s in dm.splits.train + dm.splits.val}
    assert not used & bad and len(used) == 25 + 7


def test_error_policy_stops_before_training_listing_every_file(messy, tmp_path):
    with pytest.raises(BadFilesError) as err:
        _ = _datamodule(messy, on_bad_file="error").class_names
    assert all(str(messy / p) in str(err.value) for p in BAD["unreadable"] | BAD["too_large"])
    with pytest.raises(ValueError, match="dataset.on_bad_file='ignore'"):
        FolderDataModule(str(messy), on_bad_file="ignore")


def test_pixels_and_labels_training_receives_from_the_messy_folder(messy):
    dm = _datamodule(messy)
    dm.set_input_spec(SPEC)
    dm.setup("fit")
    by_path = {os.path.relpath(s.path, messy): i for i, s in enumerate(dm.train_set.samples)}

    def received(rel: str) -> tuple[np.ndarray, int]:
        image, label = dm.train_set[by_path[rel]]
        return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), label

    rgba, label = received("train/ant/rgba.png")
    assert label == 0 and (rgba[:, :8] == 255).all()  # transparent columns: white, not black
    raw = np.asarray(Image.open(messy / "train/ant/rgba.png"))
    assert (rgba[:, 8:] == raw[:, 8:, :3]).all()
    gray16, _ = received("train/ant/gray16.png")
    raw16 = np.asarray(Image.open(messy / "train/ant/gray16.png"))
    assert (gray16 == (raw16 >> 8)[..., None]).all() and gray16.max() < 255  # scaled, not clipped to white
    rotated, _ = received("train/ant/rotated.jpg")  # stored 48x32 with orientation 6: upright 32x48, cropped
    assert rotated.shape == (32, 32, 3)
    _, wasp = received("train/wasp/000.png")
    assert wasp == 2
    # the same bytes at predict time: load_rgb + eval transform give the training pixels
    predicted = eval_transform(SPEC)(load_rgb(str(messy / "train/ant/rgba.png")))
    assert torch.equal((predicted * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(rgba))


def test_file_breaking_mid_training_is_skipped_deterministically_or_named(tmp_path):
    root = make_folder(tmp_path / "d", {"train": {"a": 3, "b": 3}})
    samples = [Sample(str(p), i // 3) for i, p in enumerate(sorted((root / "train").rglob("*.png")))]
    Path(samples[2].path).write_bytes(b"broken after the scan")
    skip = ImageSamples(samples, on_bad_file="skip")
    image, label = skip[2]
    assert label == samples[3].label == 1 and skip.skipped == [samples[2].path]
    assert np.array_equal(np.asarray(image), np.asarray(skip[3][0]))  # the next sample, every time
    with pytest.raises(BadImageError, match=samples[2].path):
        ImageSamples(samples, on_bad_file="error")[2]
    # in a DataLoader worker: the error that reaches the main process still names the file
    loader = DataLoader(ImageSamples(samples, transform=lambda im: torch.zeros(1), on_bad_file="error"),
                        batch_size=6, num_workers=1)
    with pytest.raises(BadImageError, match=samples[2].path):
        next(iter(loader))


def test_training_on_the_messy_folder_with_skip_completes_and_records_its_report(messy, tmp_path):
    cfg = compose_config(tmp_path, shrink(messy, **{"dataset.max_pixels": MAX_PIXELS,
                                                   "dataset.input.image_size": 24}))
    summary = train(cfg)
    assert summary["classes"] == ["ant", "bee", "wasp"]
    report = json.loads((tmp_path / "run" / "dataset_report.json").read_text())
    assert set(report["skipped"]) == BAD["unreadable"] | BAD["too_large"]
    assert report["on_bad_file"] == "skip" and report["samples"] == {"train": 25, "val": 7}
    assert {f["code"] for f in report["findings"]} >= {"unreadable", "too_large", "leak", "suspicious", "tiny"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert "dataset/report/text_summary" in events.Tags()["tensors"]
    assert (tmp_path / "outputs" / "cache").is_dir()  # ${paths.log_dir}/cache


def test_report_callback_reads_the_report_through_the_cached_features_datamodule(messy, tmp_path):
    import lightning as L

    from transferlab.callbacks.dataset_report import DatasetReportCallback
    from transferlab.data.features import CachedFeatureDataModule

    images = _datamodule(messy)
    cached = CachedFeatureDataModule(images, torch.nn.Identity(), {}, str(tmp_path / "cache"))
    trainer = L.Trainer(default_root_dir=str(tmp_path / "run"), logger=False, enable_progress_bar=False)
    trainer.datamodule = cached
    DatasetReportCallback().setup(trainer, None, "fit")
    report = json.loads((tmp_path / "run" / "dataset_report.json").read_text())
    assert set(report["skipped"]) == BAD["unreadable"] | BAD["too_large"]
    # The rest of what callbacks read, passed through unchanged (the dashboards' grid needs val_files).
    assert cached.report is images.report
    assert cached.class_names == images.class_names == ["ant", "bee", "wasp"]
    assert cached.val_files == images.val_files == [s.path for s in images.scan().val]


def test_training_with_error_policy_stops_before_the_first_step(messy, tmp_path):
    cfg = compose_config(tmp_path, shrink(messy, **{"dataset.max_pixels": MAX_PIXELS,
                                                   "dataset.on_bad_file": "error"}))
    with pytest.raises(BadFilesError, match="truncated.jpg"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@requires_hymenoptera
def test_hymenoptera_scan_is_fast_and_flags_the_placeholder_gif(tmp_path):
    start = time.perf_counter()
    report = diagnose(HYMENOPTERA, crop_size=224, cache_dir=tmp_path / "cache")
    first = time.perf_counter() - start
    assert first < 5.0, f"first scan took {first:.1f} s"
    assert not report.errors and report.files_checked == 398
    assert report.counts == {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}}
    assert found(report)["suspicious"] == {"train/ants/imageNotFound.gif"}
    start = time.perf_counter()
    again = diagnose(HYMENOPTERA, crop_size=224, cache_dir=tmp_path / "cache")
    assert again.from_cache == 398 and time.perf_counter() - start < 1.0
    assert found(again) == found(report)


@pytest.mark.slow
@requires_hymenoptera
def test_training_on_hymenoptera_with_its_placeholder_gif_works(tmp_path):
    cfg = compose_config(tmp_path, shrink(HYMENOPTERA, **{"dataset.input.image_size": 64,
                                                         "trainer.limit_train_batches": 20}))
    summary = train(cfg)
    assert summary["classes"] == ["ants", "bees"]
    report = json.loads((tmp_path / "run" / "dataset_report.json").read_text())
    suspicious = next(f for f in report["findings"] if f["code"] == "suspicious")
    assert [f["path"] for f in suspicious["files"]] == ["train/ants/imageNotFound.gif"]
    assert report["skipped"] == [] and report["samples"] == {"train": 245, "val": 153}
