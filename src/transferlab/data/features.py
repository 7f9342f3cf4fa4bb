"""Frozen-feature cache: run a frozen backbone over the data once, then train the head on the tensors (the
`fit_head` phase on `fit_arrays()`, or a `fit` phase on minibatches of them).

The tutorial loop re-runs the frozen backbone over every image every epoch; its output never changes, so
transferlab computes it once and keys it on everything that changes it (backbone, weights identity, input
spec and augmentation, each file's content digest and label in order, number of views, seed). A later run or
sweep job with the same key loads the file instead. Digests come from the cache folder's file index
(`transferlab.data.identity`): an unchanged file is only stat'ed, a file replaced by another of the same size
with its mtime put back changes the key, and a dataset copied elsewhere (`rsync -a`) keeps it. Training images
can be cached as K augmented views so the head still sees augmentation; validation features always use the
deterministic eval transform.

`dataset.on_bad_file` applies here too: a file that cannot be decoded during extraction (changed since the
dataset doctor checked it) stops the run naming it (`error`), or is left out (`skip`): its row is dropped from
the features and labels, and the entry records which rows were left out, so a run loading it reports them too.
A cache folder that cannot be written (read-only, full disk) is warned about once and the features are kept
in memory (`transferlab.files.save_or_warn`).

Each entry stores the sha256 of every tensor it holds, all verified on every load (features are small: hashing
runs at over 1 GB/s). A corrupt entry is named in one warning, deleted and rebuilt; the entry is built under a
per-key file lock, so two sweep jobs needing it build it once (`transferlab.files.load_or_build`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from transferlab.data.dataset import RowPerFile
from transferlab.data.folders import Sample
from transferlab.data.identity import FileIndex
from transferlab.data.loaders import training_loader
from transferlab.data.transforms import eval_transform, train_transform
from transferlab.files import CorruptEntry, atomic_save, digest, load_or_build, save_or_warn, sha256_tensor

log = logging.getLogger(__name__)


def _weights_identity(weights: Any, index: FileIndex) -> Any:
    """A named weight is its own identity; a local file is identified by its content digest."""
    if isinstance(weights, str) and os.path.isfile(weights):
        return ["file", index.digest(weights)]
    return weights


def file_contents(samples: Sequence[Sample], index: FileIndex) -> list[tuple[str | None, int]]:
    """(content digest, label) per sample, in order: what the features of a file list depend on (None: the
    file cannot be read now)."""
    return list(zip(index.digests([s.path for s in samples]), [s.label for s in samples], strict=True))


def cache_key(backbone_cfg: dict, input_spec: dict, augment: dict, train: Sequence[Sample],
              val: Sequence[Sample], views: int, seed: int, index: FileIndex) -> str:
    payload = {
        "version": 3,  # 2: entries carry the sha256 of their tensors; 3: files by content, skipped rows stored
        "backbone": {k: v for k, v in backbone_cfg.items() if k != "weights"},
        "weights": _weights_identity(backbone_cfg.get("weights"), index),
        "input_spec": input_spec,
        "augment": augment if views > 0 else None,
        "views": views,
        "seed": seed if views > 0 else None,
        "train": file_contents(train, index),
        "val": file_contents(val, index),
    }
    return digest(payload)


def _thread_batches(dataset: Dataset, batch_size: int, threads: int = 2, batches_per_chunk: int = 16):
    """Batches of `dataset`: each chunk of batches is decoded by `threads` threads, then handed out.

    Written by hand because torch's DataLoader has only process workers, and on a 2-core machine a worker
    process slows the backbone down (README: Speed). PIL releases the GIL while decoding, so threads decode in
    parallel; a chunk is decoded *between* forward passes, keeping the decoder off the cores torch's threads
    use. Random transforms need `threads=1`: one thread draws from the RNG in item order, so the seed holds."""
    chunk = batch_size * batches_per_chunk
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(dataset), chunk):
            items = list(pool.map(dataset.__getitem__, range(start, min(start + chunk, len(dataset)))))
            for i in range(0, len(items), batch_size):
                yield default_collate(items[i:i + batch_size])


@torch.no_grad()
def extract(backbone: torch.nn.Module, dataset: Dataset, batch_size: int, num_workers: int, desc: str,
            device: torch.device, channels_last: bool = False,
            threads: int = 2, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of every item of `dataset` (items: (image, readable), see `RowPerFile`), in order,
    with a progress bar (unless not `progress`), and which rows were readable (the others' features are of a
    blank image: drop them).

    `num_workers=0` decodes in `threads` threads, chunk by chunk (see `_thread_batches`)."""
    was_training = backbone.training
    backbone.eval()
    if num_workers > 0:
        batches = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    else:
        batches = _thread_batches(dataset, batch_size, threads)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    chunks, readable = [], []
    total = -(-len(dataset) // batch_size)
    for images, ok in tqdm(batches, total=total, desc=desc, unit="batch", leave=False, disable=not progress):
        chunks.append(backbone(images.to(device, memory_format=layout)).float().cpu())
        readable.append(torch.as_tensor(ok, dtype=torch.bool))
    backbone.train(was_training)
    if not chunks:
        return torch.empty(0), torch.empty(0, dtype=torch.bool)
    return torch.cat(chunks), torch.cat(readable)


FEATURE_TENSORS = ("train", "train_labels", "val", "val_labels")
SKIPPED_TENSORS = ("train_skipped", "val_skipped")  # indices into the file lists of the rows left out


def load_features(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A feature cache entry, each tensor checked against the sha256 stored with it; raises if any differs."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stored, dict) or not isinstance(stored.get("sha256"), dict):
        raise CorruptEntry("no checksums in the file")
    data = {}
    for name in (*FEATURE_TENSORS, *SKIPPED_TENSORS):
        tensor = stored.get(name)
        if not isinstance(tensor, torch.Tensor):
            raise CorruptEntry(f"{name!r} is missing")
        if sha256_tensor(tensor) != stored["sha256"].get(name):
            raise CorruptEntry(f"checksum mismatch in {name!r}")
        data[name] = tensor
    return data


class _ViewDataset(Dataset):
    """Item i is (features of a random one of its K views, label): augmentation without re-running the CNN."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features  # (views, N, D)
        self.labels = labels

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, i: int):
        view = int(torch.randint(self.features.shape[0], ()))
        return self.features[view, i], self.labels[i]


class CachedFeatureDataModule(L.LightningDataModule):
    """Serves cached backbone features in place of images for a frozen backbone."""

    def __init__(self, images: L.LightningDataModule, backbone: torch.nn.Module, backbone_cfg: dict,
                 cache_dir: str, views: int = 0, seed: int = 0, extract_batch_size: int | None = None,
                 channels_last: bool = False, progress: bool = True) -> None:
        super().__init__()
        self.images = images
        self.progress = progress  # the extraction's progress bars
        self.backbone = backbone
        self.backbone_cfg = backbone_cfg
        self.cache_dir = Path(cache_dir)
        self.views = views
        self.seed = seed
        self.extract_batch_size = extract_batch_size or images.eval_batch_size
        self.channels_last = channels_last  # the backbone is already NHWC; feed it NHWC batches
        self.cache_path: Path | None = None
        self.cache_hit = False
        self.skipped: list[str] = []  # files left out while extracting (dataset.on_bad_file=skip)
        self._val_rows: list[str] | None = None  # the val files behind the val rows
        self._train_rows: list[str] = []  # the training files behind the train rows

    # --- what callbacks read: the image datamodule's, passed through (same names as FolderDataModule) -------
    @property
    def class_names(self) -> list[str]:
        return self.images.class_names

    @property
    def val_files(self) -> list[str]:
        """Validation image paths by dataset index: the cached val tensors follow the same file order, less the
        files left out while extracting."""
        return self.images.val_files if self._val_rows is None else list(self._val_rows)

    @property
    def train_files(self) -> list[str]:
        """Training image paths by row of `train_features` (the files left out while extracting are not rows)."""
        return self._train_rows

    @property
    def report(self) -> Any:
        """The dataset doctor's report of the images behind the features (None until scanned)."""
        return self.images.report

    def report_dict(self) -> dict[str, Any]:
        """The images' report, with the files left out while extracting added to `skipped` and the samples
        counted as the feature rows."""
        d = self.images.report_dict()
        if getattr(self, "train_features", None) is not None:
            rel = self.images.report.rel if self.images.report is not None else str
            d["skipped"] = list(dict.fromkeys([*d.get("skipped", []), *(rel(p) for p in self.skipped)]))
            d["skipped_while_extracting"] = [rel(p) for p in self.skipped]
            d["samples"] = {"train": int(self.train_features.shape[1]), "val": int(self.val_features.shape[0])}
        return d

    def skipped_files(self) -> list[str]:
        """Every file this run left out (dataset.on_bad_file=skip): the images' and those met while extracting."""
        before = self.images.skipped_files() if hasattr(self.images, "skipped_files") else []
        return list(dict.fromkeys([*before, *self.skipped]))

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_features", None) is not None:
            return
        splits = self.images.scan()
        spec = self.images.input_spec
        index = FileIndex(self.cache_dir)
        key = cache_key(self.backbone_cfg, spec.to_dict(), self.images.augment, splits.train, splits.val,
                        self.views, self.seed, index)
        index.save()
        self.cache_path = self.cache_dir / "features" / f"{key}.pt"

        def build(path: Path) -> dict[str, torch.Tensor]:
            data = self._compute(splits, spec)
            if cache_key(self.backbone_cfg, spec.to_dict(), self.images.augment, splits.train, splits.val,
                         self.views, self.seed, index) != key:  # stat only, unless a file changed meanwhile
                log.warning("Files changed while their features were extracted: not caching them (%s)", path)
                return data
            entry = {**data, "sha256": {name: sha256_tensor(t) for name, t in data.items()}}
            nbytes = sum(t.numel() * t.element_size() for t in data.values())
            if save_or_warn(lambda: atomic_save(entry, path), path, "feature cache", nbytes):
                log.info("Cached features in %s", path)
            return data

        data, self.cache_hit = load_or_build(self.cache_path, load_features, build, "feature cache")
        index.save()
        if self.cache_hit:
            log.info("Loaded cached features %s", self.cache_path)
        self.train_features, self.train_labels = data["train"], data["train_labels"]
        self.val_features, self.val_labels = data["val"], data["val_labels"]
        left_out = {name: set(data[name].tolist()) for name in SKIPPED_TENSORS}
        self.skipped = ([s.path for i, s in enumerate(splits.train) if i in left_out["train_skipped"]]
                        + [s.path for i, s in enumerate(splits.val) if i in left_out["val_skipped"]])
        self._val_rows = [s.path for i, s in enumerate(splits.val) if i not in left_out["val_skipped"]]
        self._train_rows = [s.path for i, s in enumerate(splits.train) if i not in left_out["train_skipped"]]
        if self.skipped and self.cache_hit:
            log.warning("The cached features leave out %d file(s) that could not be read when they were "
                        "extracted (dataset.on_bad_file=skip): %s", len(self.skipped), ", ".join(self.skipped))

    def _compute(self, splits, spec) -> dict[str, torch.Tensor]:
        """The features of every readable file, each split's rows left out (dataset.on_bad_file=skip) and their
        indices."""
        device = next(self.backbone.parameters()).device
        workers = self.images.num_workers
        bs = self.extract_batch_size
        # the images' own policy (a datamodule of another kind: stop on a bad file)
        policy = {"on_bad_file": getattr(self.images, "on_bad_file", "error"),
                  "max_pixels": getattr(self.images, "max_pixels", None)}
        if self.views > 0:
            generator_state = torch.get_rng_state()
            torch.manual_seed(self.seed)
            augmented = RowPerFile(splits.train, train_transform(spec, **self.images.augment), **policy)
            views = [
                extract(self.backbone, augmented, bs, workers, f"features: train view {v + 1}/{self.views}", device,
                        # random crops: one thread keeps the seed's draws
                        self.channels_last, threads=1, progress=self.progress)
                for v in range(self.views)
            ]
            torch.set_rng_state(generator_state)
            train = torch.stack([f for f, _ in views])
            train_ok = torch.stack([ok for _, ok in views]).all(dim=0)
        else:
            train, train_ok = extract(self.backbone, RowPerFile(splits.train, eval_transform(spec), **policy), bs,
                                      workers, "features: train", device, self.channels_last, progress=self.progress)
            train = train[None]
        val, val_ok = extract(self.backbone, RowPerFile(splits.val, eval_transform(spec), **policy), bs, workers,
                              "features: val", device, self.channels_last, progress=self.progress)
        train_labels = torch.tensor([s.label for s in splits.train], dtype=torch.int64)
        val_labels = torch.tensor([s.label for s in splits.val], dtype=torch.int64)
        return {
            "train": train[:, train_ok] if len(train_ok) else train,
            "train_labels": train_labels[train_ok] if len(train_ok) else train_labels,
            "val": val[val_ok] if len(val_ok) else val,
            "val_labels": val_labels[val_ok] if len(val_ok) else val_labels,
            "train_skipped": (~train_ok).nonzero().flatten(),
            "val_skipped": (~val_ok).nonzero().flatten(),
        }

    def fit_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every training row: (features (views * N, D), labels, the image each row comes from)."""
        views, n, dim = self.train_features.shape
        return (self.train_features.reshape(views * n, dim), self.train_labels.repeat(views),
                torch.arange(n).repeat(views))

    def train_dataloader(self) -> DataLoader:
        ds = _ViewDataset(self.train_features, self.train_labels)
        return training_loader(ds, seed=self.seed, trainer=self.trainer, batch_size=self.images.batch_size,
                               drop_last=len(ds) > self.images.batch_size,
                               weights=self.images.sample_weights(self.train_labels.tolist()))

    def val_dataloader(self) -> DataLoader:
        ds = torch.utils.data.TensorDataset(self.val_features, self.val_labels)
        return DataLoader(ds, batch_size=1024, shuffle=False)  # feature vectors: batch size changes nothing but speed
