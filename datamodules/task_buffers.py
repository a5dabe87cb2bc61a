"""`MultiTaskBuffer`: one capacity-bounded ring buffer of transitions per task, as tensors."""

from __future__ import annotations

import torch

FIELDS = ("obs", "action", "reward", "next_obs", "done")
PARTS = ("all", "train", "holdout")


class MultiTaskBuffer:
    """Transitions ``(s, a, r, s', done)`` of ``T`` tasks in ``[T, capacity, ·]`` tensors.

    Writing is a ring per task (oldest transitions are overwritten first); reading is
    batched index arithmetic across tasks, no Python loop over tasks or transitions.

    With ``holdout_every = p > 1`` every ``p``-th slot (``p − 1, 2p − 1, ...``) of each task is its
    *held-out* part: :meth:`sample_index` with ``part="train"`` never returns it and
    ``part="holdout"`` returns only it, so the model can be scored on transitions of the training
    tasks it never trained on. Slots are fixed positions of the ring, so a transition stays in its
    part until it is overwritten.

    Example:
        >>> buf = MultiTaskBuffer(num_tasks=2, capacity=100, obs_dim=3, act_dim=1)
        >>> buf.add(torch.tensor([0, 1]), torch.zeros(2, 10, 3), torch.zeros(2, 10, 1),
        ...         torch.zeros(2, 10), torch.ones(2, 10, 3), torch.zeros(2, 10, dtype=torch.bool))
        >>> buf.size.tolist()
        [10, 10]
    """

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int, holdout_every: int = 0):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        if holdout_every == 1 or holdout_every < 0:
            raise ValueError(f"holdout_every must be 0 (no held-out part) or >= 2, got {holdout_every}")
        self.holdout_every = holdout_every
        self.num_tasks, self.capacity, self.obs_dim, self.act_dim = num_tasks, capacity, obs_dim, act_dim
        self.obs = torch.zeros(num_tasks, capacity, obs_dim)
        self.action = torch.zeros(num_tasks, capacity, act_dim)
        self.reward = torch.zeros(num_tasks, capacity)
        self.next_obs = torch.zeros(num_tasks, capacity, obs_dim)
        self.done = torch.zeros(num_tasks, capacity, dtype=torch.bool)
        self.size = torch.zeros(num_tasks, dtype=torch.long)
        self.ptr = torch.zeros(num_tasks, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.size.sum())

    def add(
        self,
        task_ids: torch.Tensor,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        """Append ``N`` transitions to each of ``K`` tasks.

        Args:
            task_ids: ``[K]`` distinct task indices; obs/next_obs ``[K, N, obs]``,
                action ``[K, N, act]``, reward ``[K, N]``, done ``[K, N]``.

        Raises:
            ValueError: on a wrong shape or feature size, or NaN/inf values.
        """
        task_ids = torch.as_tensor(task_ids, dtype=torch.long)
        k, n = obs.shape[:2] if obs.ndim == 3 else (None, None)
        expected = {
            "obs": (k, n, self.obs_dim),
            "action": (k, n, self.act_dim),
            "reward": (k, n),
            "next_obs": (k, n, self.obs_dim),
            "done": (k, n),
        }
        given = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done}
        for name, tensor in given.items():
            if k is None or tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"transitions: {name} has shape {tuple(tensor.shape)}; expected {expected[name]} "
                    f"(tasks, steps{', features' if len(expected[name]) == 3 else ''}) with obs size "
                    f"{self.obs_dim} and action size {self.act_dim}"
                )
            if name != "done" and not torch.isfinite(tensor).all():
                raise ValueError(f"transitions: {name} contains NaN or inf")
        if task_ids.shape != (k,) or task_ids.unique().numel() != k:
            raise ValueError(f"task_ids {task_ids.tolist()} must be {k} distinct task indices")
        if task_ids.min() < 0 or task_ids.max() >= self.num_tasks:
            raise ValueError(f"task_ids {task_ids.tolist()} out of range [0, {self.num_tasks})")
        if n > self.capacity:  # only the newest `capacity` survive a ring write
            obs, action, reward, next_obs, done = (t[:, -self.capacity :] for t in given.values())
            n = self.capacity
        slots = (self.ptr[task_ids, None] + torch.arange(n)) % self.capacity  # [K, N]
        rows = task_ids[:, None].expand(-1, n)
        self.obs[rows, slots] = obs.float()
        self.action[rows, slots] = action.float()
        self.reward[rows, slots] = reward.float()
        self.next_obs[rows, slots] = next_obs.float()
        self.done[rows, slots] = done.bool()
        self.ptr[task_ids] = (self.ptr[task_ids] + n) % self.capacity
        self.size[task_ids] = (self.size[task_ids] + n).clamp_max(self.capacity)

    def xy(self, task_ids: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs ``x = [s, a]`` and targets ``y = s' − s`` at ``index [K, M]`` of ``task_ids [K]``."""
        rows = task_ids[:, None].expand_as(index)
        obs = self.obs[rows, index]
        x = torch.cat([obs, self.action[rows, index]], dim=-1)
        return x, self.next_obs[rows, index] - obs

    def sample_index(
        self, task_ids: torch.Tensor, count: int, generator: torch.Generator, part: str = "all"
    ) -> torch.Tensor:
        """``[K, count]`` uniform indices (with replacement) into each task's stored transitions of
        ``part`` (``"all"``, ``"train"`` or ``"holdout"``, see the class docstring)."""
        if part not in PARTS:
            raise ValueError(f"unknown buffer part {part!r}; expected one of {PARTS}")
        p = self.holdout_every
        if part != "all" and not p:
            raise ValueError(f"part={part!r} needs a buffer with a held-out part (holdout_every >= 2)")
        sizes = self.size[task_ids]
        if part == "train":
            sizes = sizes - sizes // p
        elif part == "holdout":
            sizes = sizes // p
        if (sizes == 0).any():
            empty = task_ids[sizes == 0].tolist()
            raise RuntimeError(f"cannot sample transitions from empty task buffers {empty} (part {part!r})")
        u = torch.rand(len(task_ids), count, generator=generator)
        index = (u * sizes[:, None]).long().clamp_max(sizes[:, None] - 1)
        if part == "train":
            return index + index // (p - 1)  # skip every p-th slot
        if part == "holdout":
            return index * p + p - 1
        return index

    def all_xy(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stored transition of every task as ``x [N, obs+act]``, ``y [N, obs]``."""
        valid = torch.arange(self.capacity)[None] < self.size[:, None]
        obs = self.obs[valid]
        return torch.cat([obs, self.action[valid]], dim=-1), self.next_obs[valid] - obs

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in (*FIELDS, "size", "ptr")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in (*FIELDS, "size", "ptr"):
            mine, theirs = getattr(self, name), state[name]
            if mine.shape != theirs.shape:
                raise ValueError(
                    f"buffer field {name!r} in the checkpoint has shape {tuple(theirs.shape)}; this "
                    f"datamodule expects {tuple(mine.shape)} (tasks, capacity, features): was the "
                    "checkpoint made for another env, task count or buffer capacity?"
                )
            mine.copy_(theirs)
