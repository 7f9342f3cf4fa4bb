"""LightningDataModule over a train/val image-folder tree."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from transferlab.config.schema import DatasetConfig
from transferlab.data.curation import curate
from transferlab.data.dataset import ImageSamples
from transferlab.data.decoded import DecodedImages
from transferlab.data.doctor import BAD_FILE_CODES, BadFilesError, DatasetReport, Finding, diagnose
from transferlab.data.folders import DatasetLayoutError, FolderSplits, check_layout, fingerprint, kfold_split
from transferlab.data.images import DEFAULT_MAX_PIXELS
from transferlab.data.input_spec import InputSpec
from transferlab.data.loaders import training_loader
from transferlab.data.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)



def default_num_workers() -> int:
    """One worker per spare core, at most 8; none on a machine of 2 cores or fewer.

    Measured on 2 CPU cores (digits, batch 16): a loader worker competes with torch's compute threads and
    made epochs ~20% slower than loading in the main process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def default_eval_batch_size() -> int:
    """64 on a GPU; 8 on a CPU, where small batches stay in cache.

    Measured on 2 CPU cores, EfficientNet-Lite0 at 224 px, channels_last, forward over 398 images: batch 4
    6.4 s, 8 7.7 s, 16 10.9 s, 32 14.2 s, 64 21.6 s (bench/README: Performance)."""
    return 64 if torch.cuda.is_available() else 8


class FolderDataModule(L.LightningDataModule):
    """`root/train/<class>/*` + `root/val/<class>/*`, or `root/<class>/*` split by `val_fraction`; or, with
    `folds=K`, fold `fold` of a stratified K-fold split of the train folder (`cv_pool="all"`: train + val) as
    validation and the other folds as training (`folders.kfold_split`).

    Class names and the label mapping come from the training folder. Transforms follow the backbone's
    `InputSpec`, which the training task sets with `set_input_spec` once the model exists. What callbacks
    read (`class_names`, `val_files`, `report`, `report_dict()`) `CachedFeatureDataModule` passes through.

    The first `scan()` runs the dataset doctor (`transferlab.data.doctor`): layout errors stop here, before
    any model is built (a root that is no dataset by its shape, `folders.layout_problem`, before the doctor:
    one line, nothing decoded); unreadable or over-size files (`max_pixels`) are skipped with a warning listing each
    (`on_bad_file="skip"`) or stop here with the list (`"error"`). The report is kept as `self.report`. The
    policy holds wherever a file is decoded later (decoding once, feature extraction, mid-training), for a file
    that changed since the scan; `skipped_files()` lists every file left out.
    `cache_dir` caches the doctor's per-file checks (None: no cache).
    """

    def __init__(
        self,
        root: str,
        name: str = "folder",
        batch_size: int = 32,
        eval_batch_size: int | str | None = "auto",
        num_workers: int | str = "auto",
        val_fraction: float = 0.2,
        split_seed: int = 0,
        prepare: Callable[[str], Any] | None = None,
        input: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        pin_memory: bool | str = "auto",
        on_bad_file: str = "skip",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        cache_dir: str | None = None,
        cache_images: bool | str = False,
        cache_features: bool | str = "auto",
        feature_views: int = 0,
        folds: int | None = None,
        fold: int = 0,
        cv_pool: str = "train",
        balance: str = "none",
        exclude: str | None = None,
        relabel: str | None = None,
        quality: str = "deep",
    ) -> None:
        super().__init__()
        # the same checks as a composed config's (the schema's own, one home), for a datamodule built in code
        DatasetConfig(name=name, root=os.fspath(root), batch_size=batch_size, eval_batch_size=eval_batch_size,
                      num_workers=num_workers, val_fraction=val_fraction, split_seed=split_seed,
                      folds=folds, fold=fold, cv_pool=cv_pool, pin_memory=pin_memory, cache_features=cache_features,
                      feature_views=feature_views, cache_images=cache_images, on_bad_file=on_bad_file,
                      max_pixels=max_pixels, balance=balance, cache_dir=cache_dir, input=dict(input or {}),
                      augment=dict(augment or {}), exclude=exclude, relabel=relabel, quality=quality)
        self.quality = quality  # read by the training task: the deep check on its features (transferlab.quality)
        self.exclude, self.relabel = exclude, relabel  # the user's corrections (transferlab.data.curation)
        self.curation: dict[str, Any] = {}
        cache_images = "memory" if cache_images is True else cache_images
        self.balance = balance  # sampler: here (training_loader); loss: the model's class weights (tasks/train)
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.name = name
        self.batch_size = batch_size
        if eval_batch_size == "auto":
            eval_batch_size = default_eval_batch_size()
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = default_num_workers() if num_workers == "auto" else int(num_workers)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.prepare = prepare
        self.input_overrides = dict(input or {})
        self.augment = dict(augment or {})
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.on_bad_file = on_bad_file
        self.max_pixels = int(max_pixels) if max_pixels else DEFAULT_MAX_PIXELS
        self.cache_dir = cache_dir
        self.cache_images = cache_images  # decode each image once, keep uint8 tensors (transferlab.data.decoded)
        # Read by the training task: train a frozen backbone's head on cached features (transferlab.data.features)
        self.cache_features = cache_features
        self.feature_views = int(feature_views)
        # k-fold cross-validation: fold `fold` of a `folds`-fold split of the pool is the validation set
        self.folds = None if folds is None else int(folds)
        self.fold = int(fold)
        self.cv_pool = cv_pool
        self.input_spec: InputSpec | None = None
        self.splits: FolderSplits | None = None
        self.report: DatasetReport | None = None
        self.skipped: list[str] = []  # bad files left out of training by the doctor

    # --- discovery ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare(self.root)

    def scan(self) -> FolderSplits:
        """Run the doctor once and apply the policies; the samples exclude every bad file."""
        if self.splits is None:
            check_layout(self.root)  # a root that is no dataset: one line, before any walk or decode
            report = diagnose(self.root, self.val_fraction, self.split_seed,
                              crop_size=self.input_overrides.get("image_size"), max_pixels=self.max_pixels,
                              cache_dir=self.cache_dir)
            self.report = report
            log.info("%s", report.format(limit=10))
            hint = f"Full report: python -m transferlab.data.doctor {self.root}"
            if report.layout_errors or report.splits is None:
                raise DatasetLayoutError(f"{self.root} cannot be trained on:\n"
                                         + "\n".join(_lines(report, report.layout_errors)) + f"\n{hint}")
            if report.bad_files:
                bad = [f for f in report.errors if f.code in BAD_FILE_CODES]
                listing = "\n".join(_lines(report, bad, messages=False))
                if self.on_bad_file == "error":
                    raise BadFilesError(
                        f"{len(report.bad_files)} bad file(s) in {self.root} (dataset.on_bad_file=error); fix or "
                        f"remove them, or set dataset.on_bad_file=skip to train without them:\n{listing}\n{hint}")
                log.warning("Skipping %d bad file(s) (dataset.on_bad_file=skip):\n%s",
                            len(report.bad_files), listing)
            for finding in report.warnings if self.quality != "off" else ():
                if finding.code != "tiny":  # set_input_spec re-checks it against the model's real crop size
                    _warn(finding)
            self.skipped = list(report.bad_files)
            splits, self.curation = curate(report.splits, self.root, self.exclude, self.relabel)
            for what, applied in self.curation.items():
                log.info("dataset.%s: %d path(s) from %s (sha256 %s)", what, applied["count"], applied["file"],
                         applied["sha256"][:12])
            log.info(
                "%s: %d classes, %d train / %d val images (%s)",
                self.root, len(splits.class_names), len(splits.train), len(splits.val), splits.layout,
            )
            if self.folds is not None:
                # Group byte-identical files by the content hash the doctor already recorded for every file.
                groups = {p: f["sha256"] for p, f in report.facts.items() if f.get("sha256")}
                splits = kfold_split(splits, self.folds, self.fold, self.split_seed, self.cv_pool, groups)
                log.info("fold %d/%d: %d train / %d val (dataset.cv_pool=%s, split_seed %d)", self.fold,
                         self.folds, len(splits.train), len(splits.val), self.cv_pool, self.split_seed)
            self.splits = splits
        return self.splits

    def report_dict(self) -> dict[str, Any]:
        """The doctor's report plus what this run did with it (written as dataset_report.json)."""
        self.scan()
        assert self.report is not None and self.splits is not None
        d = self.report.to_dict()
        d["on_bad_file"] = self.on_bad_file
        d.update(self.curation)  # dataset.exclude / dataset.relabel: file, count, sha256
        d["skipped"] = [self.report.rel(p) for p in self.skipped_files()]
        sets = [getattr(self, name, None) for name in ("train_set", "val_set")]
        d["samples"] = {"train": len(sets[0].samples if sets[0] is not None else self.splits.train),
                        "val": len(sets[1].samples if sets[1] is not None else self.splits.val)}
        if self.splits.fold is not None:  # the doctor's counts are of the folders; samples are the fold's
            d["cv"] = {"fold": self.fold, "folds": self.folds, "pool": self.cv_pool, "seed": self.split_seed}
        return d

    def skipped_files(self) -> list[str]:
        """Every file left out so far (dataset.on_bad_file=skip): by the doctor's scan, when decoding images
        once (cache_images), and mid-training in this process (loader worker processes keep their own)."""
        later = [p for name in ("train_set", "val_set") for p in getattr(getattr(self, name, None), "skipped", [])]
        return list(dict.fromkeys([*self.skipped, *later]))

    @property
    def class_names(self) -> list[str]:
        return self.scan().class_names

    @property
    def train_labels(self) -> list[int]:
        """The training samples' class indices (class weights, balanced sampling)."""
        return [s.label for s in self.scan().train]

    def sample_weights(self, labels: list[int]) -> torch.Tensor | None:
        """`balance=sampler`: each row drawn with probability 1 / (classes * its class's count), else None."""
        if self.balance != "sampler":
            return None
        counts = torch.bincount(torch.as_tensor(labels))
        return 1.0 / counts[torch.as_tensor(labels)].double()

    @property
    def val_files(self) -> list[str]:
        """Validation image paths by dataset index (the order of `val_dataloader()`'s dataset, which leaves out
        the files decoding once could not read)."""
        val_set = getattr(self, "val_set", None)
        return [s.path for s in (val_set.samples if val_set is not None else self.scan().val)]

    @property
    def fingerprint(self) -> dict[str, str | int]:
        """The train and val file list and labels, hashed, with their counts (`folders.fingerprint`): kept in
        checkpoints, so a resume on other data is refused or warned about."""
        return fingerprint(self.scan(), self.root)

    def set_input_spec(self, spec: InputSpec) -> None:
        self.input_spec = spec
        if self.report is not None:  # the crop size is known now: flag images smaller than it
            tiny = self.report.check_min_size(spec.image_size)
            if tiny and self.quality != "off":
                _warn(tiny)

    # --- datasets and loaders ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.input_spec is None:
            raise RuntimeError("FolderDataModule.set_input_spec(model.input_spec) must be called before setup.")
        splits = self.scan()
        train_tf, val_tf = train_transform(self.input_spec, **self.augment), eval_transform(self.input_spec)
        if self.cache_images:
            if getattr(self, "_decoded_for", None) != self.input_spec:
                decoded = {"short_side": self.input_spec.resize_size, "max_pixels": self.max_pixels,
                           "cache_dir": self.cache_dir if self.cache_images == "disk" else None,
                           "on_bad_file": self.on_bad_file}
                self.train_set = DecodedImages(splits.train, train_tf, **decoded)
                self.val_set = DecodedImages(splits.val, val_tf, **decoded)
                self._decoded_for = self.input_spec
            return
        policy = {"on_bad_file": self.on_bad_file, "max_pixels": self.max_pixels}
        self.train_set = ImageSamples(splits.train, train_tf, **policy)
        self.val_set = ImageSamples(splits.val, val_tf, **policy)

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        settings = {
            "batch_size": batch_size,
            # A last training batch of one image breaks BatchNorm; drop the remainder (it is reshuffled).
            "drop_last": shuffle and len(dataset) > batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": self.pin_memory,
        }
        if shuffle:
            return training_loader(dataset, seed=self.split_seed, trainer=self.trainer,
                                   weights=self.sample_weights(self.train_labels), **settings)
        return DataLoader(dataset, shuffle=False, **settings)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)


def _warn(finding: Finding, shown: int = 5) -> None:
    files = ", ".join(i.path for i in finding.items[:shown]) + (" ..." if len(finding.items) > shown else "")
    log.warning("Dataset doctor: [%s] %s Files: %s", finding.code, finding.message, files)


def _lines(report: DatasetReport, findings: list[Finding], messages: bool = True) -> list[str]:
    """Findings as indented lines naming each file by its full path (copy-pasteable)."""
    out = []
    for f in findings:
        if messages:
            out.append(f"  [{f.code}] {f.message}")
        out += [f"    {os.path.join(report.root, i.path)}" + (f": {i.detail}" if i.detail else "") for i in f.items]
    return out
