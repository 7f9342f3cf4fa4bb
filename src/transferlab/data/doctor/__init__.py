"""The dataset doctor: every check that tells, before training, what would make it fail or be wrong.

`diagnose(root)` returns a `DatasetReport`; `python -m transferlab.data.doctor <root>` prints it.
"""

from transferlab.data.doctor.checks import (
    BAD_FILE_CODES,
    BadFilesError,
    DatasetReport,
    Finding,
    diagnose,
)

__all__ = ["BAD_FILE_CODES", "BadFilesError", "DatasetReport", "Finding", "diagnose"]
