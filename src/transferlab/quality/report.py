"""What the deep quality check found: one `QualityFinding` per near-duplicate group, suspected label error or
outlier, and the `QualityReport` that holds, prints and serialises them (train/val leaks first)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("leak", "duplicate", "label", "outlier")  # the order findings are reported in
WHAT = {"leak": "near-duplicate across train and val", "duplicate": "near-duplicate within a split",
        "label": "suspected label error", "outlier": "outlier: far from every training image"}


@dataclass
class QualityFinding:
    kind: str  # one of KINDS
    files: list[str]  # relative to the dataset root; a leak lists its val file(s) first
    # leak/duplicate: pixel similarity; label: cleanlab's label quality (low = worse); outlier: k-NN distance
    score: float
    given: str | None = None  # label: the folder's class, and the class the out-of-sample head suggests
    suggested: str | None = None
    # leak/duplicate: each file's split ("train"/"val"), parallel to `files`: a val_fraction layout's val files
    # live in the class folders, so the path alone cannot say which side of a leak a file is on
    splits: list[str] | None = None

    def val_files(self) -> list[str]:
        return [f for f, s in zip(self.files, self.splits or [], strict=False) if s == "val"]

    def line(self) -> str:
        label = f"  given {self.given}, suggested {self.suggested}" if self.kind == "label" else ""
        return f"[{self.kind}] {', '.join(self.files)}  score {self.score:.3f}{label}"


@dataclass
class QualityReport:
    root: str
    images: dict[str, int]  # split -> images checked
    findings: list[QualityFinding] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> time
    outlier_ranking: list[str] = field(default_factory=list)  # every image, most outlying first
    duplicates_inconclusive: int = 0  # images too alike at thumbnail scale for pixels to confirm a duplicate

    def of(self, kind: str) -> list[QualityFinding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def leaked_val(self) -> list[str]:
        """Val files with a near-duplicate in train: leave them out for a leak-free val figure."""
        return sorted({f for finding in self.of("leak") for f in finding.val_files()})

    def flagged_paths(self) -> list[str]:
        """Every file a finding names except the first of each group (the one to keep), for `--write-exclude`:
        a leak's val file, a duplicate's later copies, a suspected mislabel, an outlier."""
        out: set[str] = set()
        for f in self.findings:
            if f.kind == "leak":
                out.update(f.val_files())
            elif f.kind == "duplicate":
                out.update(f.files[1:])
            else:
                out.update(f.files)
        return sorted(out)

    def format(self, limit: int | None = 20) -> str:
        lines = [f"Quality check of {self.root}: "
                 + ", ".join(f"{n} {split}" for split, n in self.images.items()) + " images"]
        if self.duplicates_inconclusive:
            lines.append(f"  note: {self.duplicates_inconclusive} images look like their neighbours at thumbnail "
                         "scale (a folder of near-identical layouts): near-duplicates among them cannot be confirmed")
        for kind in KINDS:
            found = self.of(kind)
            if not found:
                lines.append(f"  {WHAT[kind]}: none")
                continue
            lines.append(f"  {WHAT[kind]}: {len(found)}")
            lines += [f"    {f.line()}" for f in found[:limit]]
            if limit is not None and len(found) > limit:
                lines.append(f"    ... {len(found) - limit} more (--all lists every one)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "images": self.images, "seconds": self.seconds,
                "counts": {kind: len(self.of(kind)) for kind in KINDS},
                "duplicates_inconclusive": self.duplicates_inconclusive, "leaked_val": self.leaked_val,
                "findings": [asdict(f) for f in self.findings],
                "outlier_ranking": self.outlier_ranking[:100]}


def leak_free(files: Sequence[str], correct: Sequence[bool], leaked: Sequence[str], root: str) -> dict[str, Any] | None:
    """Accuracy over `files` (absolute or relative to `root`) without the `leaked` val files (relative to `root`):
    {accuracy, images, leaked}; None when nothing leaked or nothing is left. Shared by a training run (its
    val_predictions.csv), eval.py and the sweep report (which reads what the run wrote)."""
    if not leaked:
        return None
    leaked_paths = {os.path.normpath(os.path.join(root, p)) for p in leaked}
    kept = [ok for f, ok in zip(files, correct, strict=True)
            if os.path.normpath(os.path.join(root, f)) not in leaked_paths]
    if not kept:
        return None
    return {"accuracy": sum(map(bool, kept)) / len(kept), "images": len(kept), "leaked": len(files) - len(kept)}
