"""The documentation is checked like code: what README.md and docs/**/*.md tell a user to type must work.

- Every `python train.py|eval.py|predict.py|export.py ...` line of their fenced code blocks is composed with the
  real conf/ in this process, as the script would compose it, and checked as the job checks it before any data
  (train: `+` keys and `RunSettings.from_config`, every value and the checks across groups; eval, predict, export:
  `+` keys, interpolations, no `???` left). A renamed key, group option or value fails here naming the file, the
  line and the command. `-m` sweeps are expanded so that every value of each swept key is checked at least once
  (`expand`: not the whole product; a composition costs ~0.15 s; the same job in two places is composed once).
  A command whose trailing comment starts with `fails` or `error` (`# error: ...`) documents a mistake: it must
  fail to compose. Paths are never read (`/path/to/images` composes).
- Every ```python block runs (Sybil), one document's blocks in order in one namespace, in a temporary working
  directory. A block that needs what this machine may lack says so in the document, just before it:
  `<!-- skip: next if(not __import__("pathlib").Path("../shared/datasets").is_dir(), reason="no datasets") -->`
  (or `<!-- skip: next -->`; Sybil's markdown skip syntax).
- `mkdocs build --strict` is .ci/run's (broken links and anchors); docs/benchmarks.md's freshness is
  tests/test_bench_results.py's.

Each check is shown to fail on a broken scratch document (the tests at the end).
"""

from __future__ import annotations

import copy
import functools
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SCRIPTS = ("train", "eval", "predict", "export")  # each script's config is conf/<name>.yaml (its @hydra.main)
SHELL_INFO = {"", "bash", "sh", "shell", "console", "zsh", "text", "terminal"}
COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))python3?\s+(?:\./)?(?P<script>train|eval|predict|export)\.py(?=\s|$)")
PLACEHOLDER = re.compile(r"(?<==)<[^<>\n]*>")  # ckpt_path=<run dir>: a value, not a redirection


def doc_files() -> list[Path]:
    docs = ROOT / "docs"
    return [ROOT / "README.md", *sorted(p for p in docs.rglob("*.md") if "hooks" not in p.relative_to(docs).parts)]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- fenced code blocks -------------------------------------------------------------------------------------------
def fenced_blocks(text: str) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    """(line of the opening fence, info word, [(line number, line)]) for each ``` / ~~~ block, nested in a list
    item or not (its indentation removed)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m[1]), m[2], m[3].lower()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            line = lines[i]
            body.append((i + 1, line[indent:] if line[:indent].strip() == "" else line.lstrip()))
            i += 1
        i += 1
        yield start, info, body


# --- commands -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocCommand:
    path: Path
    line: int
    text: str  # the command as written (continuations joined)
    script: str  # train | eval | predict | export
    argv: tuple[str, ...]  # the arguments after the script
    comment: str = ""

    @property
    def expects_error(self) -> bool:
        return self.comment.lower().startswith(("fails", "error"))

    def where(self) -> str:
        return f"{rel(self.path)}:{self.line}: {self.text}"


def _split_comment(line: str) -> tuple[str, str]:
    """`cmd args   # comment` -> (cmd args, comment): a `#` that starts a word outside quotes, as in a shell."""
    quote, escaped = None, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line, ""


def _words(command: str) -> list[str]:
    """The shell words of one command, up to `;`, `&&`, `|`, a redirection or the end."""
    lex = shlex.shlex(PLACEHOLDER.sub("placeholder", command), posix=True, punctuation_chars=";&|<>()")
    lex.commenters = ""
    lex.whitespace_split = True
    words: list[str] = []
    for word in lex:
        if word and all(c in ";&|<>()" for c in word):
            if word.startswith((">", "<")) and words and words[-1].isdigit():
                words.pop()  # 2>&1
            break
        words.append(word)
    return words


def commands_in(path: Path, text: str | None = None) -> list[DocCommand]:
    """Every command line of `path`'s fenced shell blocks that runs one of the four scripts."""
    text = path.read_text() if text is None else text
    found = []
    for _, info, body in fenced_blocks(text):
        if info not in SHELL_INFO:
            continue
        prompts = any(line.lstrip().startswith("$ ") for _, line in body)
        logical: list[tuple[int, str]] = []
        pending: tuple[int, str] | None = None
        for number, line in body:
            if pending is not None:
                start, joined = pending
                line = joined + " " + line.strip()
                number = start
            if line.rstrip().endswith("\\"):
                pending = (number, line.rstrip()[:-1].rstrip())
                continue
            pending = None
            logical.append((number, line))
        if pending is not None:
            logical.append(pending)
        for number, line in logical:
            stripped = line.strip()
            if prompts:  # a console transcript: only the lines after a prompt are commands
                if not stripped.startswith("$ "):
                    continue
                stripped = stripped[2:]
            code, comment = _split_comment(stripped)
            for m in COMMAND.finditer(code):
                words = _words(code[m.start():])
                found.append(DocCommand(path, number, " ".join(stripped.split()), m["script"],
                                        tuple(words[2:]), comment))
    return found


# --- composing them -----------------------------------------------------------------------------------------------
Update = tuple[str, object, bool]  # (key, typed value, added with +): a swept value applied to a composed job


@dataclass
class Parsed:
    config_name: str
    multirun: bool
    jobs: list[tuple[tuple[str, ...], tuple[Update, ...]]] = field(default_factory=list)


def _is_group(key: str) -> bool:
    return "/" in key or (CONF / key).is_dir()  # hydra/launcher, strategy, experiment, ...


def expand(cmd: DocCommand) -> Parsed:
    """Hydra's own argument parser, then the jobs the command starts: one, or (`-m`) its sweep's first job (the
    first value of every swept key), then each other value of each swept key in turn. Another option of a group
    is a job composed anew; another value of a key is that first job's config with the value set (as Hydra
    would set it, typed by its grammar), so that `seed=1,2,3` costs one composition, not three."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _unknown = get_args_parser().parse_known_args(list(cmd.argv))
    overrides = list(args.overrides or [])
    parsed = Parsed(args.config_name or cmd.script, bool(args.multirun))
    if not parsed.multirun:
        parsed.jobs = [(tuple(overrides), ())]
        return parsed
    fixed, swept = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            fixed.append(o.input_line)
        elif o.key_or_group.startswith("hydra.sweeper.params"):  # the sweeper's search space (Optuna): a string
            fixed.append(f"{o.get_key_element()}='{o.input_line.split('=', 1)[1]}'")
        else:
            strings = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            swept.append((o, strings, list(o.sweep_iterator())))
    first = tuple(fixed + [strings[0] for _, strings, _ in swept])
    parsed.jobs = [(first, ())]
    for k, (o, strings, values) in enumerate(swept):
        if _is_group(o.key_or_group):
            others = [strings_[0] for _, strings_, _ in swept]
            parsed.jobs += [(tuple(fixed + others[:k] + [v] + others[k + 1:]), ()) for v in strings[1:]]
        else:
            parsed.jobs += [(first, ((o.key_or_group, v, o.is_add()),)) for v in values[1:]]
    return parsed


@functools.cache
def composed(config_name: str, overrides: tuple[str, ...]):
    """conf/<config_name>.yaml composed with `overrides` as the script would (with its hydra node); once each."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from transferlab.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    out = Path(tempfile.gettempdir()) / "transferlab-test-docs"  # nothing is written: composition only
    where = [f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}"]  # never the repository; the command's win
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name, overrides=[*where, *overrides], return_hydra_config=True)


def job_config(config_name: str, overrides: tuple[str, ...]):
    """A copy of what `composed(config_name, overrides)` returns, faster: commands that choose the same group options
    share one composition of those choices, and their other overrides are applied to a copy of it by the function
    Hydra's composition applies them with (`ConfigLoaderImpl._apply_overrides_to_config`: the same rules, the
    same errors). Anything else (a sweep value, a `hydra.` key, a package) is composed in full."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    values = [o for o in parsed if not _is_group(o.key_or_group)]
    if any(o.is_sweep_override() or o.package is not None or o.key_or_group.startswith("hydra") for o in values):
        return copy.deepcopy(composed(config_name, overrides))
    cfg = copy.deepcopy(composed(config_name, tuple(o.input_line for o in parsed if _is_group(o.key_or_group))))
    OmegaConf.set_readonly(cfg.hydra, False)
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    cfg.hydra.overrides.task.extend([o.input_line for o in values])  # what check_added_keys reads
    return cfg


def check_job(config_name: str, overrides: tuple[str, ...], updates: tuple[Update, ...] = ()) -> None:
    """The job's config checked as the job checks it before touching any data; raise what the user would see."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from transferlab.config.command import check_added_keys
    from transferlab.config.settings import ADDABLE_KEYS, RunSettings

    cfg = job_config(config_name, overrides)  # a copy of its own
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    for key, value, add in updates:
        OmegaConf.update(cfg, key, value, merge=False, force_add=add)
    if config_name == "train":
        check_added_keys(cfg, ADDABLE_KEYS)
        RunSettings.from_config(cfg)
    else:
        check_added_keys(cfg)
        OmegaConf.resolve(cfg)
        if missing := sorted(OmegaConf.missing_keys(cfg)):
            raise ValueError(f"{', '.join(missing)} has no value; give one on the command line")


@functools.cache
def job_error(config_name: str, overrides: tuple[str, ...], updates: tuple[Update, ...] = ()) -> str | None:
    """`check_job`'s error as the user would read it (None: fine); each job checked once per process."""
    from hydra.core.hydra_config import HydraConfig

    from transferlab.config.command import config_error_line

    # an error names the config being checked (as the script's would), not the one checked before
    HydraConfig.instance().cfg = None
    argv0, sys.argv[0] = sys.argv[0], str(ROOT / f"{config_name}.py")
    try:
        check_job(config_name, overrides, updates)
    except SystemExit as e:
        return f"exits {e.code}"
    except Exception as e:  # noqa: BLE001 (reported with the command)
        return config_error_line(e) or f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    finally:
        sys.argv[0] = argv0
    return None


def _job_name(overrides: tuple[str, ...], updates: tuple[Update, ...]) -> str:
    words = list(overrides)
    for key, value, _ in updates:
        words = [w for w in words if w.partition("=")[0].lstrip("+~") != key] + [f"{key}={value}"]
    return " ".join(words)


def problems(cmd: DocCommand) -> list[str]:
    """What is wrong with `cmd`: one line per failing job (empty: every job composes and checks)."""
    try:
        parsed = expand(cmd)
    except Exception as e:  # noqa: BLE001 (reported with the command)
        return [f"the arguments do not parse: {str(e).splitlines()[0]}"]
    if parsed.config_name not in SCRIPTS:
        return [f"-cn {parsed.config_name}: not one of conf/{{{','.join(SCRIPTS)}}}.yaml"]
    errors = []
    for overrides, updates in parsed.jobs:
        if (line := job_error(parsed.config_name, overrides, updates)) is not None:
            errors.append(f"[{_job_name(overrides, updates)}] {line}" if parsed.multirun else line)
    return errors


def report(cmd: DocCommand, errors: list[str]) -> str | None:
    """None when the document tells the truth about `cmd`, else the failure naming file, line and command."""
    if cmd.expects_error:
        return None if errors else f"{cmd.where()}\n  documented to fail (`# {cmd.comment}`), but it composes"
    if errors:
        return f"{cmd.where()}\n  " + "\n  ".join(errors)
    return None


ALL_COMMANDS = [c for p in doc_files() if p.exists() for c in commands_in(p)]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=[f"{rel(c.path)}:{c.line}" for c in ALL_COMMANDS])
def test_every_documented_command_composes_with_the_real_config(cmd):
    failure = report(cmd, problems(cmd))
    assert failure is None, failure


def test_the_docs_have_commands_to_check():
    scripts = {c.script for c in ALL_COMMANDS}
    assert "train" in scripts and len(ALL_COMMANDS) >= 5, [c.where() for c in ALL_COMMANDS]


# --- the ```python blocks -----------------------------------------------------------------------------------------
def python_documents() -> list[Path]:
    return [p for p in doc_files()
            if p.exists() and any(info == "python" for _, info, _ in fenced_blocks(p.read_text()))]


def run_python_blocks(path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every ```python block of `path`, in order, in one namespace (Sybil; its skip comments honoured)."""
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

    monkeypatch.chdir(cwd)
    document = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()], path=str(path.parent)).parse(path)
    examples = list(document.examples())
    for example in examples:
        example.evaluate()
    return len(examples)


@pytest.mark.parametrize("path", python_documents(), ids=rel)
def test_every_python_block_of_the_docs_runs(path, tmp_path, monkeypatch):
    run_python_blocks(path, tmp_path, monkeypatch)


# --- each check can fail ------------------------------------------------------------------------------------------
BROKEN = """\
# A page

Text, and `python train.py strategy=frozn` inline (not a block: not checked).

```bash
python train.py dataset=folder dataset.root=/path/to/images strategy=frozen   # fine
python train.py dataset=folder dataset.root=/path/to/images \\
    strategy=frozn            # a typo in a group option
python train.py dataset.batchsize=4
python train.py -m strategy=frozen,finetune seed=1,2 optimizer.lr=0,0.01 dataset.batch_size=8,two
python eval.py ckpt_path=outputs/train/runs/x split=val toop_k=3
python predict.py ckpt_path=x.ckpt output=preds.csv
python export.py ckpt_path=x.ckpt format=onnx +opsett=17
python train.py strategy.trainable_stages=two   # error: not an integer
python train.py strategy=frozen                 # fails, says this page, but it does not
```

- In a list:

  ```
  $ python train.py backbone=resnet81
  error: backbone=resnet81 is not an option of backbone
  ```
"""


def _failures(tmp_path: Path, text: str) -> dict[int, str]:
    page = tmp_path / "page.md"
    page.write_text(text)
    out = {}
    for cmd in commands_in(page):
        failure = report(cmd, problems(cmd))
        if failure:
            out[cmd.line] = failure
    return out


def test_a_broken_command_in_a_page_is_reported_with_its_file_line_and_command(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(BROKEN)
    commands = commands_in(page)
    assert [c.line for c in commands] == [6, 7, 9, 10, 11, 12, 13, 14, 15, 21]  # the inline one is not a block
    assert commands[1].argv == ("dataset=folder", "dataset.root=/path/to/images", "strategy=frozn")
    assert commands[-1].argv == ("backbone=resnet81",)  # the transcript's output line is not a command
    failures = _failures(tmp_path, BROKEN)
    assert sorted(failures) == [7, 9, 10, 11, 12, 13, 15, 21]
    assert failures[7].startswith(f"{page}:7: python train.py dataset=folder dataset.root=/path/to/images")
    assert "strategy=frozn is not an option of strategy" in failures[7]
    assert "dataset.batchsize" in failures[9]
    # the sweep: every job but the one with lr=0.01 fails (its first values include lr=0), each named with its cause
    sweep = failures[10].splitlines()[1:]
    assert [line.split("]")[0] for line in sweep] == [
        "  [strategy=frozen seed=1 optimizer.lr=0 dataset.batch_size=8",
        "  [strategy=finetune seed=1 optimizer.lr=0 dataset.batch_size=8",
        "  [strategy=frozen optimizer.lr=0 dataset.batch_size=8 seed=2",
        "  [strategy=frozen seed=1 optimizer.lr=0 dataset.batch_size=two"]
    assert "optimizer.lr=0: the learning rate must be > 0" in sweep[0] and "'two'" in sweep[3]
    assert "toop_k is not a key of the eval config; did you mean top_k?" in failures[11]
    assert "inputs" in failures[12]  # predict.py without inputs=: its ??? is left
    assert "opsett" in failures[13]
    assert "documented to fail" in failures[15]
    assert "resnet81" in failures[21]


def test_sweeps_expand_to_every_value_and_comments_and_placeholders_are_not_arguments(tmp_path):
    text = ("```bash\n"
            "python train.py -m backbone=efficientnet_lite0,resnet18 strategy=frozen,finetune seed=1,2,3  # 12\n"
            "python eval.py ckpt_path=<run dir> split=val 2>&1 | tee log.txt\n"
            "CUDA_VISIBLE_DEVICES=0 python export.py ckpt_path=x.ckpt 'verify_inputs=\"/data/my photos\"'\n"
            "```\n")
    page = tmp_path / "p.md"
    page.write_text(text)
    sweep, evaluate, export = commands_in(page)
    assert sweep.comment == "12"
    jobs = expand(sweep).jobs
    assert len(jobs) == 1 + 1 + 1 + 2  # the first values, then each other value once; not all 12 jobs
    assert [_job_name(*job) for job in jobs] == [
        "backbone=efficientnet_lite0 strategy=frozen seed=1", "backbone=resnet18 strategy=frozen seed=1",
        "backbone=efficientnet_lite0 strategy=finetune seed=1", "backbone=efficientnet_lite0 strategy=frozen seed=2",
        "backbone=efficientnet_lite0 strategy=frozen seed=3"]
    assert len({overrides for overrides, _ in jobs}) == 3  # the seeds: values set on the first job, not composed
    assert evaluate.argv == ("ckpt_path=placeholder", "split=val")
    assert export.argv == ("ckpt_path=x.ckpt", 'verify_inputs="/data/my photos"')
    assert _failures(tmp_path, text) == {}


@pytest.mark.parametrize("overrides", [
    ("dataset=folder", "dataset.root=/path/to/images", "strategy=lpft", "optimizer.lr=0.01", "+repeat.seeds=[1,2]"),
    ("experiment=lpft_fast", "~strategy.train.backbone", "dataset.batch_size=8", "seed=3"),
])
def test_the_shared_composition_of_group_options_is_the_full_composition(overrides):
    """job_config applies the overrides to a shared composition of the group options: the same config."""
    from omegaconf import OmegaConf

    fast, full = (OmegaConf.to_container(c) for c in (job_config("train", overrides), composed("train", overrides)))
    fast_hydra, full_hydra = fast.pop("hydra"), full.pop("hydra")
    assert fast == full
    assert fast_hydra["runtime"]["choices"] == full_hydra["runtime"]["choices"]
    assert sorted(fast_hydra["overrides"]["task"]) == sorted(full_hydra["overrides"]["task"])  # (groups first)


def test_a_python_block_that_fails_fails_the_test_and_a_skipped_one_does_not_run(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1 + 1\n```\n\n<!-- skip: next -->\n\n```python\nraise SystemExit('skipped')\n"
                    "```\n\n```python\nassert x == 2\n```\n")
    assert run_python_blocks(page, tmp_path, monkeypatch) == 4  # 3 blocks + the skip directive
    page.write_text("```python\nfrom transferlab.config.compose import compose_train_config\n"
                    "compose_train_config('/path/to/images', ['strategy=frozn'])\n```\n")
    with pytest.raises(Exception, match="frozn"):
        run_python_blocks(page, tmp_path, monkeypatch)
