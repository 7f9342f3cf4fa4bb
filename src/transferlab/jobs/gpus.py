"""Parallel sweeps on several GPUs: with a parallel joblib launcher and `trainer.devices: auto`, job n trains on
GPU n % (number of GPUs) instead of every job asking for all of them. Torch is imported only when it matters."""

from __future__ import annotations

import logging

from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def assign_gpu(cfg: DictConfig, hydra_cfg: DictConfig | None) -> None:
    """With a parallel launcher (joblib, n_jobs > 1 or negative = all cores), several CUDA devices and
    `trainer.devices: auto`, give job n the GPU n % device_count (else every concurrent job takes them all).
    Jobs are numbered in launch order and joblib starts them in that order, so n_jobs <= number of GPUs
    consecutive jobs land on distinct GPUs; a long job can still share its GPU with job n + device_count."""
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN or not _parallel_launcher(hydra_cfg):
        return
    trainer = cfg.get("trainer")
    if trainer is None or str(trainer.get("devices")) != "auto" or str(trainer.get("accelerator")) not in (
            "auto", "gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    count = torch.cuda.device_count()
    gpu = int(hydra_cfg.job.num) % count
    with open_dict(cfg):
        cfg.trainer.accelerator = "gpu"
        cfg.trainer.devices = [gpu]
    log.info("Parallel sweep on %d GPUs: job %d trains on GPU %d (trainer.devices=[%d])", count,
             hydra_cfg.job.num, gpu, gpu)


def _parallel_launcher(hydra_cfg: DictConfig) -> bool:
    launcher = hydra_cfg.get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return False
    n_jobs = launcher.get("n_jobs")
    return n_jobs is None or int(n_jobs) > 1 or int(n_jobs) < 0  # joblib: -1 = one per core
