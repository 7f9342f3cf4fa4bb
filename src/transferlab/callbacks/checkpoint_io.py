"""Checkpoint files written atomically beside their target, and a failed write that fails the run.

Lightning's own writer (`_atomic_save`) goes through an fsspec transaction, which writes a temporary file in
$TMPDIR and moves it into place: across filesystems (common on clusters) that move is a copy, and a kill during
it leaves a truncated `last.ckpt` in place of the previous good one. It also swallows a `PermissionError`, so a
run whose checkpoints could not be written exits 0 and reports a path that does not exist. This plugin writes
through `transferlab.files.atomic_save` (temporary file in the same folder, fsync, `os.replace`) and raises
`CheckpointSaveError` naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.errors import CheckpointSaveError
from transferlab.files import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options.")
        path = Path(path)
        try:
            atomic_save(checkpoint, path)
        except OSError as e:
            raise CheckpointSaveError(
                f"Could not write checkpoint {path}: {e.strerror or e}. Make {path.parent} writable (and free some "
                "space), or point paths.log_dir somewhere that is."
            ) from e
