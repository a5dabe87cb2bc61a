"""`ContextTargetStream`: a fixed-length stream of context/target batches from one rank's tasks."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info

from common.seeding import STREAM, derive_seed
from datamodules.task_buffers import MultiTaskBuffer


class ContextTargetStream(IterableDataset):
    """Yields ``num_batches`` batches per pass, each ``B`` tasks × (``N_c`` context + ``N_t`` targets).

    ``N_c`` is drawn per task in ``[context_min, context_max]`` and padded to ``context_max``
    with ``context_mask`` False. Context and targets are drawn (with replacement) from the same
    task's buffer, from its ``context_part`` and ``target_part`` (see :class:`MultiTaskBuffer`).
    Every rank yields exactly ``num_batches`` batches (unless :meth:`request_stop` ends the pass on
    every rank), from its own task shard,
    with a generator seeded by ``(seed, rank, pass)``; with ``fixed=True`` every pass repeats
    the same batches (validation).

    Batch (dict of tensors): ``context_x [B, N_c, obs+act]``, ``context_y [B, N_c, obs]``,
    ``context_mask [B, N_c]``, ``target_x [B, N_t, obs+act]``, ``target_y [B, N_t, obs]``,
    ``task_index [B]``, ``extrapolation [B]`` (bool). ``x = [s, a]``, ``y = s' − s``, raw units.

    Example:
        >>> buf = MultiTaskBuffer(4, 50, obs_dim=2, act_dim=1)
        >>> buf.add(torch.arange(4), torch.randn(4, 50, 2), torch.randn(4, 50, 1), torch.zeros(4, 50),
        ...         torch.randn(4, 50, 2), torch.zeros(4, 50, dtype=torch.bool))
        >>> stream = ContextTargetStream(buf, torch.arange(4), num_batches=3, tasks_per_batch=2,
        ...                              context_min=5, context_max=10, num_targets=7, seed=0)
        >>> [b["context_x"].shape for b in stream][0]
        torch.Size([2, 10, 3])
    """

    def __init__(
        self,
        buffer: MultiTaskBuffer,
        task_ids: torch.Tensor,
        num_batches: int,
        tasks_per_batch: int,
        context_min: int,
        context_max: int,
        num_targets: int,
        seed: int,
        rank: int = 0,
        extrapolation: torch.Tensor | None = None,
        fixed: bool = False,
        context_part: str = "all",
        target_part: str = "all",
    ):
        if not 0 <= context_min <= context_max or context_max < 1:
            raise ValueError(
                f"context sizes must satisfy 0 <= context_min <= context_max and context_max >= 1; "
                f"got context_min={context_min}, context_max={context_max}"
            )
        if num_targets < 1 or num_batches < 1 or tasks_per_batch < 1:
            raise ValueError(
                f"num_targets={num_targets}, num_batches={num_batches} and "
                f"tasks_per_batch={tasks_per_batch} must all be >= 1"
            )
        self.buffer, self.task_ids = buffer, torch.as_tensor(task_ids, dtype=torch.long)
        self.num_batches, self.tasks_per_batch = num_batches, tasks_per_batch
        self.context_min, self.context_max, self.num_targets = context_min, context_max, num_targets
        self.seed, self.rank, self.fixed = seed, rank, fixed
        self.context_part, self.target_part = context_part, target_part
        self.extrapolation = (
            extrapolation if extrapolation is not None else torch.zeros(buffer.num_tasks, dtype=torch.bool)
        )
        self.passes = 0
        self.stop_requested = False

    def __iter__(self):
        if get_worker_info() is not None:
            raise RuntimeError("ContextTargetStream samples in-process tensors; use num_workers=0")
        pass_index = 0 if self.fixed else self.passes
        self.passes += 0 if self.fixed else 1
        generator = torch.Generator().manual_seed(derive_seed(STREAM, self.seed, self.rank, pass_index))
        self.stop_requested = False
        for _ in range(self.num_batches):
            if self.stop_requested:  # see request_stop
                return
            yield self.sample(generator)

    def request_stop(self) -> None:
        """End the current pass before its next batch (the model converged). The pass then ends
        like an exhausted dataloader, so Lightning still runs the epoch-end validation, which an
        ``on_train_batch_start`` returning −1 would skip. (The stream has no ``__len__`` for that
        reason: with a length, Lightning validates only after that many batches.)"""
        self.stop_requested = True

    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One batch (see the class docstring)."""
        n_shard = len(self.task_ids)
        if self.tasks_per_batch <= n_shard:
            pick = torch.randperm(n_shard, generator=generator)[: self.tasks_per_batch]
        else:
            pick = torch.randint(n_shard, (self.tasks_per_batch,), generator=generator)
        tasks = self.task_ids[pick]
        if self.context_part == self.target_part:
            index = self.buffer.sample_index(tasks, self.context_max + self.num_targets, generator, self.target_part)
        else:
            index = torch.cat(
                [
                    self.buffer.sample_index(tasks, self.context_max, generator, self.context_part),
                    self.buffer.sample_index(tasks, self.num_targets, generator, self.target_part),
                ],
                dim=1,
            )
        x, y = self.buffer.xy(tasks, index)
        n_context = torch.randint(self.context_min, self.context_max + 1, (len(tasks),), generator=generator)
        c = self.context_max
        return {
            "context_x": x[:, :c],
            "context_y": y[:, :c],
            "context_mask": torch.arange(c)[None] < n_context[:, None],
            "target_x": x[:, c:],
            "target_y": y[:, c:],
            "task_index": tasks,
            "extrapolation": self.extrapolation[tasks],
        }
