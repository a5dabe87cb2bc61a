"""`AtomicCheckpointIO`: a checkpoint file is either the old one or the new one, never half of either.

Lightning's ``TorchCheckpointIO`` serialises to memory and then writes the target file in place, so a
crash or a kill during that write (a full disk, a preemption's SIGKILL) leaves a truncated
``last.ckpt`` and the run has nothing to resume from. Here the bytes go to a temporary file in the
target's folder, are flushed and fsynced, and ``os.replace`` swaps it in: a rename within one
filesystem is atomic, so readers see the previous checkpoint until the new one is whole on disk
(DESIGN §4.4). ``train.py`` installs it in every job's trainer.

Example:
    >>> import tempfile, torch
    >>> from common.checkpoints import load_checkpoint
    >>> path = tempfile.mkdtemp() + "/checkpoints/last.ckpt"
    >>> AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.ones(2)}, path)
    >>> load_checkpoint(path)["global_step"]
    3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic: temporary file, fsync, ``os.replace``.

    Remote paths (``s3://``, …) keep Lightning's write, since object stores publish an object only
    once it is complete. A failed write removes its temporary file and leaves the target as it was.
    The temporary file of ``last.ckpt`` is ``.last.ckpt.partial``: one per target (a crash's leftover
    is overwritten by the next save), and not a ``.ckpt``, so ``--ckpt_path last`` never picks it.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # refuses storage_options, as Lightning does
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        fsync_folder(target.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: after a power loss the folder names the new file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
