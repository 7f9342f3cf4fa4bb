"""The command line of `train.py`, `eval.py`, `predict.py` and `export.py`: a mistake in it is one line.

A config mistake answers `error: <what>` and exit status 2, naming the key or argument the user typed, what it
takes and a close match, where Hydra would print a stack trace, several lines of its own or nothing at all:

- an argument Hydra's override grammar cannot parse (a path with a space split by the shell, or with `é`, `=`,
  `'`, `~`): `check_arguments` parses each one before Hydra does and says how to quote it, e.g.
  `'dataset.root="/data/my photos"'` (a comma, which makes a sweep outside a multirun: `config_error_line`);
- a composition or value error (an unknown key or option, a value of the wrong type, also one reached through an
  interpolation: `seed=abc` names `seed`, not `dataset.split_seed`): `config_error_line`, the one place such an
  error becomes a line, for `command_line` (Hydra's errors, which it re-raises here) and for the typed settings;
- a key added with `+` that nothing reads (`+foo=1`, `+optimizer.lrr=0.1`): `check_added_keys`, before any data.

Light: Hydra's parser and OmegaConf only (a `+` key under a `_target_` imports that target, to read its
arguments).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import shlex
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transferlab.errors import EXIT_USER_ERROR, ConfigValueError

FULL_ERROR = "HYDRA_FULL_ERROR"  # set: Hydra re-raises what it would print (the user's own setting: tracebacks)
_SPECIAL_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
_PLAIN = re.compile(r"[A-Za-z0-9_./@:-]+")


# --- quoting ---------------------------------------------------------------------------------------------------
def quoted(value: str) -> str:
    """`value` as an override's value that Hydra parses back to exactly this string: as is when the grammar
    takes it so (`/data/flowers`), else double-quoted (`"/data/my photos"`, `"/data/café"`; `"` and the
    backslashes before one escaped)."""
    if _PLAIN.fullmatch(value) and _parsed_value(f"k={value}") == value:
        return value
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, value).replace('"', '\\"')
    return f'"{escaped}"'


def with_checkpoint(command: str, checkpoint: str) -> str:
    """A resume command's `{ckpt}` filled in: the path quoted for Hydra's grammar, then for the shell."""
    return command.replace("{ckpt}", shlex.quote(quoted(checkpoint)))


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell, readably: in single quotes, or in double quotes when it holds one."""
    if "'" not in word:
        return f"'{word}'"
    return '"' + re.sub(r'([\\"$`])', r"\\\1", word) + '"'


def _parsed_value(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 (any parse failure: not taken as is)
        return None


# --- the arguments, before Hydra parses them -------------------------------------------------------------------
def check_arguments(argv: Sequence[str]) -> None:
    """Parse each override of `argv` (the command line after the script) as Hydra will; the first one that does
    not parse is refused in one line naming it and the quoted form that works. (A comma, which makes a sweep, is
    Hydra's to refuse outside a multirun: `config_error_line` says how to quote it.)"""
    from hydra._internal.utils import get_args_parser  # the parser of @hydra.main itself
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, _ = get_args_parser().parse_known_args(list(argv))
    words = list(args.overrides or [])
    parser = OverridesParser.create()
    for i, word in enumerate(words):
        try:
            parser.parse_override(word)
        except HydraException as e:
            raise ConfigValueError(_unparsable(words, i, str(e).splitlines()[0])) from None


def _unparsable(words: list[str], i: int, reason: str) -> str:
    word = words[i]
    key, equals, value = word.partition("=")
    if not equals and i > 0 and "=" in words[i - 1]:  # the shell split a value at its spaces
        start = i - 1
        end = i + 1
        while end < len(words) and "=" not in words[end]:
            end += 1
        key, _, value = " ".join(words[start:end]).partition("=")
        return (f"could not parse the override {word!r} (after {words[start]}): a value with a space must be one "
                f"argument; quote the value: {shell_word(f'{key}={quoted(value)}')}")
    if not equals:
        return f"could not parse the override {word} ({reason}): an override is key=value"
    return f"could not parse the override {word} ({reason}): quote the value: {shell_word(f'{key}={quoted(value)}')}"


# --- Hydra's errors, as one line -------------------------------------------------------------------------------
@contextmanager
def command_line(argv: Sequence[str] | None = None) -> Iterator[None]:
    """Run an entry point's `@hydra.main` function so that a mistake on its command line or in its config is
    `error: <one line>`, exit 2: the arguments are parsed first, and Hydra, told to re-raise (HYDRA_FULL_ERROR),
    hands its composition errors here. Anything else is a bug: its traceback, exit 1. HYDRA_FULL_ERROR=1 set by
    the user: every error keeps its traceback."""
    users = os.environ.get(FULL_ERROR)
    try:
        check_arguments(sys.argv[1:] if argv is None else argv)
        os.environ[FULL_ERROR] = "1"
        yield
    except Exception as e:
        if users is not None:
            raise
        line = config_error_line(e)
        if line is None:
            traceback.print_exc()
            sys.exit(1)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        if users is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = users


def config_error_line(e: BaseException) -> str | None:
    """A config mistake as one line naming the key the user typed, what it takes and a close match; None for
    anything else (a bug, whose traceback is kept). The one place Hydra's and OmegaConf's composition and value
    errors become lines."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(e, ConfigValueError):
        return str(e)
    if isinstance(e, MissingConfigException):
        return _missing_option(e)
    if isinstance(e, OverrideParseException):
        return f"could not parse an override: {_one_line(str(e))}"
    composing = isinstance(e, ConfigCompositionException)
    cause = e.__cause__ if composing else e  # Hydra's exception wraps OmegaConf's, which names the key
    if composing and isinstance(cause, ConfigAttributeError | ConfigKeyError):  # (raised by a task: its bug)
        return _unknown_key(cause)
    if isinstance(cause, InterpolationResolutionError):
        return _interpolation(cause)
    if isinstance(cause, ValidationError):
        return f"{_key_value(cause)}: {_message(cause)}."
    if isinstance(cause, MissingMandatoryValue):
        key = getattr(cause, "full_key", None) or "a key"
        return f"{key} has no value; give one on the command line: {key}=..."
    sweep = re.match(r"Ambiguous value for argument '(.*)'", str(e))
    if composing and sweep:  # `dataset.root=/data/a,b` outside a multirun
        key, _, value = sweep[1].partition("=")
        return (f"{sweep[1]}: a comma separates the values of a sweep (add -m to sweep over them); to keep it in "
                f"the value, quote the value: {shell_word(f'{key}={quoted(value)}')}")
    if composing:
        return _one_line(f"{e} {cause}" if isinstance(cause, OmegaConfBaseException) else str(e))
    return None


def _missing_option(e: Any) -> str:
    """`backbone=resnet81`: not an option of the group; the closest ones and all of them."""
    missing = str(getattr(e, "missing_cfg_file", "") or "")
    group, _, option = missing.rpartition("/")
    options = sorted(getattr(e, "options", None) or [])
    where = re.match(r"In '([^']+)'", str(e))
    inside = f" (in {where[1]})" if where and "/" in where[1] else ""
    if not group or not options:
        return _one_line(str(e).split("Config search path")[0])
    return (f"{group}={option} is not an option of {group}{inside}{_did_you_mean(option, options, group + '=')} "
            f"Options: {', '.join(options)}.")


def _unknown_key(cause: Any) -> str:
    """`optimizer.lrr=0.1`: not a key of its node; the closest keys and all of them."""
    full_key = str(getattr(cause, "full_key", "") or getattr(cause, "key", ""))
    parent, _, key = full_key.rpartition(".")
    node = getattr(cause, "parent_node", None)
    keys = [str(k) for k in (node.keys() if node is not None else []) if not str(k).startswith("_")]
    if not parent:
        keys = sorted(k for k in keys if k != "hydra")
    return _not_a_key(full_key, parent, keys, _choice(parent))


def _not_a_key(full_key: str, parent: str, keys: Iterable[str], described: str | None = None) -> str:
    keys = list(keys)
    key = full_key.rpartition(".")[2]
    where = f"{parent} ({described})" if parent and described else (parent or f"the {_config_name()} config")
    prefix = f"{parent}." if parent else ""
    return f"{full_key} is not a key of {where}{_did_you_mean(key, keys, prefix)} Keys: {', '.join(keys)}."


def _did_you_mean(word: str, choices: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ";"


def _interpolation(cause: Any) -> str:
    """A value that fails where it is used through `${key}`: name `key`, the one the user typed."""
    text = _message(cause)
    match = re.match(r"While dereferencing interpolation '\$\{([\w.]+)\}': (.*)", text)
    full_key = getattr(cause, "full_key", None)
    if match is None:
        return f"{full_key}: {text}." if full_key else f"{text}."
    source, reason = match[1], match[2]
    value = _value_at(cause, source)
    follows = f" ({full_key} follows it)" if full_key else ""
    return f"{source}={value}: {reason}{follows}."


def _value_at(cause: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    node = getattr(cause, "parent_node", None)
    try:
        return OmegaConf.select(node._get_root(), key, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 (only for the message)
        return "?"


def _key_value(cause: Any) -> str:
    key = getattr(cause, "full_key", None) or getattr(cause, "key", None) or "a value"
    value = getattr(cause, "value", None)
    return f"{key}={value}" if value is not None else str(key)


def _message(cause: Any) -> str:
    """OmegaConf's message without its `full_key: ... object_type=...` lines."""
    return str(getattr(cause, "msg", None) or cause).splitlines()[0].strip().rstrip(".")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _hydra_runtime() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _choice(group: str) -> str | None:
    hydra_cfg = _hydra_runtime()
    choices = hydra_cfg.runtime.choices if hydra_cfg is not None else {}
    return choices.get(group) if group else None


def _config_name() -> str:
    hydra_cfg = _hydra_runtime()
    # while Hydra composes, no HydraConfig yet: the entry point's (train.py: train)
    return (hydra_cfg.job.get("config_name") if hydra_cfg is not None else None) or Path(sys.argv[0]).stem


# --- keys added with `+` -----------------------------------------------------------------------------------------
def check_added_keys(cfg: Any, optional: Iterable[str] = ()) -> None:
    """Refuse a key the command line added with `+` that nothing will read, before any data is touched: a new
    top-level key (unless the task reads it without a file defining it: `optional`, e.g. train's `repeat`), a
    key under a `_target_` its target does not take (`+optimizer.lrr`: SGD's arguments), a key of a schema node.
    Keys added under anything else (a new callback, a node of plain settings) are the user's to add."""
    hydra_cfg = _hydra_runtime()
    if hydra_cfg is None:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(hydra_cfg.runtime.choices)
    added = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
             if o.is_add() and o.key_or_group not in groups and not o.key_or_group.startswith("hydra.")]
    if not added:
        return
    optional = set(optional)
    new_tops = {key.split(".")[0] for key in added if _only_added(cfg, key.split(".")[0], added)}
    known = sorted(k for k in cfg if k not in new_tops and k != "hydra") + sorted(optional - set(cfg))
    for key in added:
        top = key.split(".")[0]
        if top in new_tops:
            if top not in optional:
                raise ConfigValueError(_not_a_key(top, "", known))
            continue
        _check_under_owner(cfg, key)


def _only_added(cfg: Any, path: str, added: Sequence[str]) -> bool:
    """Everything at `path` came from `+` overrides (it was not in the composed files)."""
    from omegaconf import DictConfig, OmegaConf

    if path in added:
        return True
    node = OmegaConf.select(cfg, path, throw_on_resolution_failure=False, throw_on_missing=False)
    if not isinstance(node, DictConfig) or not len(node):
        return False
    return all(_only_added(cfg, f"{path}.{k}", added) for k in node)


def _check_under_owner(cfg: Any, key: str) -> None:
    """`key`'s nearest enclosing `_target_` node or schema node takes it."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        path, name = ".".join(parts[:i]), parts[i]
        node = OmegaConf.select(cfg, path, throw_on_resolution_failure=False, throw_on_missing=False)
        if not isinstance(node, DictConfig):
            continue
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            fields = [f.name for f in dataclasses.fields(schema)]
            if name not in fields:
                raise ConfigValueError(_not_a_key(f"{path}.{name}", path, fields, _choice(path)))
            return
        if "_target_" in node:
            if name in _SPECIAL_KEYS:
                return
            accepted = _arguments(str(node._target_))
            if accepted is not None and name not in accepted:
                stated = [str(k) for k in node if not str(k).startswith("_") and str(k) != name]
                keys = [*(k for k in stated if k in accepted), *(k for k in accepted if k not in stated)]
                raise ConfigValueError(_not_a_key(f"{path}.{name}", path, keys,
                                                  _choice(path) or str(node._target_)))
            return


def _arguments(target: str) -> list[str] | None:
    """The keyword arguments `target` takes; None when it takes any (`**kwargs`) or cannot be looked at."""
    try:
        from hydra.utils import get_object

        signature = inspect.signature(get_object(target))
    except Exception:  # noqa: BLE001 (not importable here: instantiating it will say why)
        return None
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
