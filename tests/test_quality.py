"""The deep quality check: near-duplicate leaks, label errors and outliers, on real files."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tests.conftest import ROOT
from transferlab.quality import audit
from transferlab.quality.duplicates import MIN_PIXEL
from transferlab.quality.labels import label_issues
from transferlab.quality.outliers import energy_scores, flagged
from transferlab.quality.thumbnails import similarity, thumbnails

DATASETS = ROOT.parent / "shared" / "datasets"


def photo(seed: int, size: int = 160) -> Image.Image:
    """A photo-like image: smooth random structure at several scales, in colour."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size, 3))
    for cells in (3, 6, 12):
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        out += np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), float) / 3
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def twin(image: Image.Image, mirror: bool = True) -> Image.Image:
    """What the issue plants: resized, re-encoded, cropped, brightened, mirrored."""
    w, h = image.size
    image = image.resize((int(w * 0.6), int(h * 0.6)), Image.BILINEAR).crop((4, 3, int(w * 0.6) - 5, int(h * 0.6) - 2))
    image = ImageEnhance.Brightness(image).enhance(1.12)
    image = ImageOps.mirror(image) if mirror else image
    out = io.BytesIO()
    image.save(out, "JPEG", quality=55)
    out.seek(0)
    return Image.open(out).convert("RGB")


def test_a_perturbed_copy_is_confirmed_by_its_pixels_and_another_photo_is_not(tmp_path):
    photo(1).save(tmp_path / "a.png")
    twin(photo(1)).save(tmp_path / "a_twin.jpg")
    photo(2).save(tmp_path / "b.png")
    a, a_twin, b = (thumbnails(str(tmp_path / n)) for n in ("a.png", "a_twin.jpg", "b.png"))
    assert similarity(a, a_twin) >= MIN_PIXEL
    assert similarity(a, b) < 0.5


def _folder(tmp_path, leak: bool, mirror: bool = True):
    """train/{x,y}/ and val/{x,y}/ of distinct photos; with `leak`, val/x/leak.jpg is a twin of train/x/0."""
    paths, splits, labels = [], [], []
    seed = 0
    for split, n in (("train", 8), ("val", 3)):
        for label, cls in enumerate(("x", "y")):
            (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                rel = f"{split}/{cls}/{i}.png"
                photo(seed).save(tmp_path / rel)
                paths.append(rel), splits.append(split), labels.append(label)
    if leak:
        original = Image.open(tmp_path / "train/x/0.png").convert("RGB")
        # mirror=False: a re-encode alone, which any backbone (the tests' tiny random one too) sees as close
        (twin(original) if mirror else original).save(tmp_path / "val/x/leak.jpg", quality=85)
        paths.append("val/x/leak.jpg"), splits.append("val"), labels.append(0)
    return paths, splits, np.array(labels)


def test_audit_reports_a_train_val_leak_first_naming_the_val_file_first(tmp_path):
    paths, splits, labels = _folder(tmp_path, leak=True)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(paths), 64))
    features[-1] = features[0] + 0.3 * rng.normal(size=64)  # the backbone sees the twin as close, not equal
    report = audit(str(tmp_path), ["x", "y"], paths, splits, labels, features, probs=None)
    assert report.findings[0].kind == "leak"
    assert report.findings[0].files == ["val/x/leak.jpg", "train/x/0.png"]
    assert report.leaked_val == ["val/x/leak.jpg"]
    assert [f.kind for f in report.findings].count("leak") == 1 and not report.of("duplicate")
    assert "val/x/leak.jpg" in report.flagged_paths() and "train/x/0.png" not in report.flagged_paths()


def test_a_leak_is_found_on_its_split_not_its_path_when_val_is_drawn_from_class_folders(tmp_path):
    """dataset.val_fraction layouts: val files live in the class folders, no `val/` in their paths."""
    paths, splits, labels = _folder(tmp_path, leak=True)
    flat = [p.split("/", 1)[1].replace("/", f"/{s}_") for p, s in zip(paths, splits, strict=True)]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(paths), 64))
    features[-1] = features[0] + 0.3 * rng.normal(size=64)
    for old, new in zip(paths, flat, strict=True):
        (tmp_path / new).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path / old, tmp_path / new)
    report = audit(str(tmp_path), ["x", "y"], flat, splits, labels, features, probs=None)
    assert report.leaked_val == ["x/val_leak.jpg"]
    assert "x/val_leak.jpg" in report.flagged_paths() and "x/train_0.png" not in report.flagged_paths()


def test_close_features_without_matching_pixels_are_not_a_duplicate(tmp_path):
    """Two different photos of one scene: the backbone puts them close, the pixels disagree."""
    paths, splits, labels = _folder(tmp_path, leak=False)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(paths), 64))
    features[1] = features[0] + 0.01 * rng.normal(size=64)
    report = audit(str(tmp_path), ["x", "y"], paths, splits, labels, features, probs=None)
    assert not report.of("leak") and not report.of("duplicate")


def test_confident_learning_flags_flipped_labels_and_suggests_the_true_class():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), truth] = 0.9
    probs += rng.uniform(0, 0.05, probs.shape)
    given = truth.copy()
    flipped = rng.choice(300, 15, replace=False)
    given[flipped] = (truth[flipped] + 1) % 3
    issues = label_issues(given, probs)
    found = {i.index for i in issues}
    assert set(flipped.tolist()) <= found and len(found) <= 20
    assert all(i.suggested == truth[i.index] for i in issues if i.index in set(flipped.tolist()))


def test_images_the_pretrained_head_finds_nothing_in_are_flagged_first():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (200, 1000))
    logits[np.arange(200), rng.integers(0, 1000, 200)] += rng.uniform(8, 12, 200)  # confident photos
    logits[[5, 50]] = rng.normal(0, 0.1, (2, 1000))  # near-uniform: nothing ImageNet knows
    scores = energy_scores(logits)
    assert set(flagged(scores)[:2].tolist()) == {5, 50}
    assert len(flagged(scores)) <= 4  # at most the top 2%


def test_the_doctor_deep_writes_text_json_html_and_an_exclude_list(tmp_path):
    data = tmp_path / "data"
    _folder(data, leak=True, mirror=False)
    cache = tmp_path / "cache"
    out = subprocess.run(
        [sys.executable, "-m", "transferlab.data.doctor", str(data), "--deep", "--backbone", "tiny",
         "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "html"),
         "--write-exclude", str(tmp_path / "exclude.txt"), "--no-cache",
         "debug=tiny", f"paths.cache_dir={cache}", "dataset.input.image_size=64"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[leak] val/x/leak.jpg, train/x/0.png" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["leaked_val"] == ["val/x/leak.jpg"]
    assert report["quality"]["counts"]["leak"] == 1
    page = (tmp_path / "html" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 and "val/x/leak.jpg" in page
    assert "val/x/leak.jpg" in (tmp_path / "exclude.txt").read_text().splitlines()
    assert list((cache / "features").glob("*.pt")), "the features went to the training feature cache"


@pytest.mark.slow
@pytest.mark.skipif(not (DATASETS / "hymenoptera_data").is_dir(), reason="../shared/datasets not present")
def test_on_real_photos_a_planted_leak_and_flipped_labels_are_found(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from data_quality import check, plant

    planted = plant(DATASETS / "hymenoptera_data", tmp_path / "h", seed=1)
    found, _ = check(tmp_path / "h")
    leaks = {f for x in found["findings"] if x["kind"] == "leak" for f in x["files"] if f.startswith("val/")}
    labels = {x["files"][0] for x in found["findings"] if x["kind"] == "label"}
    assert len(leaks & planted["leak"]) >= 9
    assert len(labels & planted["label"]) >= 0.8 * len(planted["label"])
    top = set(found["outlier_ranking"][:8])
    assert len(top & planted["outlier"]) >= 4


def test_a_frozen_run_reports_its_leak_and_the_val_accuracy_without_it(tmp_path):
    from tests.conftest import compose_config, shrink
    from transferlab.tasks.train import train

    data = tmp_path / "data"
    _folder(data, leak=True, mirror=False)
    summary = train(compose_config(tmp_path / "run", shrink(data, strategy="frozen", logger="tensorboard",
                                                            **{"dataset.input.image_size": 64})))
    quality = summary["quality"]
    assert quality["counts"]["leak"] == 1 and quality["leaked_val"] == ["val/x/leak.jpg"]
    free = summary["val_acc_leak_free"]
    assert free["leaked"] == 1 and free["images"] == 6
    rows = list(csv.DictReader(open(tmp_path / "run" / "run" / "val_predictions.csv")))
    kept = [r for r in rows if not r["file"].endswith("leak.jpg")]
    assert free["accuracy"] == pytest.approx(sum(r["true"] == r["predicted"] for r in kept) / len(kept))
    from tests.test_dashboards import events

    folder = next((tmp_path / "run" / "run").rglob("events.out.tfevents*")).parent
    tags = events(folder).Tags()
    assert "quality/findings" in tags["images"]
    assert any(t.startswith("quality/report") for t in tags["tensors"])

    # eval.py on the run states the same leak-free figure (the run's record names the leaked val file)
    from omegaconf import OmegaConf

    from transferlab.tasks.evaluate import evaluate_checkpoint, format_report

    dataset = OmegaConf.create({"_target_": "transferlab.data.datamodule.FolderDataModule", "root": str(data)})
    ev = evaluate_checkpoint(str(tmp_path / "run" / "run"), dataset, progress=False)
    assert ev.metrics["leaked_images"] == 1 and ev.metrics["leak_free_images"] == 6
    assert ev.metrics["accuracy_leak_free"] == pytest.approx(free["accuracy"])
    assert "accuracy leak-free" in format_report(ev, "eval")
    assert "accuracy_leak_free" not in evaluate_checkpoint(str(tmp_path / "run" / "run"), dataset, split="train",
                                                           progress=False).metrics


def test_dataset_quality_fast_runs_no_deep_check(tmp_path):
    from tests.conftest import compose_config, shrink
    from transferlab.tasks.train import train

    data = tmp_path / "data"
    _folder(data, leak=True, mirror=False)
    summary = train(compose_config(tmp_path / "run", shrink(data, strategy="frozen", logger="none",
                                                            **{"dataset.quality": "fast"})))
    assert "quality" not in summary and "val_acc_leak_free" not in summary


@pytest.mark.parametrize("quality", ["fast", "off"])
def test_dataset_quality_off_silences_the_advisory_warnings_but_still_skips_bad_files(tmp_path, caplog, quality):
    import logging
    import shutil

    from tests.conftest import make_folder
    from transferlab.data.datamodule import FolderDataModule

    root = make_folder(tmp_path / "data", {"train": {"ant": 3, "bee": 3}, "val": {"ant": 2, "bee": 2}})
    shutil.copy(root / "train/ant/000.png", root / "train/ant/copy.png")  # a byte-identical duplicate
    (root / "train/bee/broken.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.datamodule"):
        splits = FolderDataModule(str(root), quality=quality).scan()
    assert not any(s.path.endswith("broken.png") for s in splits.train)  # bad files: skipped either way
    assert "Skipping 1 bad file" in caplog.text
    assert ("Dataset doctor: [duplicate]" in caplog.text) == (quality == "fast")


def test_exclude_and_relabel_files_apply_without_touching_a_file_and_are_recorded(tmp_path):
    from tests.conftest import make_folder
    from transferlab.data.datamodule import FolderDataModule

    root = make_folder(tmp_path / "data", {"train": {"ant": 4, "bee": 4}, "val": {"ant": 2, "bee": 2}})
    (tmp_path / "exclude.txt").write_text("train/ant/000.png\n# a comment\nval/bee/001.png\n")
    (tmp_path / "relabel.csv").write_text("path,label\ntrain/ant/001.png,bee\n")
    dm = FolderDataModule(str(root), exclude=str(tmp_path / "exclude.txt"), relabel=str(tmp_path / "relabel.csv"))
    splits = dm.scan()
    rel = {os.path.relpath(s.path, root): splits.class_names[s.label] for s in [*splits.train, *splits.val]}
    assert "train/ant/000.png" not in rel and "val/bee/001.png" not in rel and len(rel) == 10
    assert rel["train/ant/001.png"] == "bee"
    assert (root / "train/ant/000.png").is_file()  # the user's files are never changed
    report = dm.report_dict()
    assert report["exclude"]["count"] == 2 and report["relabel"]["count"] == 1
    assert len(report["exclude"]["sha256"]) == 64


@pytest.mark.parametrize(("name", "text", "match"), [
    ("exclude.txt", "train/ant/999.png\n", r"line 1: 'train/ant/999.png' is no image"),
    ("relabel.csv", "train/ant/001.png,wasp\n", r"line 1: 'wasp' is no class"),
])
def test_a_stale_correction_file_is_refused_naming_its_line(tmp_path, name, text, match):
    from tests.conftest import make_folder
    from transferlab.data.datamodule import FolderDataModule
    from transferlab.errors import DatasetLayoutError

    root = make_folder(tmp_path / "data", {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    (tmp_path / name).write_text(text)
    key = "exclude" if name.startswith("exclude") else "relabel"
    with pytest.raises(DatasetLayoutError, match=match):
        FolderDataModule(str(root), **{key: str(tmp_path / name)}).scan()
