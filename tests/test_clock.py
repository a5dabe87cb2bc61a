"""Timers wait for the accelerator before reading the clock."""

from __future__ import annotations

import time

import torch

from common.clock import synchronized_clock


def test_the_clock_waits_for_queued_cuda_work_before_it_reads(monkeypatch):
    events = []
    monkeypatch.setattr(time, "perf_counter", lambda: events.append("clock") or 1.0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert synchronized_clock() == 1.0
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run: nothing to wait for
    synchronized_clock()
    assert events == ["synchronize", "clock", "clock"]
