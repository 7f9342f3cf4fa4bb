"""What the dataset doctor found: findings (each naming its files) and the `DatasetReport` that holds them.

Kept apart from the checks so the datamodule, the callbacks and the CLI can read and format a report without
knowing how it was produced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from transferlab.data.folders import FolderSplits
from transferlab.data.images import BadImageError

BAD_FILE_CODES = ("unreadable", "too_large")
SEVERITIES = ("error", "warning", "note")


class BadFilesError(BadImageError):
    """Training refused to start on unreadable or over-size files (dataset.on_bad_file=error); names each."""


@dataclass
class Item:
    path: str  # relative to the dataset root
    detail: str = ""


@dataclass
class Finding:
    code: str
    severity: str  # "error" | "warning" | "note"
    message: str
    items: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "files": [{"path": i.path, "detail": i.detail} for i in self.items]}


@dataclass
class Entry:
    """One image file as training would see it."""

    split: str
    cls: str
    path: str  # absolute


@dataclass
class DatasetReport:
    """What the doctor found. `errors` stop training (bad files: per `on_bad_file`); see `format()`."""

    root: str
    layout: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    findings: list[Finding]
    files_checked: int = 0
    from_cache: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    splits: FolderSplits | None = None  # readable samples with the train mapping; None when layout is broken
    bad_files: list[str] = field(default_factory=list)  # absolute paths of unreadable / over-size files
    entries: list[Entry] = field(default_factory=list, repr=False)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def add(self, kind: str, severity: str, message: str, items: list) -> None:
        """Record a finding, only when it has files to name."""
        if items:
            self.findings.append(Finding(kind, severity, message, items))

    # --- views -------------------------------------------------------------------------------------
    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.of("error")

    @property
    def warnings(self) -> list[Finding]:
        return self.of("warning")

    @property
    def notes(self) -> list[Finding]:
        return self.of("note")

    @property
    def layout_errors(self) -> list[Finding]:
        """Errors no policy can train around (bad files are handled by `dataset.on_bad_file`)."""
        return [f for f in self.errors if f.code not in BAD_FILE_CODES]

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    @property
    def imbalance(self) -> dict[str, float]:
        """Largest / smallest class count per split (classes with images only)."""
        out = {}
        for split, by_class in self.counts.items():
            sizes = [n for n in by_class.values() if n > 0]
            if sizes:
                out[split] = round(max(sizes) / min(sizes), 2)
        return out

    # --- checks that need the model's input size ----------------------------------------------------
    def check_min_size(self, crop_size: int | None) -> Finding | None:
        """(Re)compute the `tiny` warning: images whose short side is below the crop they get upscaled to."""
        self.findings = [f for f in self.findings if f.code != "tiny"]
        self.settings["crop_size"] = crop_size
        if not crop_size:
            return None
        items = []
        for e in self.entries:
            facts = self.facts.get(e.path, {})
            w, h = facts.get("width"), facts.get("height")
            if facts.get("decoded") and w and h and min(w, h) < crop_size:
                items.append(Item(self.rel(e.path), f"{w}x{h}"))
        if not items:
            return None
        found = Finding("tiny", "warning",
                        f"{len(items)} image(s) smaller than the {crop_size}px crop; they are upscaled (blurry).",
                        items)
        self._add(found)
        return found

    def _add(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.findings.sort(key=lambda f: SEVERITIES.index(f.severity))  # stable: keeps check order within

    # --- output --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": not self.errors,
            "class_names": self.class_names,
            "class_to_idx": {c: i for i, c in enumerate(self.class_names)},
            "counts": self.counts,
            "imbalance": self.imbalance,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "bad_files": [self.rel(p) for p in self.bad_files],
            "files_checked": self.files_checked,
            "from_cache": self.from_cache,
            "seconds": self.seconds,
            "settings": self.settings,
        }

    def format(self, limit: int | None = 20) -> str:
        """The readable report; at most `limit` files per finding (None: all; the JSON always has all)."""
        layout = {"train_val": "train/ + val/", "split": f"one folder, split {self.settings.get('val_fraction')} "
                  f"to val (seed {self.settings.get('seed')})", "invalid": "INVALID"}.get(self.layout, self.layout)
        mapping = ", ".join(f"{c}={i}" for i, c in enumerate(self.class_names))
        lines = [
            f"Dataset doctor: {self.root}",
            f"Layout: {layout}; {len(self.class_names)} classes (label = sorted position): {mapping or '-'}",
            f"Checked {self.files_checked} image files in {self.seconds:.2f} s ({self.from_cache} from cache)",
            "",
            *self._count_table(),
            "",
        ]
        titles = {"error": "Errors", "warning": "Warnings", "note": "Notes (handled, for information)"}
        for severity in SEVERITIES:
            found = self.of(severity)
            lines.append(f"{titles[severity]} ({len(found)}){':' if found else ': none'}")
            for f in found:
                lines.append(f"  [{f.code}] {f.message}")
                shown = f.items if limit is None else f.items[:limit]
                lines += [f"      {i.path}" + (f": {i.detail}" if i.detail else "") for i in shown]
                if len(shown) < len(f.items):
                    lines.append(f"      ... and {len(f.items) - len(shown)} more (see the JSON report, or --all)")
        lines += ["", self.verdict()]
        return "\n".join(lines)

    def verdict(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        if self.layout_errors:
            return f"Verdict: NOT READY - {n_err} error(s); training would fail or learn wrong labels."
        if self.bad_files:
            return (f"Verdict: NOT CLEAN - {len(self.bad_files)} bad file(s); training skips them "
                    "(dataset.on_bad_file=skip, the default) or stops (on_bad_file=error).")
        return f"Verdict: OK to train ({n_warn} warning(s))."

    def _count_table(self) -> list[str]:
        splits = list(self.counts)
        if not splits:
            return ["(no images counted)"]
        classes = list(dict.fromkeys(c for s in splits for c in self.counts[s]))
        width = max([len(c) for c in classes] + [len("largest/smallest")])
        row = "  {:<" + str(width) + "}" + "".join("  {:>7}" for _ in splits)
        out = [row.format("class", *splits)]
        out += [row.format(c, *(self.counts[s].get(c, 0) for s in splits)) for c in classes]
        out.append(row.format("total", *(sum(self.counts[s].values()) for s in splits)))
        ratios = self.imbalance
        out.append(row.format("largest/smallest", *(f"{ratios[s]:.2f}" if s in ratios else "-" for s in splits)))
        return out
