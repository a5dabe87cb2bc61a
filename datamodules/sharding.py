"""Tasks split across ranks (``rank, rank + W, ...``) and the ranks' shards gathered back in task order."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import IterableDataset

from datamodules.collection import Transitions


def rank_share(tasks: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The tasks of ``tasks`` (global indices ``[K]``) that ``rank`` runs, in order: those with
    ``index % W == rank``. The one rule by which the training tasks, an iteration's collection and
    the test tasks are split across ranks (empty where a rank has none).

    Example:
        >>> rank_share(torch.tensor([1, 2, 3, 4, 6]), 0, 2), rank_share(torch.arange(3), 1, 4)
        (tensor([2, 4, 6]), tensor([1]))
    """
    return tasks[tasks % world_size == rank]


def shard_tasks(num_tasks: int, rank: int, world_size: int, what: str = "tasks") -> torch.Tensor:
    """Task indices of ``rank``: ``rank, rank + W, rank + 2W, ...`` (disjoint, covering all).

    Raises:
        ValueError: with more ranks than tasks (a rank would have nothing to stream).
    """
    if world_size > num_tasks:
        raise ValueError(
            f"cannot shard {num_tasks} {what} over {world_size} ranks: every rank needs at least one; "
            f"use at most {num_tasks} devices×nodes or more {what}"
        )
    return rank_share(torch.arange(num_tasks), rank, world_size)


def round_robin_tasks(iteration: int, per_iteration: int | None, num_tasks: int) -> torch.Tensor:
    """The training tasks collected at ``iteration`` (1, 2, ...), sorted ``[K]``: ``per_iteration`` of
    them round robin, iteration ``i`` starting at task ``(i − 1)·K mod T``, so every task gets as many
    episodes as the others over ``T / K`` iterations; None (or ``K ≥ T``): all. The same tasks on any
    number of ranks; each rank collects its :func:`rank_share` of them (``tasks % W == rank``).

    Example:
        >>> round_robin_tasks(3, 4, 6), round_robin_tasks(1, None, 3)
        (tensor([2, 3, 4, 5]), tensor([0, 1, 2]))
    """
    if per_iteration is None or per_iteration >= num_tasks:
        return torch.arange(num_tasks)
    return ((iteration - 1) * per_iteration + torch.arange(per_iteration)).remainder(num_tasks).sort().values


def all_gather_stacked(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` stacked ``[W, ...]`` (plain ``torch.distributed.all_gather``)."""
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor)
    return torch.stack(parts)


def gather_shards(
    data: Transitions,
    num_tasks: int,
    world: int,
    all_gather: Callable[[torch.Tensor], torch.Tensor] = all_gather_stacked,
    device: torch.device | str = "cpu",
    tasks: torch.Tensor | None = None,
) -> Transitions:
    """All ranks' transitions in task order ``[K, S, ·]``.

    ``tasks`` (sorted global indices ``[K]``, default all ``num_tasks``) are the tasks collected;
    rank ``r`` holds those of its shard (``tasks[tasks % W == r]``), in order.
    """
    if world == 1:
        return data
    tasks = torch.arange(num_tasks) if tasks is None else tasks
    rank_of = tasks % world
    width = int(torch.bincount(rank_of, minlength=world).max())  # shards are padded to equal size for all_gather
    fields = []
    for tensor in (data.obs, data.action, data.reward, data.next_obs, data.done.float()):
        padded = tensor.new_zeros(width, *tensor.shape[1:])
        padded[: len(tensor)] = tensor
        gathered = all_gather(padded.to(device)).cpu()  # [W, width, ...]
        out = tensor.new_zeros(len(tasks), *tensor.shape[1:])
        for rank in range(world):
            rows = (rank_of == rank).nonzero().flatten()
            out[rows] = gathered[rank, : len(rows)].to(out.dtype)
        fields.append(out)
    obs, action, reward, next_obs, done = fields
    return Transitions(obs, action, reward, next_obs, done.bool())


class TaskIndexShard(IterableDataset):
    """One batch: the indices of ``num_tasks`` test tasks that ``rank`` meta-tests (:func:`rank_share`;
    the test loop's trigger, a single batch on every rank, empty where the rank has none)."""

    def __init__(self, num_tasks: int, rank: int, world: int):
        self.indices = rank_share(torch.arange(num_tasks), rank, world)

    def __iter__(self):
        yield self.indices
