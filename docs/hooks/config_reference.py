"""mkdocs hook: the configuration reference, generated at build time.

`docs/configuration.md` holds the hand-written introduction and the marker below; this hook replaces the marker
with a reference built from the sources themselves, so the page cannot drift from the code:

- the keys of `dataset`, `backbone`, `strategy`, `head` and `recipe` (with their nested `input`, `augment`,
  `head_fit`, `head_fit.training`): `dataclasses.fields` of the schema in `src/transferlab/config/schema.py`,
  with their types, defaults and the comments beside and above each field in the source;
- every option of every config group: the files `conf/<group>/*.yaml`, with their header comment, what they
  extend or pick, and the values they set (with the comments beside them);
- the top-level keys of `conf/train.yaml`, `eval.yaml`, `predict.yaml` and `export.yaml`.

It imports `transferlab.config.schema` only (no Hydra, torch or Lightning), and reads YAML with PyYAML.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
MARKER = "<!-- generated: config reference -->"
PAGE = "configuration.md"

# Groups in the order of conf/train.yaml's defaults list, then the ones it does not select by default.
TASK_FILES = ("eval", "predict", "export")


# --- markdown helpers -------------------------------------------------------------------------------------------
def prose(text: str) -> str:
    """Comment text as Markdown: code spans kept, everything else escaped (`<class>`, `*`, `_`, `|`)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: no code spans at all
        parts = [text.replace("`", "'")]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"`{part}`")
        else:
            part = html.escape(part, quote=False)
            part = re.sub(r"([*_|\[\]])", r"\\\1", part)
            out.append(part)
    return "".join(out)


def code(value: Any) -> str:
    """A value as YAML would spell it, in a code span."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value if value else '""'
    elif isinstance(value, dict) and not value:
        text = "{}"
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        if text.endswith("..."):
            text = text[:-3].strip()
    return "`" + text.replace("`", "'") + "`"  # a | inside a code span splits no table cell


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return [*lines, ""]


# --- the schema -------------------------------------------------------------------------------------------------
def field_comments(cls: type) -> dict[str, str]:
    """Each field's comments in the class source: the comment lines directly above it and the one beside it."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    inline: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            inline[tok.start[0]] = tok.string.lstrip("#").strip()
    tree = ast.parse(source)
    out: dict[str, str] = {}
    for node in tree.body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        n = node.lineno - 1  # 1-based line of the field; look at the lines above it
        while n - 1 >= 0 and lines[n - 1].strip().startswith("#"):
            above.insert(0, lines[n - 1].strip().lstrip("#").strip())
            n -= 1
        beside = [inline[ln] for ln in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                  if ln in inline and not lines[ln - 1].strip().startswith("#")]
        out[node.target.id] = " ".join([*above, *beside]).strip()
    return out


def annotations(cls: type) -> dict[str, str]:
    """Each field's annotation as written in the source (`float | None`, `dict[str, float]`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {node.target.id: ast.unparse(node.annotation) for node in tree.body[0].body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def schema_tables(schema: Any, cls: type, prefix: str, follow: dict[str, str], anchors: dict[str, str]) -> list[str]:
    """One table for `cls` (keys under `prefix`), then one per nested dataclass."""
    comments, types = field_comments(cls), annotations(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        value = default_of(f)
        relative = key.split(".", 1)[1]
        if dataclasses.is_dataclass(value):
            nested.append((f.name, type(value)))
            default = f"[below](#{anchors[key]})"
        elif relative in follow:
            default = code(follow[relative]) + " (the run's)"
        elif value == schema.MISSING:
            default = "required"
        else:
            default = code(value)
        hint = types.get(f.name, "")
        rows.append([f"`{f.name}`", f"`{hint}`", default, prose(comments.get(f.name, ""))])
    doc = inspect.getdoc(cls) or ""
    lines = [f"### `{prefix}` keys {{#{anchors[prefix]}}}", "", prose(" ".join(doc.split())), "",
             f"From `{cls.__module__}.{cls.__name__}`; each key below is `{prefix}.<key>` on the command line.", ""]
    lines += table(["key", "type", "default", "meaning"], rows)
    for name, sub in nested:
        lines += schema_tables(schema, sub, f"{prefix}.{name}", follow, anchors)
    return lines


# --- YAML files -------------------------------------------------------------------------------------------------
KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[^\s#:][^:#]*?):(?=\s|$)(?P<rest>.*)$")


def split_comment(rest: str) -> tuple[str, str]:
    """'value  # comment' -> ('value', 'comment'), minding quotes (a # must follow whitespace)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def yaml_file(path: Path) -> tuple[str, dict[str, str]]:
    """The file's header comment (its leading comment lines, without `# @package`) and a comment per dotted key
    (`defaults.<group>` for a defaults-list entry): the comment lines directly above a key, the one beside it, and
    comment lines continuing it (indented under it, or a chain of inline comments that began with one ending in
    ':')."""
    lines = path.read_text().splitlines()
    header = []
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        text = lines[i].lstrip("#")
        if lines[i].startswith("#") and not text.strip().startswith("@package"):
            header.append(text.rstrip())
        i += 1
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last_key, last_indent, chain = None, -1, False
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            pending, chain = [], False
            continue
        if stripped.startswith("#"):
            indent = len(line) - len(line.lstrip())
            text = stripped.lstrip("#").strip()
            if last_key is not None and comments.get(last_key) and indent > last_indent:
                comments[last_key] += " " + text
            else:
                pending.append(text)
            continue
        m = KEY.match(line)
        if not m:
            pending = []
            continue
        name = m.group("key").strip()
        indent = len(m.group("indent"))
        if m.group("dash"):  # a defaults-list entry: `- optional group: option  # comment`
            name = re.sub(r"^(optional|override)\s+", "", name).lstrip("/")
            key = ".".join([*(k for _, k in stack), name])
        else:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = ".".join([*(k for _, k in stack), name])
            stack.append((indent, name))
        _, comment = split_comment(m.group("rest"))
        if chain and comment and last_key is not None:
            comments[last_key] += " " + comment
            chain = not comment.endswith(".")
            pending = []
            continue
        comments[key] = " ".join([*pending, comment]).strip()
        pending = []
        last_key, last_indent = key, indent
        chain = comment.endswith(":")
    return "\n".join(header), comments


def header_markdown(header: str) -> str:
    """A header comment as one paragraph; its indented lines and the ones that start with `python ` (example
    commands) as code spans, their trailing `# ...` as words."""
    parts = []
    for line in header.splitlines():
        if re.match(r"^\s{2,}\S", line) or line.strip().startswith("python "):
            command, note = split_comment(line.strip())
            parts.append(f"`{' '.join(command.split())}`" + (f" ({prose(note)})" if note else ""))
        elif line.strip():
            parts.append(prose(line.strip()))
    return " ".join(parts)


def entries(data: Any, comments: dict[str, str], prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, comment) for every leaf, and for every mapping that has a comment of its own."""
    out: list[tuple[str, Any, str]] = []
    if isinstance(data, dict) and data:
        if prefix and comments.get(prefix):
            out.append((prefix, None, comments[prefix]))
        for k, v in data.items():
            out += entries(v, comments, f"{prefix}.{k}" if prefix else str(k))
    elif prefix:
        out.append((prefix, data, comments.get(prefix, "")))
    return out


def is_mapping_row(data: Any, key: str) -> bool:
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and bool(node)


def defaults_words(defaults: list[Any]) -> list[str]:
    """A defaults list in words: what the option extends and what it picks."""
    words = []
    for entry in defaults or []:
        if entry == "_self_":
            continue
        if isinstance(entry, str):
            if entry.startswith("/") and entry.endswith("_schema"):
                words.append(f"extends the `{entry[1:-len('_schema')]}` schema")
            else:
                words.append(f"extends `{entry}`")
        elif isinstance(entry, dict):
            for k, v in entry.items():
                name = k.replace("override ", "").lstrip("/").split("@")[0]
                words.append(f"picks `{name}={v}`")
    return words


def option_entry(group: str, path: Path) -> list[str]:
    """An option: its header, what it extends or picks, and the values it sets (a table when there are many)."""
    header, comments = yaml_file(path)
    data = yaml.safe_load(path.read_text()) or {}
    lines = [f"- **`{group}={path.stem}`**" + (f": {header_markdown(header)}" if header.strip() else "")]
    extra = defaults_words(data.pop("defaults", []) if isinstance(data, dict) else [])
    if extra:
        lines.append(f"    It {', '.join(extra)}.")
    rows = entries(data, comments)
    if len(rows) > 8:
        lines += ["    It sets:", ""]
        cells = [[f"`{key}`", "" if is_mapping_row(data, key) else code(value), prose(comment)]
                 for key, value, comment in rows]
        return [*lines, *table(["key", "value", "meaning"], cells)]
    sets = [f"`{key}: {code(value)[1:-1]}`" + (f" ({prose(comment)})" if comment else "")
            for key, value, comment in rows if not is_mapping_row(data, key)]
    if sets:
        lines.append("    It sets " + "; ".join(sets) + ".")
    return [*lines, ""]


def keys_table(path: Path, skip: tuple[str, ...] = ("defaults", "hydra")) -> list[str]:
    _, comments = yaml_file(path)
    data = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in skip}
    rows = [[f"`{key}`", "" if is_mapping_row(data, key) else code(value), prose(comment)]
            for key, value, comment in entries(data, comments)]
    return table(["key", "default", "meaning"], rows)


# --- the page ---------------------------------------------------------------------------------------------------
def render() -> str:
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from transferlab.config import schema

    train = yaml.safe_load((CONF / "train.yaml").read_text())
    _, train_comments = yaml_file(CONF / "train.yaml")
    order: list[str] = []
    chosen: dict[str, Any] = {}
    for entry in train["defaults"]:
        if isinstance(entry, dict):
            for k, v in entry.items():
                group = k.replace("optional ", "")
                order.append(group)
                chosen[group] = v
    groups = [*order, *sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in order)]
    anchors = {}
    for group, cls in schema.SCHEMAS.items():
        def walk(c: type, prefix: str) -> None:
            anchors[prefix] = "keys-" + prefix.replace(".", "-").replace("_", "-")
            for f in dataclasses.fields(c):
                v = default_of(f)
                if dataclasses.is_dataclass(v):
                    walk(type(v), f"{prefix}.{f.name}")
        walk(cls, group)

    out = ["## Config groups", "",
           "The defaults list of `conf/train.yaml`: each group, the option `python train.py` uses, and the options "
           "there are (`conf/<group>/*.yaml`).", ""]
    rows = []
    for group in groups:
        folder = CONF / group
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        default = chosen.get(group, None)
        rows.append([f"[`{group}`](#group-{group})", code(default) if group in chosen else "not selected",
                     ", ".join(f"`{o}`" for o in options) or "-"])
    out += table(["group", "default", "options"], rows)

    out += ["## `train.py` top-level keys", "",
            "The keys of `conf/train.yaml` outside any group (`python train.py seed=1 resume=false`).", ""]
    out += keys_table(CONF / "train.yaml")

    for group in groups:
        folder = CONF / group
        out += [f"## `{group}` {{#group-{group}}}", ""]
        if group in chosen:
            comment = train_comments.get(f"defaults.{group}", "")
            out += [f"Default: {code(chosen[group])}." + (f" {prose(comment)}" if comment else ""), ""]
        if group in schema.SCHEMAS:
            out += schema_tables(schema, schema.SCHEMAS[group], group, schema.FOLLOW_THE_RUN.get(group, {}), anchors)
            out += [f"### `{group}` options", ""]
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        for path in files:
            out += option_entry(group, path)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            out += [f"### `{group}/{sub.name}` options", ""]
            for path in sorted(sub.glob("*.yaml")):
                out += option_entry(f"{group}/{sub.name}", path)
        if not files and group not in schema.SCHEMAS:
            out += ["No option files.", ""]

    for task in TASK_FILES:
        header, _ = yaml_file(CONF / f"{task}.yaml")
        out += [f"## `{task}.py` keys", "", header_markdown(header), ""]
        out += keys_table(CONF / f"{task}.yaml")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} has lost its marker {MARKER!r}: the generated reference has nowhere to go.")
    return markdown.replace(MARKER, render())


if __name__ == "__main__":  # python docs/hooks/config_reference.py: print the generated part
    print(render())
