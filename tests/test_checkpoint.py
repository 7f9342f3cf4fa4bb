"""A checkpoint or an exported file from someone else is data: it can name registry keys, never code.

Each hostile file below would create `marker` if any loader passed what it read to Hydra's `instantiate`
(as transferlab 0.1 did). The loaders must refuse it naming the file and the field, create nothing, and the
command-line tools must exit non-zero with that one line (checked in process for each tool, and as a real
command for eval.py; predict.py and export.py as real commands are slow). Files written by transferlab 0.1 still
load and predict the same.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import ROOT, compose_config
from transferlab.inference import load_classifier
from transferlab.models.checkpoint import CheckpointError, load_model, read_description

LEGACY = ROOT / "tests" / "fixtures" / "legacy_v0_1"


def _open_payload(marker: Path) -> dict:
    return {"_target_": "builtins.open", "file": str(marker), "mode": "w"}


def _write_payload(marker: Path) -> dict:
    return {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "pwned"}


# name -> (where the payload goes in the description, the field the error must name)
PAYLOADS = {
    "backbone.source is a call": (lambda d, m: d["backbone"].__setitem__("source", _open_payload(m)),
                                  "backbone.source._target_"),
    "backbone target is not the factory": (lambda d, m: d["backbone"].update(_open_payload(m)), "backbone._target_"),
    "head target is not a head": (lambda d, m: d.__setitem__("head", {**_write_payload(m), "_partial_": True}),
                                  "head._target_"),
    "strategy hides a call": (lambda d, m: d["strategy"].__setitem__("train", {"head": _open_payload(m)}),
                              "strategy.train.head._target_"),
    "class names are a call": (lambda d, m: d.__setitem__("class_names", _open_payload(m)), "class_names"),
    "input spec hides a call": (lambda d, m: d["input_spec"].__setitem__("mean", [_open_payload(m)] * 3),
                                "input_spec.mean"),
    "unknown backbone source": (lambda d, m: d["backbone"].__setitem__("source", "evil"), "backbone.source"),
    "unknown head kind": (lambda d, m: d.__setitem__("head", {"kind": "evil", "dropout": 0.0}), "head.kind"),
    "ill-typed strategy field": (lambda d, m: d["strategy"].__setitem__("trainable_stages", "two"),
                                 "strategy.trainable_stages"),
    "ill-typed head fit": (lambda d, m: d["strategy"].__setitem__("head_fit", {"enabled": True, "l2": "lots"}),
                           "strategy.head_fit"),
    "missing field": (lambda d, m: d.pop("input_spec"), "input_spec"),
    "class names not strings": (lambda d, m: d.__setitem__("class_names", [1, 2]), "class_names"),
}


def _legacy_ckpt() -> dict:
    return torch.load(LEGACY / "last.ckpt", map_location="cpu", weights_only=True)


def _hostile_ckpt(tmp_path: Path, mutate, marker: Path) -> Path:
    """A format-1 checkpoint (as written by transferlab 0.1) whose hyperparameters carry the payload."""
    ckpt = _legacy_ckpt()
    mutate(ckpt["hyper_parameters"], marker)
    path = tmp_path / "hostile.ckpt"
    torch.save(ckpt, path)
    return path


def _hostile_safetensors(tmp_path: Path, mutate, marker: Path) -> Path:
    """A safetensors export in today's format whose metadata carries the payload."""
    model = load_model(LEGACY / "last.ckpt")
    meta = model.description()
    mutate(meta, marker)
    path = tmp_path / "hostile.safetensors"
    save_file(model.state_dict(), str(path), metadata={"transferlab": json.dumps(meta)})
    return path


@pytest.mark.parametrize("case", sorted(PAYLOADS))
@pytest.mark.parametrize("kind", ["ckpt", "safetensors"])
def test_load_classifier_refuses_a_hostile_file_before_building_anything(tmp_path, case, kind):
    mutate, field = PAYLOADS[case]
    marker = tmp_path / "pwned"
    path = (_hostile_ckpt if kind == "ckpt" else _hostile_safetensors)(tmp_path, mutate, marker)
    with pytest.raises(CheckpointError) as err:
        load_classifier(path, device="cpu")
    assert not marker.exists(), "the payload ran"
    message = str(err.value)
    assert str(path) in message and field in message, message


def test_optimizer_and_scheduler_in_a_file_are_never_read(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _legacy_ckpt()
    ckpt["hyper_parameters"]["optimizer"] = {**_open_payload(marker), "_partial_": True}
    ckpt["hyper_parameters"]["scheduler"] = {**_write_payload(marker), "_partial_": True}
    path = tmp_path / "optimizer_payload.ckpt"
    torch.save(ckpt, path)
    model = load_model(path)
    assert not marker.exists()
    # Training a loaded model further needs an optimizer from the current config, never the file's.
    with pytest.raises(RuntimeError, match="no optimizer"):
        model.configure_optimizers()
    assert not marker.exists()


def test_a_pickled_payload_is_refused_with_the_file_named(tmp_path):
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Boom()}, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_model(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["last.ckpt", "model.safetensors"])
def test_files_written_by_transferlab_0_1_still_load_and_predict_the_same(name):
    expected = json.loads((LEGACY / "expected.json").read_text())
    model = load_model(LEGACY / name)
    assert model.class_names == ["ant", "bee"]
    assert model.hparams["head"] == {"kind": "mlp", "hidden": 8, "dropout": 0.2}
    assert model.hparams["backbone"]["source"] == "timm"
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), torch.tensor(expected["logits"][name]), atol=1e-6)


def test_a_new_checkpoint_names_registry_keys_only(tmp_path):
    model = load_model(LEGACY / "last.ckpt")
    description = model.description()
    text = json.dumps(description)
    assert "_target_" not in text and "transferlab." not in text
    assert description["head"]["kind"] == "mlp" and description["backbone"]["source"] == "timm"
    # ... and it round-trips through the validator unchanged.
    again = read_description(copy.deepcopy(description), "<memory>").to_dict()
    assert again == {**description, "backbone": {**description["backbone"], "weights": None}}


def test_exported_weights_that_do_not_fit_the_description_are_named(tmp_path):
    model = load_model(LEGACY / "last.ckpt")
    meta = model.description()
    meta["head"]["hidden"] = 16  # the file's tensors were trained with hidden=8
    path = tmp_path / "misfit.safetensors"
    save_file(load_file(LEGACY / "model.safetensors"), str(path), metadata={"transferlab": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not fit") as err:
        load_model(path)
    assert str(path) in str(err.value)


# --- the command-line tools --------------------------------------------------------------------------------
# In process: each tool's task run as its script runs it, inside `reported(...)`, which turns the refusal into one
# `error: ...` line on stderr and exit status 2. Then the real commands: eval.py by default, the others slow.
def _hostile_args(tool: str, tmp_path: Path, folder: Path, kind: str) -> tuple[Path, Path, str, list[str]]:
    marker = tmp_path / "pwned"
    mutate, field = PAYLOADS["backbone.source is a call"]
    path = (_hostile_ckpt if kind == "ckpt" else _hostile_safetensors)(tmp_path, mutate, marker)
    extra = {"eval.py": ["dataset=folder", f"dataset.root={folder}"],
             "predict.py": [f"inputs={folder / 'val'}"],
             "export.py": ["format=onnx"]}[tool]
    return marker, path, field, [f"ckpt_path={path}", *extra]


def _assert_one_line_refusal(returncode: int, stderr: str, marker: Path, path: Path, field: str) -> None:
    assert returncode != 0
    assert not marker.exists(), "the payload ran"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(path) in last and field in last, stderr[-2000:]
    assert "HYDRA_FULL_ERROR" not in stderr and "Traceback" not in stderr


TOOLS = [("eval.py", "ckpt"), ("predict.py", "safetensors"), ("export.py", "ckpt")]


@pytest.mark.parametrize("tool,kind", TOOLS)
def test_each_tools_task_refuses_a_hostile_file_with_one_line_and_status_2(tmp_path, tiny_folder, capsys, tool,
                                                                           kind):
    from transferlab.errors import EXIT_USER_ERROR, reported
    from transferlab.tasks import evaluate, export, predict

    marker, path, field, overrides = _hostile_args(tool, tmp_path, tiny_folder, kind)
    task, extra_errors = {"eval.py": (evaluate.run, (evaluate.ClassMismatchError, evaluate.RunDirError)),
                          "predict.py": (predict.run, ()),
                          "export.py": (export.run, (export.ExportMismatchError,))}[tool]
    cfg = compose_config(tmp_path, overrides, config_name=tool.removesuffix(".py"))
    with pytest.raises(SystemExit) as exit_, reported(*extra_errors):  # what the script's main() does
        task(cfg)
    assert exit_.value.code == EXIT_USER_ERROR
    _assert_one_line_refusal(exit_.value.code, capsys.readouterr().err, marker, path, field)


def _cli(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / tool), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.slow  # three subprocesses; the in-process test above checks the same line and exit code
@pytest.mark.parametrize("tool,kind", TOOLS)
def test_command_line_tools_refuse_a_hostile_file_with_one_line(tmp_path, tiny_folder, tool, kind):
    marker, path, field, args = _hostile_args(tool, tmp_path, tiny_folder, kind)
    proc = _cli(tool, *args, cwd=tmp_path)
    _assert_one_line_refusal(proc.returncode, proc.stderr, marker, path, field)


def test_a_tiny_input_is_predicted_with_a_warning_naming_it(tmp_path, caplog):
    from PIL import Image

    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(dot)
    clf = load_classifier(LEGACY / "last.ckpt", device="cpu")
    with caplog.at_level("WARNING", logger="transferlab.inference"):
        preds = clf.predict([dot])
    assert len(preds) == 1
    assert any(str(dot) in r.getMessage() and "1x1" in r.getMessage() for r in caplog.records)


def test_a_copied_run_directory_uses_its_own_checkpoints_not_the_originals(tmp_path):
    from transferlab.models.checkpoint import resolve_checkpoint

    original = tmp_path / "original"
    (original / "checkpoints").mkdir(parents=True)
    best = original / "checkpoints" / "epoch003-acc0.9000.ckpt"
    last = original / "checkpoints" / "last.ckpt"
    for path in (best, last):
        path.write_bytes((LEGACY / "last.ckpt").read_bytes())
    (original / "summary.json").write_text(json.dumps({"best_checkpoint": str(best), "last_checkpoint": str(last)}))
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert resolve_checkpoint(copy) == copy / "checkpoints" / best.name
    assert resolve_checkpoint(f"{copy}:last") == copy / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(copy, "last") == copy / "checkpoints" / "last.ckpt"
