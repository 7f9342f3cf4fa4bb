"""The LightningModule: a swappable backbone, a new head, and a transfer strategy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from transferlab.data.input_spec import InputSpec
from transferlab.models.strategy import param_groups, strategy_from_config


class TransferClassifier(L.LightningModule):
    """Backbone + head + cross-entropy, trained under a strategy.

    Every constructor argument is plain data (dicts, lists, strings) and is saved as a hyperparameter, so a
    checkpoint alone rebuilds the model, knows its class names and its input transform (see `load`).
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        head: dict[str, Any],
        strategy: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None,
        class_names: list[str],
        input_overrides: dict[str, Any] | None = None,
        input_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"Need at least 2 classes to train a classifier, got {class_names}.")
        strategy_obj = strategy_from_config(strategy)
        if not strategy_obj.pretrained:
            backbone = {**backbone, "weights": None}
        built = instantiate(backbone, _convert_="all")
        if input_spec is None:
            spec = built.input_spec.override(**(input_overrides or {}))
            input_spec = spec.to_dict()
        self.save_hyperparameters(logger=False)
        self.hparams["input_spec"] = input_spec
        self.input_spec = InputSpec.from_dict(input_spec)
        self.class_names = list(class_names)
        self.num_features = built.num_features
        self.stages = built.stages

        self.backbone = built.module
        self.features_input = False  # set by the training task when batches are cached backbone features
        self.channels_last = False  # set by the training task (cfg.channels_last): NHWC image batches
        self.head = instantiate(head, _convert_="all")(built.num_features, len(class_names))
        self.strategy = strategy_obj
        self.train_rules = self.strategy.apply(self, built.stages, epoch=0)
        self.train()  # puts frozen parts in eval mode from the start

        self.criterion = nn.CrossEntropyLoss()
        n = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume: the best so far is part of the run's state

    # --- model -------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.features_input:
            return self.head(images)
        if self.channels_last:  # the training task converted the backbone; batches follow (a no-op if NHWC)
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))

    def train(self, mode: bool = True) -> TransferClassifier:
        """Keep frozen parts in eval mode whatever Lightning switches (BN statistics must not drift)."""
        super().train(mode)
        if mode:
            for module in self.strategy.eval_modules(self):
                module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Re-derived from the epoch number alone, so a run resumed past `unfreeze_at` is unfrozen too.
        # Lightning 2.x never calls .train() itself (it restores captured modes after validation), so the
        # strategy's train/eval modes are (re)applied here as well.
        self.strategy.apply(self, self.stages, epoch=self.current_epoch)
        self.train()

    def parameter_counts(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total

    # --- steps -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        self.train_acc(logits, targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_loss.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.val_loss.update(self.criterion(logits, targets), weight=len(targets))
        self.val_acc.update(logits, targets)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.log("val/acc", acc, prog_bar=True)
        best = self.val_acc_best.compute() if self.val_acc_best.update_called else acc
        self.log("val/acc_best", best, prog_bar=False)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self(images).softmax(dim=-1)

    # --- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer)
        groups = param_groups(self, self.train_rules, base_lr=opt_cfg["lr"])
        optimizer = instantiate(opt_cfg, _convert_="all")(params=groups)
        if not self.hparams.scheduler:
            return optimizer
        sched_cfg = dict(self.hparams.scheduler)
        interval = sched_cfg.pop("interval", "epoch")
        scheduler = instantiate(sched_cfg, _convert_="all")(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["transferlab"] = {"class_names": self.class_names, "input_spec": self.input_spec.to_dict()}

    @classmethod
    def load(cls, checkpoint_path: str, map_location: str | torch.device = "cpu") -> TransferClassifier:
        """Rebuild a trained model from its checkpoint alone (no config, no download, no unpickling)."""
        ckpt = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
        hparams = dict(ckpt["hyper_parameters"])
        hparams["backbone"] = {**hparams["backbone"], "weights": None}  # the state dict carries them
        model = cls(**hparams)
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()
