"""The one results writer of bench/: `bench/results/<bench>/latest.json` (+ `latest.md`), with provenance.

Layout: one folder per bench, holding only its latest figures (older runs live in git history)::

    bench/results/<bench>/latest.json   {"bench": ..., "entries": {<key>: {"meta": {...}, "data": {...},
                                                                          "markdown": [...]}}}
    bench/results/<bench>/latest.md     every entry's table, oldest first

Several invocations of one bench coexist as separate *entries*, keyed by their arguments (by default the
command's arguments, e.g. `--data flowers12 --arms lpft`; a bare run is `default`). A new run replaces only the
entry with its own key and keeps the others, each with its own `meta` (machine, date, command, commit, and
`stamp`, the run's local time as `YYYY-MM-DD_HH-MM-SS`: the name the file of that run had before this layout).
A script that reads another bench's results (tta.py, paired.py) names an entry `latest.json@<stamp>`
(`bench/results/accuracy/latest.json@2026-12-04_15-18-08`); a bare `latest.json` is its newest entry.
`bench/render.py` turns every latest.json into docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RESULTS_ENV = "TRANSFERLAB_BENCH_RESULTS"  # another results folder (tests that run a bench end to end)


def results_dir() -> Path:
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else RESULTS


def git_commit(cwd: Path = ROOT) -> str | None:
    """`git rev-parse HEAD`, plus `-dirty` when the tree has changes; None outside git (or without git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def machine() -> dict:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # a bench that never imports torch still records where it ran
        torch_version = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch_version}


def default_command() -> str:
    return " ".join(["python", f"bench/{Path(sys.argv[0]).name}", shlex.join(sys.argv[1:])]).rstrip()


def entry_key(command: str) -> str:
    """The arguments of `python bench/<script> <args>`; `default` for a bare run."""
    words = shlex.split(command)
    args = words[2:] if len(words) >= 2 and words[0].startswith("python") else words[1:]
    return shlex.join(args) or "default"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would stay on the results
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_latest(bench: str, results: Path | None = None) -> dict:
    path = (results or results_dir()) / bench / "latest.json"
    if not path.exists():
        return {"bench": bench, "entries": {}}
    return json.loads(path.read_text())


def select_entry(spec: str | Path) -> dict:
    """The entry `path/latest.json@<stamp>` names (a bare latest.json: its newest entry); its `data` and `meta`.

    A file of the layout before this one (`{"argv": ..., "results": ...}`, from git history) is read as one entry.
    """
    path, _, stamp = str(spec).partition("@")
    doc = json.loads(Path(path).read_text())
    if "entries" not in doc:
        return {"meta": {}, "data": doc, "markdown": []}
    entries = list(doc["entries"].values())
    if not entries:
        raise SystemExit(f"{path}: no entries")
    if not stamp:
        return max(entries, key=lambda e: e["meta"].get("date") or "")
    found = [e for e in entries if (e["meta"].get("stamp") or "").startswith(stamp)]
    if len(found) != 1:
        stamps = ", ".join(sorted(e["meta"].get("stamp") or "?" for e in entries))
        raise SystemExit(f"{spec}: {len(found)} entries have stamp {stamp!r}; the entries: {stamps}")
    return found[0]


def render_markdown(doc: dict) -> str:
    """latest.md: each entry's heading (its key), provenance line and table."""
    out = [f"# {doc['bench']}: latest results", "",
           "Generated by bench/_results.py; the raw figures are in latest.json.", ""]
    for key, e in sorted(doc["entries"].items(), key=lambda kv: (kv[1]["meta"].get("date") or "", kv[0])):
        m = e["meta"]
        out += [f"## `{key}`", "",
                f"`{m['command']}` | {m['date']} (stamp `{m.get('stamp')}`) | commit {m.get('commit') or 'unknown'}",
                ""]
        out += [*e["markdown"], ""]
    return "\n".join(out).rstrip() + "\n"


def write_latest(bench: str, data: dict, markdown: list[str], command: str | None = None, *,
                 key: str | None = None, meta: dict | None = None, results: Path | None = None) -> Path:
    """Record one run of `bench` as the entry `key` of `bench/results/<bench>/latest.json`; return that path.

    `command` defaults to `python bench/<script> <argv>`; `key` to the command's arguments (see the module
    docstring). The entries of other keys are kept. `meta` overrides fields of the recorded meta block
    (used by migrations); `results` is the results folder (default: $TRANSFERLAB_BENCH_RESULTS, else
    bench/results). Both files are replaced atomically.
    The table is printed too.
    """
    command = command or default_command()
    key = key or entry_key(command)
    results = results or results_dir()
    now = dt.datetime.now().astimezone()
    entry_meta = {"command": command, "date": now.isoformat(timespec="seconds"),
                  "stamp": now.strftime("%Y-%m-%d_%H-%M-%S"), "commit": git_commit(), "machine": machine(),
                  **(meta or {})}
    doc = load_latest(bench, results)
    doc["bench"] = bench
    doc.setdefault("entries", {})[key] = {"meta": entry_meta, "data": data, "markdown": list(markdown)}
    doc["entries"] = dict(sorted(doc["entries"].items()))
    out = results / bench / "latest.json"
    _atomic_write(out, json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")
    _atomic_write(out.with_name("latest.md"), render_markdown(doc))
    print("\n".join(markdown))
    print(f"\n[results] wrote entry {key!r} of {out} and latest.md")
    return out
