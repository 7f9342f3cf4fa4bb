"""The LightningModule: a swappable backbone, a new head, and a transfer strategy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from transferlab.config.schema import StrategyConfig
from transferlab.data.input_spec import InputSpec
from transferlab.models.backbones import create_backbone
from transferlab.models.heads import create_head
from transferlab.models.linear_fit import SourceHead
from transferlab.models.strategy import param_groups, strategy_data, strategy_from_config

# Built by the training task from the *current* config (Hydra `_partial_` targets); never read from a file.
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]

# A checkpoint's "transferlab" entry and an export's metadata: these keys, plus the version of their layout.
log = logging.getLogger(__name__)

DESCRIPTION_VERSION = 2
DESCRIPTION_KEYS = ("backbone", "head", "strategy", "class_names", "input_spec")


def batch_mixer(mix: dict[str, float], num_classes: int) -> v2.Transform | None:
    """torchvision's MixUp and/or CutMix on (images, labels) batches (each batch picks one), or None."""
    mixers = []
    if mix.get("mixup_alpha", 0.0) > 0:
        mixers.append(v2.MixUp(alpha=float(mix["mixup_alpha"]), num_classes=num_classes))
    if mix.get("cutmix_alpha", 0.0) > 0:
        mixers.append(v2.CutMix(alpha=float(mix["cutmix_alpha"]), num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


class TransferClassifier(L.LightningModule):
    """Backbone + head + cross-entropy, trained under a strategy.

    The model is described by plain data (`backbone`, `head`, `strategy`, `class_names`, `input_spec`), saved
    as hyperparameters, so a checkpoint alone rebuilds it through the registries (`transferlab.models.checkpoint`).
    How to train it (optimizer, scheduler, memory layout, compilation) is not part of the model: the training
    task passes it in from its config, and a model loaded from a file has none until it is given one.

    It knows nothing of phases: a head trained on cached features (`transferlab.training.fit_head`) is just its
    head's weights, and `head_fit_report` the record of how they were found, carried by its checkpoints.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        head: dict[str, Any],
        strategy: dict[str, Any] | StrategyConfig,
        class_names: list[str],
        input_spec: dict[str, Any] | None = None,
        input_overrides: dict[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool = False,
        label_smoothing: float = 0.0,
        mix: dict[str, float] | None = None,
        class_weights: list[float] | None = None,
        tta: str = "none",
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"Need at least 2 classes to train a classifier, got {class_names}.")
        built = create_backbone(**backbone)
        if input_spec is None:
            input_spec = built.input_spec.override(**(input_overrides or {})).to_dict()
        self.strategy = strategy_from_config(strategy)
        self.save_hyperparameters(
            {"backbone": dict(backbone), "head": dict(head), "strategy": strategy_data(self.strategy),
             "class_names": list(class_names), "input_spec": dict(input_spec)},
            logger=False,
        )
        self.input_spec = InputSpec.from_dict(input_spec)
        self.class_names = list(class_names)
        self.num_features = built.num_features
        self.stages = built.stages
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.channels_last = channels_last
        self.compile_backbone = compile
        # The training loss (recipe): label smoothing, MixUp/CutMix on image batches, class weights (dataset.balance)
        self.label_smoothing = float(label_smoothing)
        self.mixer = batch_mixer(mix or {}, num_classes=len(class_names))
        self.mix_prob = float((mix or {}).get("mix_prob", 1.0))
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)
        self.tta = tta  # validation and prediction: none | flip (mean probability of the image and its mirror)

        self.backbone = built.module
        # The weights' own classifier (e.g. ImageNet's): a head fit may use its outputs (head_fit.source_classes).
        # Kept out of the state dict: a checkpoint holds the fitted head, never this.
        classifier = built.pretrained_classifier
        self.source_head = None if not isinstance(classifier, nn.Linear) else SourceHead(
            classifier.weight.detach().clone(), classifier.bias.detach().clone())
        self.head = create_head(in_features=built.num_features, num_classes=len(class_names), **head)
        self.train_rules = self.strategy.apply(self, built.stages, epoch=0)
        self.head_fit_report: dict[str, Any] | None = None  # set by the fit_head phase, kept in checkpoints
        # the data it trains on (`data.folders.fingerprint`), set by the training task, kept in checkpoints: a
        # resume on other data is refused or warned about (`transferlab.training.resume`)
        self.data_fingerprint: dict[str, Any] | None = None
        self._distributed = False  # set in setup(): DDP needs every parameter that will train to require grad
        self._waiting: list[nn.Parameter] = []  # trained later (gradual), gradients dropped until then
        self.train()  # puts frozen parts in eval mode from the start

        self.criterion = nn.CrossEntropyLoss()
        n = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume: the best so far is part of the run's state

    def setup(self, stage: str) -> None:
        """Before the trainer wraps the model: under DDP every parameter the strategy will ever train requires
        grad from now on (see `Strategy.apply`); then the speed switches (checkpoint names stay unchanged)."""
        self._distributed = stage == "fit" and self.trainer.world_size > 1
        if self._distributed:
            self.strategy.apply(self, self.stages, epoch=self.current_epoch, distributed=True)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if self.compile_backbone and stage == "fit":
            self.backbone.compile()  # in place, lazy: costs nothing if the backbone never runs (cached features)

    # --- model -------------------------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> pooled backbone features (N, D)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # a no-op when already NHWC
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D) -> logits (N, classes)."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from images (N, C, H, W) or from pooled features (N, D), e.g. a frozen backbone's cache."""
        return self.forward_head(x if x.ndim == 2 else self.forward_features(x))

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for validation and prediction. With `tta="flip"` and images: the log of the mean probability
        of each image and its horizontal mirror (softmax of it gives that mean)."""
        if self.tta == "none" or x.ndim == 2:
            return self(x)
        if self.tta != "flip":
            raise ValueError(f"tta={self.tta!r}; use none or flip.")
        probs = (self(x).softmax(-1) + self(x.flip(-1)).softmax(-1)) / 2
        return probs.clamp_min(1e-12).log()

    def train(self, mode: bool = True) -> TransferClassifier:
        """Keep frozen parts in eval mode whatever Lightning switches (BN statistics must not drift)."""
        super().train(mode)
        if mode:
            for module in self.strategy.eval_modules(self, self._waiting):
                module.eval()
        return self

    def on_train_start(self) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch (Lightning skips it), only this.
        self.on_train_epoch_start()

    def on_train_epoch_start(self) -> None:
        # Re-derived from the epoch number alone, so a run resumed past `unfreeze_at` is unfrozen too.
        # Lightning 2.x never calls .train() itself (it restores captured modes after validation), so the
        # strategy's train/eval modes are (re)applied here as well.
        self.strategy.apply(self, self.stages, epoch=self.current_epoch, distributed=self._distributed)
        self._waiting = self.strategy.waiting(self, self.stages, self.current_epoch) if self._distributed else []
        self.train()

    def on_after_backward(self) -> None:
        for param in self._waiting:  # DDP: computed and all-reduced, but not yet this parameter's epoch
            param.grad = None

    def parameter_counts(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total

    # --- steps -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        labels = targets
        if self.mixer is not None and images.ndim == 4 and torch.rand(()) < self.mix_prob:
            images, targets = self.mixer(images, targets)  # targets become class probabilities
        logits = self(images)
        loss = F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_loss.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self.evaluate(images)
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
        return self.evaluate(images).softmax(dim=-1)

    # --- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError(
                "This model has no optimizer: a model rebuilt from a file never takes its optimizer from that file. "
                "Train it through `python train.py ckpt_path=...`, or pass optimizer= (a partial) when building it."
            )
        keywords = getattr(self.optimizer_factory, "keywords", {})
        base_lr = keywords.get("lr")
        if base_lr is None:
            raise ValueError("optimizer: a learning rate (optimizer.lr) is required.")
        groups = param_groups(self, self.train_rules, base_lr=base_lr, weight_decay=keywords.get("weight_decay"))
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        if self.scheduler_interval == "step":  # a per-step schedule needs the run's length (schedules.warmup_cosine)
            scheduler = self.scheduler_factory(optimizer=optimizer,
                                               total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    # --- checkpoints --------------------------------------------------------------------------------
    def description(self) -> dict[str, Any]:
        """What rebuilds this model, as plain data naming registry keys (read by `transferlab.models.checkpoint`)."""
        return {"format_version": DESCRIPTION_VERSION, **{k: self.hparams[k] for k in DESCRIPTION_KEYS}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["transferlab"] = self.description()
        if self.head_fit_report is not None:
            checkpoint["head_fit"] = self.head_fit_report  # resuming past the fit_head phase skips it
        if self.data_fingerprint is not None:
            checkpoint["dataset"] = dict(self.data_fingerprint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.head_fit_report = head_fit_report_from(checkpoint.get("head_fit"))


def head_fit_report_from(raw: Any) -> dict[str, Any] | None:
    """A checkpoint's `head_fit` report is data read from disk and printed at the end of the run: its figures
    must be numbers and its names strings. One that is not is dropped with a warning (a frozen run then fits
    again; an lpft run goes on fine-tuning) rather than failing the run when it prints its summary."""
    if raw is None:
        return None

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))

    candidates = raw.get("candidates") or {} if isinstance(raw, dict) else None
    plain = (isinstance(raw, dict)
             and all(number(raw.get(key)) for key in ("l2", "cv_accuracy", "val_accuracy", "temperature", "seconds"))
             and isinstance(candidates, dict)
             and all(isinstance(k, str) and number(v) for k, v in candidates.items())
             and all(isinstance(name, str) for name in (raw.get("source_names") or []))
             and isinstance(raw.get("balanced", False), bool))
    if not plain:
        log.warning("The checkpoint's head_fit report is not plain figures (%.120r); ignored.", raw)
        return None
    return dict(raw)
