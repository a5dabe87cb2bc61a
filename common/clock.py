"""`synchronized_clock`: ``time.perf_counter()`` read once the accelerator has done the work queued so far.

CUDA runs kernels asynchronously, so a clock read right after launching them times the launch, not
the work: a test-time method's seconds per task or per action (DESIGN §6, item 4) and a Dyna phase's
seconds would come out too small on a GPU and the next timer would be charged the rest.

Example:
    >>> start = synchronized_clock()
    >>> synchronized_clock() >= start
    True
"""

from __future__ import annotations

import time

import torch


def synchronized_clock() -> float:
    """``time.perf_counter()`` after ``torch.cuda.synchronize()`` of the current device when this
    process uses CUDA (nothing to wait for on the CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
