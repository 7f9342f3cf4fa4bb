"""The errors a user can fix, and how a command reports them, in one light module (no torch, Lightning or PIL).

Each message names the file, key or value at fault and a way out; the entry points wrap their work in
`reported()`, which prints it as one line, `error: <message>`, and exits with status 2. Hydra would print a
stack trace and "Set the environment variable HYDRA_FULL_ERROR=1 ..." as its last line; for these errors the
message itself says what is wrong and how to fix it, so that is all the user sees. Anything else is a bug and
keeps its traceback. Being light, this module lets a command report a config mistake before heavy imports.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USER_ERROR = 2
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 138}  # 128 + signal number


class ConfigValueError(ValueError):
    """A config value is out of its allowed range; the message names the key, the value and the range."""


class DatasetLayoutError(ValueError):
    """The folder tree cannot be used for training as it is."""


class BadImageError(OSError):
    """An image file could not be decoded (or is above the pixel cap); the message names the file."""


class CheckpointError(ValueError):
    """A checkpoint cannot be found or used; the message names the file (and field) and a way out."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the message names the path and a way out."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (typically: offline and not cached)."""


class RunInterrupted(Exception):
    """Training stopped on a signal; a resumable checkpoint and summary.json were written."""

    def __init__(self, signum: int, checkpoint: str | None, resume: str) -> None:
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)
        self.checkpoint = checkpoint
        self.resume_command = resume
        super().__init__(f"Interrupted by {signal.Signals(signum).name}; checkpoint {checkpoint}. Resume with:\n"
                         f"  {resume}")


# Errors whose message names the file, key or value at fault and a way out (FileNotFoundError: a path).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigValueError, CheckpointError, CheckpointSaveError, DatasetLayoutError, BadImageError,
    WeightsUnavailableError, FileNotFoundError,
)


@contextmanager
def reported(*extra: type[BaseException]) -> Iterator[None]:
    """Turn a user error into `error: <message>` on stderr and exit status 2; a stop on a signal into its
    message and its exit status (130, 143, ...: not an error, a resumable stop)."""
    try:
        yield
    except RunInterrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except (*USER_ERRORS, *extra) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
