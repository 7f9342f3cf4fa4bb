"""`${unique_dir:<path>}`: a run or sweep directory that no other process can also get.

Two runs started in the same second would otherwise share `outputs/train/runs/<date>/<HH-MM-SS>` (logs
interleaved, one summary.json surviving). The directory is created exclusively (`os.mkdir`); when it exists,
`_2`, `_3`, ... are tried. Registered with `use_cache=True`, so Hydra's cache copy gives a sweep's jobs (even
in joblib worker processes) the directory their sweep claimed; within a process a path is claimed once.

A directory that cannot be created (read-only or missing parent, a file in the way) ends the command here,
before Hydra configures its log file, with one line naming it (else: "Unable to configure handler 'file'").
"""

from __future__ import annotations

import os
import sys

_claimed: dict[str, str] = {}


def unique_dir(base: str) -> str:
    if base in _claimed:
        return _claimed[base]
    path, n = base, 1
    while True:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.mkdir(path)
            break
        except FileExistsError:
            if os.path.isdir(os.path.dirname(path) or "."):
                n += 1
                path = f"{base}_{n}"
                continue
            _refuse(path, "a file is in the way")
        except OSError as e:
            _refuse(path, e.strerror or str(e))
    _claimed[base] = path
    return path


def _refuse(path: str, why: str) -> None:
    # SystemExit, not an exception: OmegaConf would wrap an exception from a resolver, and Hydra would print it
    # with a stack trace.
    print(f"error: cannot create the output directory {path} ({why}). Point paths.log_dir (or hydra.run.dir) "
          "at a writable folder.", file=sys.stderr)
    raise SystemExit(2)
