"""What a sweep directory holds: its jobs (`find_jobs`), the overrides that tell them apart (`defining_keys`),
which of those are repetitions (`repeat_keys`), and the configurations the jobs form (`group_configs`).

Read from what every job leaves in its own directory (`.hydra/overrides.yaml`, `.hydra/hydra.yaml`,
`summary.json`); a job run with `repeat` is listed as its repetitions, whose directory names
`transferlab.jobs.repetitions` spells and parses.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transferlab.jobs.repetitions import parse_rep_dir
from transferlab.record import RunRecord

# Override keys whose values are repetitions of one configuration, not different configurations.
REPEAT_KEYS = ("seed", "dataset.fold")


def short(value: str) -> str:
    """0.0006357455342408315 -> 0.0006357 (Optuna's samples); anything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.isdigit() else value


@dataclass
class Job:
    """One job directory of a sweep, as it was found on disk."""

    dir: Path
    num: int | None
    overrides: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if not self.summary:
            return "incomplete"
        return str(self.summary.get("status", "ok"))

    @property
    def error(self) -> str:
        if not self.summary:
            return "no summary.json: still running, killed, or crashed before writing it"
        return str(self.summary.get("error") or "")

    def metric(self, key: str) -> Any:
        value = self.summary.get(key)
        return None if isinstance(value, float) and not math.isfinite(value) else value

    def leak_free(self) -> dict[str, Any] | None:
        """{accuracy, images, leaked}: the job's best val accuracy without the val images that have a
        near-duplicate in train (its quality check's), when it found any."""
        try:
            return RunRecord.from_dict(self.summary).leak_free() if self.summary else None
        except (TypeError, ValueError):
            return None

    def label(self, keys: list[str]) -> str:
        name = f"#{self.num}" if self.num is not None else self.dir.name
        return " ".join([name, *(f"{k}={short(self.overrides[k])}" for k in keys if k in self.overrides)])


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under `sweep_dir`: one with a `.hydra/` folder or a `summary.json`. A job run with
    `repeat` (transferlab.jobs) is listed as its repetitions (`rep_seed<s>_fold<i>/`), each with the seed
    or fold as an override, so they aggregate and pair like repetitions of a `seed=` / `dataset.fold=` sweep."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob("summary.json")}
    dirs = {d for d in dirs if parse_rep_dir(d.name) is None or d.parent not in dirs}  # repetitions come below
    jobs = []
    for d in dirs:
        job = _read_job(d)
        reps = sorted(r for r in d.iterdir() if parse_rep_dir(r.name) is not None and (r / "summary.json").is_file())
        if reps:
            jobs.extend(_repeat_job(job, r) for r in reps)
        else:
            jobs.append(job)
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, _natural(str(j.dir))))


def _repeat_job(job: Job, rep_dir: Path) -> Job:
    """One repetition of a `repeat` job: the job's overrides plus its seed and/or fold."""
    rep = parse_rep_dir(rep_dir.name)
    overrides = dict(job.overrides)
    if rep.seed is not None:
        overrides["seed"] = str(rep.seed)
    if rep.fold is not None:
        overrides["dataset.fold"] = str(rep.fold)
    return Job(dir=rep_dir, num=job.num, overrides=overrides, summary=_read_job(rep_dir).summary)


def _read_job(job_dir: Path) -> Job:
    overrides: dict[str, str] = {}
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key] = value
    summary: dict[str, Any] = {}
    summary_file = job_dir / "summary.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError as e:  # a job killed while writing it
            summary = {"status": "failed", "error": f"unreadable summary.json: {e}"}
    return Job(dir=job_dir, num=_job_num(job_dir), overrides=overrides, summary=summary)


def _job_num(job_dir: Path) -> int | None:
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        try:
            num = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("job", {}).get("num")
            if isinstance(num, int):
                return num
        except yaml.YAMLError:
            pass
    return int(job_dir.name) if job_dir.name.isdigit() else None


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def defining_keys(jobs: list[Job]) -> list[str]:
    """The override keys that tell the jobs apart (all of them when nothing varies, e.g. a single job)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    return varying if varying else keys


def repeat_keys(jobs: list[Job], keys: list[str]) -> list[str]:
    """The defining keys that are repetitions (`REPEAT_KEYS`) and take more than one value in this sweep."""
    return [k for k in keys if k in REPEAT_KEYS and len({j.overrides.get(k) for j in jobs}) > 1]


@dataclass
class Config:
    """The jobs of one configuration: the same values of every defining key but the repetition keys."""

    values: dict[str, str]
    jobs: list[Job]

    @property
    def name(self) -> str:
        """What the paired comparison calls it: the value alone when one key defines configurations."""
        if len(self.values) == 1:
            return short(next(iter(self.values.values())))
        return self.label

    @property
    def label(self) -> str:
        return " ".join(f"{k}={short(v)}" for k, v in self.values.items()) or "all jobs"

    def ok(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "ok" and j.metric("val/acc_best") is not None]

    def status(self) -> str:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())


def group_configs(jobs: list[Job], config_keys: list[str]) -> list[Config]:
    """Jobs grouped by their values of `config_keys`, in the order of each configuration's first job."""
    groups: dict[tuple, Config] = {}
    for job in jobs:
        key = tuple(job.overrides.get(k) for k in config_keys)
        if key not in groups:
            groups[key] = Config({k: v for k, v in zip(config_keys, key, strict=True) if v is not None}, [])
        groups[key].jobs.append(job)
    return list(groups.values())
