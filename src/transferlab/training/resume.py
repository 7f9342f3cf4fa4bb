"""What a run does with `ckpt_path=...`: continue the checkpoint's run, if it is the same run, or start a new
one from its weights. Decided once the data is scanned and the model built, before any feature is extracted
or any image decoded for training.

Resuming (`resume=true`, the default) continues the run that wrote the checkpoint: its epochs, optimizer, val
history and best accuracy. On another model, plan or dataset that is a wrong answer, not a resume: a renamed
class silently takes the old class's row of the head, the val history mixes two datasets, another input size
trains on what the weights never saw, and a changed shape fails deep in Lightning's loading. So `check_resume`
compares the checkpoint with this run (backbone, head, the strategy and its phases, class names, input spec) and
refuses any difference in one line naming each field, its value in the checkpoint and now, and the ways out.
The same classes over changed files (an image added or removed: `data.folders.fingerprint`) is a warning
naming the counts; a checkpoint written before checkpoints recorded their data, a warning that it cannot be
checked.

`resume=false` reads `ckpt_path` as initial weights (`start_from_weights`): a new run (epoch 0, a new optimizer,
a new val history) whose backbone and head start from the checkpoint's; they must fit the model exactly.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from transferlab.config.schema import HeadConfig
from transferlab.data.input_spec import InputSpec
from transferlab.errors import CheckpointError, ConfigValueError
from transferlab.models.checkpoint import TrainingCheckpoint, read_training_checkpoint
from transferlab.models.classifier import TransferClassifier
from transferlab.models.strategy import strategy_from_config
from transferlab.training.plan import Plan, make_plan

log = logging.getLogger(__name__)

WEIGHTS = ("backbone.", "head.")  # what resume=false takes: not a metric's state (the old run's best accuracy)
_HEAD_DEFAULTS = {f.name: f.default for f in fields(HeadConfig) if f.name != "kind"}


def check_resume(path: Path, model: TransferClassifier, plan: Plan) -> None:
    """Refuse to resume `path` on another model or plan, in one line naming every differing field; warn when
    the same classes come from other files (or the checkpoint cannot say)."""
    ckpt = read_training_checkpoint(path)
    differences = _differences(ckpt, model, plan)
    if differences:
        raise CheckpointError(
            f"{path}: cannot resume it: this run differs from the one that wrote it: {'; '.join(differences)}. "
            "Start a new run (drop ckpt_path), or, to start a new run from those weights (the same backbone, head "
            f"and number of classes), ckpt_path={path} resume=false.")
    _check_data(ckpt, model.data_fingerprint)


def start_from_weights(path: Path, model: TransferClassifier) -> None:
    """`resume=false`: the backbone's and head's weights of `path` into `model`, which must have the same
    tensors of the same shapes (else one error naming those that differ); nothing else of the old run."""
    ckpt = read_training_checkpoint(path)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(WEIGHTS)}
    theirs = {k: v for k, v in ckpt.state_dict.items() if k.startswith(WEIGHTS)}
    problems = [f"{k}: {tuple(theirs[k].shape)} in the checkpoint, {tuple(v.shape)} now"
                for k, v in own.items() if k in theirs and theirs[k].shape != v.shape]
    for names, what in ((own.keys() - theirs.keys(), "not in the checkpoint"),
                        (theirs.keys() - own.keys(), "not in this model")):
        if names:
            shown = sorted(names)
            more = ", ..." if len(shown) > 3 else ""
            problems.append(f"{len(shown)} tensor(s) {what} ({', '.join(shown[:3])}{more})")
    if problems:
        raise CheckpointError(
            f"{path}: resume=false starts this model from its weights, and they do not fit: "
            f"{'; '.join(problems[:4])}{'; ...' if len(problems) > 4 else ''}. Start from a checkpoint of the same "
            "backbone, head and number of classes, or drop ckpt_path.")
    model.load_state_dict(theirs, strict=False)  # strict over the weights (checked above); metrics keep fresh
    log.info("resume=false: a new run (epoch 0, a new optimizer and val history) from the weights of %s "
             "(trained on classes %s; this run's: %s).", path, ckpt.description.class_names, model.class_names)


def _differences(ckpt: TrainingCheckpoint, model: TransferClassifier, plan: Plan) -> list[str]:
    """`<field>: <value in the checkpoint> in the checkpoint, <value now> now`, for every field that differs."""
    then, now = ckpt.description, model.description()
    out: list[str] = []
    backbones = [f"{b['source']}/{b['name']}" for b in (then.backbone, now["backbone"])]
    if backbones[0] != backbones[1]:
        out.append(f"backbone: {backbones[0]} in the checkpoint, {backbones[1]} now")
    heads = [{**_HEAD_DEFAULTS, **h} for h in (then.head, now["head"])]
    for key in ["kind", *sorted((heads[0].keys() | heads[1].keys()) - {"kind"})]:
        if heads[0].get(key) != heads[1].get(key):
            out.append(f"head.{key}: {heads[0].get(key)!r} in the checkpoint, {heads[1].get(key)!r} now")
    if then.strategy.get("name") != plan.strategy:  # other parameter groups: the optimizer's state would not fit
        out.append(f"strategy: {then.strategy.get('name')} in the checkpoint, {plan.strategy} now")
    phases = _phases(then.strategy, model.stages)
    if phases is not None and phases != plan.phases:
        out.append(f"phases: {' -> '.join(phases)} (strategy={then.strategy.get('name')}) in the checkpoint, "
                   f"{' -> '.join(plan.phases)} (strategy={plan.strategy}) now")
    if then.class_names != model.class_names:
        out.append(f"class_names: {then.class_names} in the checkpoint, {model.class_names} now")
    specs = InputSpec.from_dict(then.input_spec).to_dict(), model.input_spec.to_dict()
    out += [f"input_spec.{key}: {specs[0][key]!r} in the checkpoint, {specs[1][key]!r} now"
            for key in specs[1] if specs[0][key] != specs[1][key]]
    return out


def _phases(strategy: dict[str, Any], stages) -> tuple[str, ...] | None:
    """The phases the checkpoint's strategy plans (None: a plan that could not have run, so was not its)."""
    try:
        return make_plan(strategy_from_config(strategy), stages).phases
    except ConfigValueError:
        return None


def _check_data(ckpt: TrainingCheckpoint, data: dict[str, Any] | None) -> None:
    """The classes are the same (checked before): other files under them are a warning naming the counts."""
    then = ckpt.data_fingerprint
    if then is None or data is None:
        why = ("it records no dataset fingerprint (written by an older transferlab)" if then is None
               else "this run's datamodule gives no fingerprint")
        log.warning("%s: %s, so the dataset cannot be checked against it; resuming.", ckpt.path, why)
        return
    if then["sha256"] != data["sha256"]:
        log.warning("%s: the dataset changed since this checkpoint (the same classes, other files): train: %d "
                    "images in the checkpoint, %d now; val: %d images in the checkpoint, %d now. Resuming on it: the "
                    "val history before and after this point is on different data.",
                    ckpt.path, then["train"], data["train"], then["val"], data["val"])
