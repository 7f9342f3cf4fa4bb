"""No silent wrong answer from the inputs (issue "Trust 2", cases 8-10), on real files through the real commands:

8. a dataset.root that is no dataset (`/`, a home folder) is refused by its shape, in one line, before anything
   under it is walked or decoded (train.py, the datamodule, the doctor);
9. a frozen head fit that cannot cross-validate (a class of one training image) says so, why, and which l2 it
   used, in the log, the printed report and summary.json;
10. predict.py reads every format Pillow reads (the training scan too: one list) and names the files it skips.

Every tree here is built in a fresh temporary directory: never point these commands at a real system folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, compose_config, make_folder, run_script, shrink
from transferlab.config.schema import HeadFitConfig
from transferlab.data import folders
from transferlab.data.datamodule import FolderDataModule
from transferlab.data.doctor import diagnose
from transferlab.data.doctor import inspect as doctor_inspect
from transferlab.data.doctor.__main__ import main as doctor_main
from transferlab.errors import DatasetLayoutError

SYSTEM_LIKE = ["bin", "boot", "etc", "home", "opt", "srv", "usr", "var"]


def not_a_dataset(root: Path, split: str | None = None) -> Path:
    """A tree shaped like `/` (inside `root`): folders whose images sit only deep down (usr/share/icons/...), the
    others holding only non-image files or nothing. `split="train"`: the same under train/ and val/."""
    for part in [split, "val"] if split else [None]:
        base = root / part if part else root
        for i, name in enumerate(SYSTEM_LIKE):
            folder = base / name
            folder.mkdir(parents=True)
            if i % 3 == 0:
                deep = folder / "share" / "icons" / "hicolor"
                deep.mkdir(parents=True)
                for j in range(3):
                    Image.new("RGB", (16, 16), (40 * i, 20 * j, 90)).save(deep / f"icon{j}.png")
            if i % 3 == 1:
                (folder / "notes.txt").write_text("not an image\n")
                (folder / "settings.conf").write_text("x = 1\n")
    return root


@pytest.fixture
def decoding(monkeypatch) -> dict[str, int]:
    """Counts, in this process, every image opened (Pillow, the doctor's per-file check) and every class folder
    walked to the bottom (the survey's deep walk)."""
    calls = {"opened": 0, "inspected": 0, "walked": 0}
    real_open, real_inspect, real_walk = Image.open, doctor_inspect.inspect_file, folders._walk_class

    def counting(key, real):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Image, "open", counting("opened", real_open))
    monkeypatch.setattr(doctor_inspect, "inspect_file", counting("inspected", real_inspect))
    monkeypatch.setattr(folders, "_walk_class", counting("walked", real_walk))
    return calls


# --- 8. a root that is no dataset ---------------------------------------------------------------------------------
def test_train_py_refuses_a_root_that_is_no_dataset_in_one_line(tmp_path):
    root = not_a_dataset(tmp_path / "fake_root")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "dataset=folder", f"dataset.root={root}",
                           "debug=tiny", "logger=none"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0] == (f"error: dataset.root={root}: expected train/ and val/ folders of class folders, or class "
                         "folders of images; found 8 folders (bin, boot, etc, home, opt, ...), none with images "
                         "directly inside. Point dataset.root at the folder whose subfolders are the classes.")


@pytest.mark.parametrize("split", [None, "train"])
def test_nothing_is_walked_or_decoded_before_the_refusal(tmp_path, split, decoding, monkeypatch, capsys):
    root = not_a_dataset(tmp_path / "fake_root", split)
    found = "train/ with 8 folders" if split else "8 folders"
    code, err, _ = run_script("train.py", "dataset=folder", f"dataset.root={root}", "debug=tiny", "logger=none",
                              cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and f"found {found} (bin, boot, etc, home, opt, ...), none with images directly" in err, err
    # the datamodule a notebook builds: the same one line, before the doctor
    with pytest.raises(DatasetLayoutError, match=f"found {found} .*none with images directly inside") as refused:
        FolderDataModule(str(root)).scan()
    assert "\n" not in str(refused.value)
    # the doctor: the same finding, nothing decoded, exit 1 (its docstring: errors)
    assert doctor_main([str(root), "--no-cache"]) == 1
    out = capsys.readouterr().out
    assert "[not_a_dataset]" in out and "Checked 0 image files" in out and "NOT READY" in out
    report = diagnose(root, cache_dir=tmp_path / "cache")
    assert [f.code for f in report.errors] == ["not_a_dataset"] and report.files_checked == 0
    assert not (tmp_path / "cache").exists()  # no cache opened for a root that is no dataset
    assert decoding == {"opened": 0, "inspected": 0, "walked": 0}


def test_doctor_command_refuses_a_root_that_is_no_dataset(tmp_path):
    root = not_a_dataset(tmp_path / "fake_root")
    proc = subprocess.run([sys.executable, "-m", "transferlab.data.doctor", str(root), "--no-cache"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "[not_a_dataset]" in proc.stdout and "Checked 0 image files" in proc.stdout


def test_a_dataset_passes_the_shape_check_after_its_first_image(tmp_path):
    """The check stops at the first image directly inside a class folder; what it passes is surveyed in full, so
    an empty class among real ones is still the survey's (named) error."""
    root = make_folder(tmp_path / "d", {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    assert folders.layout_problem(root) is None and folders.layout_problem(root / "train") is None
    (root / "train" / "wasp").mkdir()
    assert folders.layout_problem(root) is None
    with pytest.raises(DatasetLayoutError, match="wasp"):
        folders.scan_folder(root)


# --- 9. a head fit that cannot cross-validate ---------------------------------------------------------------------
def test_frozen_fit_with_a_one_image_class_says_cv_was_skipped_and_records_it(tmp_path, caplog, capsys):
    from transferlab.tasks.train import train

    data = make_folder(tmp_path / "data", {"train": {"ant": 12, "bee": 1}, "val": {"ant": 4, "bee": 2}})
    grid = sorted(HeadFitConfig().l2, reverse=True)
    middle = grid[len(grid) // 2]
    with caplog.at_level(logging.WARNING):
        summary = train(compose_config(tmp_path, shrink(data, strategy="frozen", logger="none")))
    why = "class 'bee' has 1 training image, fewer than the 2 that 2 folds need"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())["head_fit"]
    for report in (summary["head_fit"], on_disk):
        assert report["folds"] == 0 and report["cv_skipped"] == why and report["l2"] == middle
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "cross-validation" in r.getMessage()]
    assert warned == [f"Head fit: cross-validation skipped ({why}); l2 {middle:g} used (the middle of "
                      "strategy.head_fit.l2), not chosen."]
    assert f"Head fit: no cross-validation ({why}); l2 {middle:g} used, not chosen" in capsys.readouterr().out


# --- 10. the formats Pillow reads, and the files that are not images -----------------------------------------------
def test_predict_reads_jfif_tga_ico_and_names_the_files_it_skips(tmp_path, trained_run, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(sorted(Path(trained_run["data"], "val", "bee").glob("*.png"))[0]) as im:
        picture = im.convert("RGB")
    picture.save(photos / "a.jfif", "JPEG")
    picture.save(photos / "b.tga")
    picture.save(photos / "c.ico")
    (photos / "notes.txt").write_text("not an image\n")
    (photos / "report.doc").write_bytes(b"\xd0\xcf\x11\xe0 not an image either")
    (photos / "scan.xyz").write_bytes(b"\x00\x01\x02")
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # OS litter: skipped without a word
    out = tmp_path / "preds.csv"
    code, err, stdout = run_script("predict.py", f"ckpt_path={trained_run['run_dir']}", f"inputs={photos}",
                                   f"output={out}", f"paths.root_dir={tmp_path}", "progress=false", "device=cpu",
                                   cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err[-3000:]
    assert [Path(r["file"]).name for r in csv.DictReader(out.open())] == ["a.jfif", "b.tga", "c.ico"]
    warned = [line for line in (stdout + err).splitlines() if "not images Pillow can read" in line]
    assert len(warned) == 1, stdout + err
    assert warned[0].endswith("skipped 3 file(s) that are not images Pillow can read: notes.txt, report.doc, scan.xyz")
    assert "0 skipped" in stdout  # none of the images failed to decode


def test_training_scans_the_same_formats_and_decodes_every_file_it_takes(tmp_path):
    """One list of image extensions (Pillow's registry, `folders.image_extensions`) for predict and the training
    scan; formats Pillow registers but cannot decode here stay ignored files, so training only takes files it can
    decode."""
    extensions = folders.image_extensions()
    assert {".jpg", ".png", ".jfif", ".tga", ".ico", ".jp2", ".psd"} <= extensions
    assert not {".h5", ".eps", ".mpg", ".pdf", ".txt"} & extensions
    root = make_folder(tmp_path / "d", {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    for i, ext in enumerate([".jfif", ".tga", ".ico"]):
        with Image.open(root / "train" / "ant" / "000.png") as im:
            im.convert("RGB").save(root / "train" / "ant" / f"extra{i}{ext}", "JPEG" if ext == ".jfif" else None)
    (root / "train" / "bee" / "features.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    report = diagnose(root)
    assert report.counts["train"] == {"ant": 5, "bee": 2} and report.bad_files == []
    assert {i.path for i in report.finding("ignored_files").items} == {"train/bee/features.h5"}


@pytest.mark.parametrize("module", ["transferlab.config", "transferlab.data.folders"])
def test_the_extension_list_keeps_the_light_modules_light(module):
    code = f"import sys, {module}; print(sorted(m for m in ('PIL', 'torch') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
