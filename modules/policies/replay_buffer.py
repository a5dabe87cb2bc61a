"""`ReplayBuffer`: a ring buffer of transitions held as preallocated tensors, for off-policy learners (SAC)."""

from __future__ import annotations

import torch


class ReplayBuffer:
    """The last ``capacity`` rows of named tensors (``obs [N, O]``, ``reward [N]``, ...), one tensor per field.

    The fields, their trailing shapes and dtypes are fixed by the first :meth:`add`; every later batch
    must bring the same fields. Rows are written in a ring, so a full buffer overwrites its oldest
    rows; :meth:`sample` draws rows uniformly with replacement from an explicit generator.

    Example:
        >>> buf = ReplayBuffer(capacity=4)
        >>> buf.add(obs=torch.zeros(3, 2), reward=torch.arange(3.0))
        >>> buf.add(obs=torch.ones(3, 2), reward=torch.arange(3.0, 6.0))
        >>> len(buf), sorted(buf.data["reward"].tolist())
        (4, [2.0, 3.0, 4.0, 5.0])
        >>> buf.sample(5, torch.Generator().manual_seed(0))["obs"].shape
        torch.Size([5, 2])
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity {capacity} must be >= 1")
        self.capacity = capacity
        self.data: dict[str, torch.Tensor] = {}
        self.size = 0
        self.cursor = 0  # the next row to write

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: torch.Tensor) -> None:
        """Append ``N`` rows of every field (``N`` may exceed the capacity: only the last rows stay)."""
        n = len(next(iter(batch.values())))
        if not self.data:
            self.data = {k: v.new_zeros(self.capacity, *v.shape[1:]) for k, v in batch.items()}
        if set(batch) != set(self.data) or any(len(v) != n for v in batch.values()):
            raise ValueError(f"ReplayBuffer.add: fields {sorted(batch)} of lengths {[len(v) for v in batch.values()]};"
                             f" expected {sorted(self.data)} of one length")  # fmt: skip
        rows = (self.cursor + torch.arange(n)) % self.capacity
        keep = slice(max(n - self.capacity, 0), n)  # rows that a longer batch would overwrite are left out
        for name, value in batch.items():
            self.data[name][rows[keep]] = value[keep].to(self.data[name].dtype)
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` rows drawn uniformly with replacement: ``{field: [n, ...]}``."""
        if self.size == 0:
            raise RuntimeError("ReplayBuffer.sample from an empty buffer")
        index = torch.randint(self.size, (n,), generator=generator)
        return {name: value.index_select(0, index) for name, value in self.data.items()}
