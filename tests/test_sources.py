"""Dataset sources: the hymenoptera download is verified and extracted safely; digits are written once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT, make_folder
from transferlab.data import sources
from transferlab.errors import DatasetLayoutError


def _zip_of(folder, archive, extra_member=None):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"hymenoptera_data/{path.relative_to(folder).as_posix()}")
        if extra_member:
            zf.writestr(extra_member, b"x")
    return archive


@pytest.fixture
def fake_download(monkeypatch):
    """download_url that 'downloads' a local zip, as torchvision's would, without any network."""
    served = {}

    def download_url(url, root, filename=None, **kwargs):
        shutil.copy(served["zip"], f"{root}/{filename}")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", download_url)
    return served


def test_download_is_verified_by_tree_digest_and_moved_into_place(tmp_path, fake_download):
    upstream = make_folder(tmp_path / "upstream", {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1, "bees": 1}})
    fake_download["zip"] = _zip_of(upstream, tmp_path / "a.zip")
    target = tmp_path / "data" / "hymenoptera_data"
    sources.download_hymenoptera(target, "https://example.invalid/h.zip", sha256=sources.tree_digest(upstream))
    assert sorted(p.name for p in (target / "train").iterdir()) == ["ants", "bees"]
    assert sources.tree_digest(target) == sources.tree_digest(upstream)


def test_a_download_with_other_content_is_refused_and_nothing_is_left(tmp_path, fake_download):
    upstream = make_folder(tmp_path / "upstream", {"train": {"ants": 2, "bees": 2}})
    fake_download["zip"] = _zip_of(upstream, tmp_path / "a.zip")
    target = tmp_path / "data" / "hymenoptera_data"
    with pytest.raises(RuntimeError, match="does not match the expected content"):
        sources.download_hymenoptera(target, "https://example.invalid/h.zip", sha256="0" * 64)
    assert not target.exists()


def test_archive_members_escaping_the_target_are_refused(tmp_path):
    upstream = make_folder(tmp_path / "upstream", {"train": {"ants": 1}})
    archive = _zip_of(upstream, tmp_path / "evil.zip", extra_member="../../escaped.txt")
    with pytest.raises(RuntimeError, match="escapes"):
        sources.safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_offline_download_says_where_to_put_the_data(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(RuntimeError, match="dataset.root=../shared/datasets/hymenoptera_data"):
        sources.download_hymenoptera(tmp_path / "h", "https://example.invalid/h.zip")


def test_digits_are_written_once_as_an_image_folder(tmp_path):
    root = tmp_path / "digits"
    sources.write_digits(root, image_size=16)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 1797 and {p.parent.parent.name for p in files} == {"train", "val"}
    assert sorted(p.name for p in (root / "val").iterdir()) == [str(d) for d in range(10)]
    stamp = files[0].stat().st_mtime_ns
    sources.write_digits(root, image_size=16)
    assert files[0].stat().st_mtime_ns == stamp


def test_digits_refuse_to_replace_a_folder_transferlab_did_not_write(tmp_path):
    """`dataset.root=~/photos` with the default dataset=digits once replaced the photos (shutil.rmtree)."""
    root = make_folder(tmp_path / "photos", {"holiday": {"ants": 2}})
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DatasetLayoutError, match=r"did not write.*dataset=folder"):
        sources.write_digits(root, image_size=16)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert not list(tmp_path.glob(".digits-*"))  # refused before writing anything


def test_a_download_never_replaces_a_folder_of_the_users_files(tmp_path, fake_download):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetLayoutError, match="did not write"):
        sources.download_hymenoptera(root, "https://example.invalid/h.zip")
    assert (root / "notes.txt").read_text() == "keep me"


def test_an_empty_folder_is_filled(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    sources.write_digits(root, image_size=16)
    assert len(list(root.rglob("*.png"))) == 1797


@pytest.mark.slow
def test_train_py_with_the_default_dataset_on_a_users_folder_exits_2_and_deletes_nothing(tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    root = f'dataset.root="{folder.as_posix()}"'
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), root,
                           "logger=none"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset.root=")
    assert (folder / "keep.txt").read_text() == "precious"


@pytest.fixture
def fake_elpv(tmp_path, monkeypatch):
    """A stand-in for the PyPI package elpv-dataset: its data/labels.csv and greyscale cells, 4 levels."""
    import types

    import numpy as np
    from PIL import Image

    pkg = tmp_path / "pkg" / "elpv_dataset"
    (pkg / "data" / "images").mkdir(parents=True)
    rows = []
    for i in range(40):
        probability = (0.0, 0.3333333333333333, 0.6666666666666666, 1.0)[i % 4]
        name = f"images/cell{i:04d}.png"
        Image.fromarray(np.full((30, 30), 6 * i, np.uint8), mode="L").save(pkg / "data" / name)
        rows.append(f"{name}  {probability}  {'mono' if i % 2 else 'poly'}")
    (pkg / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    module = types.ModuleType("elpv_dataset")
    module.__file__ = str(pkg / "__init__.py")
    monkeypatch.setitem(sys.modules, "elpv_dataset", module)
    return pkg


def test_elpv_is_written_from_its_package_split_by_defect_level(tmp_path, fake_elpv):
    root = tmp_path / "elpv"
    sources.write_elpv(root)
    levels = sources.ELPV_CLASSES.values()
    counts = {(s, c): len(list((root / s / c).iterdir())) for s in ("train", "val") for c in levels}
    names = ("0_functional", "1_possibly_defective", "2_likely_defective", "3_defective")
    assert counts == {**{("train", c): 8 for c in names}, **{("val", c): 2 for c in names}}  # 10 a level: 25% is 2
    assert (root / "train" / "1_possibly_defective").is_dir() and not (root / "1_possibly_defective").exists()
    files = {p.name for p in root.rglob("cell*.png")}
    assert len(files) == 40  # every cell once, in one split
    before = sorted(p.stat().st_mtime_ns for p in root.rglob("*.png"))
    sources.write_elpv(root)  # written once
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*.png")) == before


def test_an_elpv_copy_with_train_and_val_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)  # the package is not even needed
    root = make_folder(tmp_path / "shared_elpv", {"train": {"0.00": 2, "1.00": 2}, "val": {"0.00": 1, "1.00": 1}})
    sources.write_elpv(root)
    assert sorted(p.name for p in root.iterdir()) == ["train", "val"]


def test_elpv_without_its_package_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    with pytest.raises(DatasetLayoutError, match="pip install elpv-dataset"):
        sources.write_elpv(tmp_path / "elpv")
    assert not (tmp_path / "elpv").exists()
