"""Trust 2, no silent wrong answer, on the real command line (`python train.py ...` in a new process):

- 5. a run that fails after its run directory exists leaves summary.json with status failed, the error line and,
  when it saved last.ckpt, the command that resumes it (which then finishes the run);
- 6. a config mistake is one line, exit 2, naming the key the user typed, what it takes and a close match,
  before any data is read; the schema nodes are not options;
- 7. an argument Hydra's override grammar cannot parse (a path with a space, é, `=`, `'`, `,`) says how to quote
  it, and the quoted form it gives reaches `dataset.root` (and trains).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from tests.conftest import ROOT, TINY_SPLITS, compose_config, make_folder, shrink
from transferlab.config.command import check_added_keys, config_error_line, quoted
from transferlab.config.settings import ADDABLE_KEYS
from transferlab.errors import ConfigValueError


class FailOnce(L.Callback):
    """Raise at the start of epoch `epoch` (after last.ckpt of the epoch before was saved), once: `marker` records
    that it did, so the resumed run goes through. Loaded by the run under test:
    `+callbacks.fail_once._target_=tests.test_trust_cli.FailOnce`."""

    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker, self.epoch = Path(marker), epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError(f"FailOnce: failing at the start of epoch {self.epoch}")


def cli(*args: str, cwd: Path, script: str = "train.py", timeout: float = 300) -> subprocess.CompletedProcess:
    """`python <script> <args>` as a user runs it (the repository's script, launched from `cwd`)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The command failed with status 2 and said so in one line, `error: ...` (nothing else on stderr)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# --- 5. a failed run is recorded ---------------------------------------------------------------------------------
def test_a_single_run_that_fails_is_recorded_failed_with_its_error(tmp_path):
    data = make_folder(tmp_path / "corrupt", TINY_SPLITS)
    for image in data.rglob("*.png"):
        image.write_bytes(b"not an image")  # every image corrupt: the dataset check fails, after the run dir exists
    proc = cli(*shrink(data), "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("DatasetLayoutError: ") and "no readable image" in summary["error"]
    assert "resume_command" not in summary  # no checkpoint to resume from


def test_a_run_that_fails_after_a_checkpoint_records_the_command_that_resumes_it(tmp_path, tiny_folder):
    marker = tmp_path / "failed-once"
    args = [*shrink(tiny_folder), "trainer.max_epochs=2", "logger=none", "callbacks.dashboards=null",
            "+callbacks.fail_once._target_=tests.test_trust_cli.FailOnce", f"+callbacks.fail_once.marker={marker}",
            "hydra.run.dir=run"]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # a bug-like error keeps its traceback
    assert "FailOnce: failing at the start of epoch 1" in proc.stderr
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: FailOnce: failing at the start of epoch 1"
    assert summary["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    command = summary["resume_command"]
    assert command.startswith("python train.py ") and "ckpt_path=" in command and f"hydra.run.dir={run}" in command
    assert "to continue it from there: " + command in proc.stdout + proc.stderr  # also said, not only recorded

    resumed = subprocess.run(shlex.split(command.replace("python train.py", f"{sys.executable} {ROOT / 'train.py'}",
                                                         1)), cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads((run / "summary.json").read_text())
    assert done["status"] == "ok" and done["epochs"] == 2


def test_ctrl_c_outside_the_training_loop_is_recorded_interrupted(tmp_path):
    from transferlab.jobs.job import run_job

    cfg = compose_config(tmp_path, ["debug=tiny"])
    with read_write(HydraConfig.get()) as hydra_cfg:
        hydra_cfg.mode, hydra_cfg.runtime.output_dir = RunMode.RUN, str(tmp_path / "run")

    def stopped(cfg):
        raise KeyboardInterrupt  # as Ctrl-C while the data is prepared

    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, task=stopped)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGINT"


# --- 6. config mistakes: one line, the key typed, a way out ------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["seed=abc"], "error: seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["+optimizer.lrr=0.1"], "error: optimizer.lrr is not a key of optimizer (sgd); did you mean optimizer.lr? "
                             "Keys: lr, momentum, weight_decay, "),
    (["optimizer.lrr=0.1"], "error: optimizer.lrr is not a key of optimizer; did you mean optimizer.lr? "
                            "Keys: lr, momentum, weight_decay."),
    (["+foo=1"], "error: foo is not a key of the train config; Keys: backbone, callbacks, "),
    (["+seeed=1"], "error: seeed is not a key of the train config; did you mean seed?"),
    (["stratgy=frozen"], "error: stratgy is not a key of the train config; did you mean strategy?"),
    (["strategy=schema"], "error: strategy=schema is not an option of strategy; Options: auto, discriminative, "
                          "finetune, frozen, gradual, lpft, partial, scratch."),
    (["backbone=resnet81"], "error: backbone=resnet81 is not an option of backbone; did you mean backbone=resnet18"),
    (["strategy.trainable_stages=two"], "error: strategy.trainable_stages=two: Value 'two' of type 'str' could not "
                                        "be converted to Integer."),
    (["+strategy.trainable_stage=2"], "error: strategy.trainable_stage is not a key of strategy (finetune); did you "
                                      "mean strategy.trainable_stages?"),
])
def test_a_config_mistake_is_one_line_naming_the_key_typed_before_any_data(tmp_path, args, expected):
    proc = cli("debug=tiny", *args, cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith(expected), line
    assert "split_seed=" not in line  # seed=abc: the key typed, not the one that interpolates it
    assert not (tmp_path / "data").exists()  # the default dataset (digits) was not written, nor read
    assert not list(tmp_path.rglob("*.ckpt"))


def test_the_schema_nodes_are_not_options_of_their_groups(tmp_path):
    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for group in ("backbone", "dataset", "head", "recipe", "strategy"):
        (line,) = [x for x in groups.splitlines() if x.startswith(f"{group}: ")]
        assert "schema" not in line, line


@pytest.mark.parametrize("script, required", [("eval.py", ["ckpt_path=x.ckpt"]),
                                              ("predict.py", ["ckpt_path=x.ckpt", "inputs=x.png"]),
                                              ("export.py", ["ckpt_path=x.ckpt"])])
def test_the_other_entry_points_answer_config_mistakes_the_same_way(tmp_path, script, required):
    task = script.removesuffix(".py")
    added = one_error_line(cli(*required, "+foo=1", cwd=tmp_path, script=script))
    assert added.startswith(f"error: foo is not a key of the {task} config;"), added
    typo = one_error_line(cli(*required, "ckpt_pth=y", cwd=tmp_path, script=script))
    assert typo.startswith(f"error: ckpt_pth is not a key of the {task} config; did you mean ckpt_path?"), typo


def test_keys_that_a_run_does_read_can_still_be_added(tmp_path):
    for added in ("+repeat.seeds=[1,2]", "+advise.similar=0.95", "+optimizer.nesterov=true",
                  "+trainer.gradient_clip_val=1.0", "+callbacks.summary.stop_on_nonfinite_loss=false",
                  "+callbacks.mine._target_=tests.test_trust_cli.FailOnce", "+callbacks.mine.marker=x"):
        cfg = compose_config(tmp_path, ["debug=tiny", added])
        check_added_keys(cfg, ADDABLE_KEYS)
    cfg = compose_config(tmp_path, ["debug=tiny", "+callbacks.mine._target_=tests.test_trust_cli.FailOnce",
                                    "+callbacks.mine.markr=x"])
    with pytest.raises(ConfigValueError, match=r"callbacks\.mine\.markr .* did you mean callbacks\.mine\.marker\?"):
        check_added_keys(cfg, ADDABLE_KEYS)


def test_a_bug_is_not_taken_for_a_config_mistake():
    assert config_error_line(RuntimeError("boom")) is None
    assert config_error_line(KeyError("lr")) is None


# --- 7. paths Hydra's grammar cannot take as typed ---------------------------------------------------------------
PATHS = {"space": "my photos", "unicode": "café", "equals": "a=b", "quote": "it's", "comma": "a,b"}


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_a_path_the_override_grammar_refuses_says_how_to_quote_it(tmp_path, kind):
    path = str(tmp_path / PATHS[kind])
    if kind == "space":  # typed unquoted, the shell splits it in two
        head, tail = path.split(" ")
        typed = [f"dataset.root={head}", tail]
    else:  # dataset.root="<path>" in the shell: the quotes are the shell's, Hydra sees the bare path
        typed = [f"dataset.root={path}"]
    line = one_error_line(cli("dataset=folder", *typed, "--cfg", "job", cwd=tmp_path))
    assert typed[-1] in line and "quote the value: " in line, line
    suggestion = line.split("quote the value: ")[1]
    (word,) = shlex.split(suggestion)  # one shell word, as printed
    shown = cli("dataset=folder", word, "--cfg", "job", "--package", "dataset.root", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.strip() == path


def test_a_space_within_one_argument_is_taken_as_is(tmp_path):
    path = str(tmp_path / "my photos")
    shown = cli("dataset=folder", f"dataset.root={path}", "--cfg", "job", "--package", "dataset.root", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.strip() == path


def test_a_folder_named_with_every_awkward_character_trains_when_quoted(tmp_path):
    data = make_folder(tmp_path / "my photos, café=it's", TINY_SPLITS)
    proc = cli("debug=tiny", "dataset=folder", f"dataset.root={quoted(str(data))}", "logger=none", "hydra.run.dir=run",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["classes"] == ["ant", "bee"]


@pytest.mark.parametrize("value", ["/data/flowers", "/data/my photos", "/data/café", "/a=b", "/it's", "/a,b",
                                   'q"x', "C:\\data\\", "~/x", "null", "1"])
def test_quoted_values_parse_back_to_themselves(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_override(f"k={quoted(value)}").value() == value
