"""Errors the user can fix (a bad file, a wrong path, data that does not fit) end a command with one line.

Hydra would print a stack trace and "Set the environment variable HYDRA_FULL_ERROR=1 ..." as its last line;
for these errors the message itself says what is wrong and how to fix it, so that is all the user sees.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from transferlab.callbacks.checkpoint_io import CheckpointSaveError
from transferlab.callbacks.interrupt import RunInterrupted
from transferlab.config.checks import ConfigValueError
from transferlab.data.folders import DatasetLayoutError
from transferlab.data.images import BadImageError
from transferlab.models.backbones import WeightsUnavailableError
from transferlab.models.checkpoint import CheckpointError

EXIT_USER_ERROR = 2

# Errors whose message names the file, key or value at fault and a way out.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigValueError, CheckpointError, CheckpointSaveError, DatasetLayoutError, BadImageError,
    WeightsUnavailableError, FileNotFoundError,
)


@contextmanager
def reported(*extra: type[BaseException]) -> Iterator[None]:
    """Turn a user error into `error: <message>` on stderr and exit status 2."""
    try:
        yield
    except RunInterrupted as e:  # not an error: a resumable stop, told by its exit code (130, 143, ...)
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except (*USER_ERRORS, *extra) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
