"""`load_checkpoint`: the one way mbmrl reads a checkpoint file — tensors and plain data only.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects, so a tampered checkpoint would
run its code on load. Every checkpoint this project writes holds only tensors, numbers, strings and
containers of them, so every load here is ``weights_only=True`` and anything that needs more is an
error naming the file, not a fallback.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/x.ckpt"
    >>> torch.save({"global_step": 3, "state_dict": {"w": torch.zeros(2)}}, path)
    >>> load_checkpoint(path)["global_step"]
    3
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or needs pickled code to load."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` loaded with ``weights_only=True``.

    Raises:
        CheckpointError: one line naming ``path``: not a file, truncated/corrupt, or holding
            objects other than tensors and plain data (refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        needs = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} needs pickled code to load{needs}, which mbmrl never runs "
            "(weights_only=True); expected a checkpoint written by this project's train.py"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).split(". ")[0] or type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable ({first}); it may be truncated by a copy or a crash while writing"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, expected a checkpoint dict")
    return ckpt
