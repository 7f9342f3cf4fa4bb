"""The dataset doctor: every check that tells, before training, what would make it fail or be wrong.

`diagnose(root)` returns a `DatasetReport`; `python -m transferlab.data.doctor <root>` prints it.
report.py: what a diagnosis holds; inspect.py: per-file facts (decode, hash, cache); checks.py: `diagnose`.
"""

from transferlab.data.doctor.checks import diagnose
from transferlab.data.doctor.inspect import FactsCache, inspect_all, inspect_file
from transferlab.data.doctor.report import (
    BAD_FILE_CODES,
    BadFilesError,
    DatasetReport,
    Entry,
    Finding,
    Item,
)

__all__ = [
    "BAD_FILE_CODES",
    "BadFilesError",
    "DatasetReport",
    "Entry",
    "FactsCache",
    "Finding",
    "Item",
    "diagnose",
    "inspect_all",
    "inspect_file",
]
