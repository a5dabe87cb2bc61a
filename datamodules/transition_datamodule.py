"""`TransitionDataModule`: per-task transition buffers and the context/target streams (DESIGN §4)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from common.validation import INTEGER_1, SEED, Range, check_settings
from datamodules.collection import Transitions, collect_transitions
from datamodules.context_target_stream import ContextTargetStream
from datamodules.sharding import gather_shards, shard_tasks
from datamodules.task_buffers import MultiTaskBuffer
from envs import NUM_TRAIN_TASKS, TASK_DESIGN, TASK_SEED, Task, make_family


class TransitionDataModule(pl.LightningDataModule):
    """Buffers of real transitions for every training task, streamed as context/target batches.

    * Training tasks come from ``family.train_tasks(num_train_tasks, task_seed, task_design)``; validation
      transitions come from the family's held-out test tasks (interpolation and extrapolation).
    * Every rank holds every task's buffer (small tensors; statistics are then identical on all
      ranks); each rank *streams* only its shard of tasks, ``batches_per_epoch`` batches per
      epoch on every rank, with per-rank seeds.
    * Buffers start with ``random_steps_per_task`` uniform-random-action steps of every task,
      collected lazily when a dataloader is first requested (so resuming from a checkpoint
      does not collect data it then overwrites). Later data arrives through :meth:`add_transitions`.
    * With ``holdout_every = p ≥ 2`` every ``p``-th stored transition of each training task is
      held out of the training stream (:class:`MultiTaskBuffer`); :meth:`holdout_batches` serves
      it (contexts from the training part) so the model can train to convergence on it;
      ``holdout_every = 0`` holds nothing out.
    * ``val_steps_per_task = 0`` collects no validation data: validation is skipped.
    * :meth:`state_dict` holds the buffers and stream counters; a checkpoint round trip
      restores them.

    Example:
        >>> dm = TransitionDataModule("acrobot", num_train_tasks=2, random_steps_per_task=20,
        ...                           val_steps_per_task=10, batches_per_epoch=2, tasks_per_batch=2,
        ...                           context_min=2, context_max=4, num_targets=3)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["target_y"].shape
        torch.Size([2, 3, 6])
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "num_train_tasks": INTEGER_1, "task_seed": SEED, "buffer_capacity": INTEGER_1,
        "random_steps_per_task": INTEGER_1, "tasks_per_batch": INTEGER_1,
        "val_steps_per_task": Range(low=0, integer=True, special={0: "no validation data"}),
        "context_min": INTEGER_1, "context_max": INTEGER_1, "num_targets": INTEGER_1, "batches_per_epoch": INTEGER_1,
        "val_batches": INTEGER_1, "holdout_every": Range(low=2, integer=True, special={0: "nothing held out"}),
        "holdout_batches": INTEGER_1, "seed": SEED,
    }  # fmt: skip

    def __init__(
        self,
        env: str = "acrobot",
        num_train_tasks: int = NUM_TRAIN_TASKS,
        task_seed: int = TASK_SEED,
        task_design: str = TASK_DESIGN,
        buffer_capacity: int = 20_000,
        random_steps_per_task: int = 200,
        val_steps_per_task: int = 400,
        tasks_per_batch: int = 8,
        context_min: int = 10,
        context_max: int = 50,
        num_targets: int = 50,
        batches_per_epoch: int = 600,
        val_batches: int = 4,
        holdout_every: int = 10,
        holdout_batches: int = 2,
        seed: int = 0,
    ):
        check_settings(TransitionDataModule, locals())
        super().__init__()
        self.save_hyperparameters()
        self.family = make_family(env)
        self.train_tasks: list[Task] = self.family.train_tasks(num_train_tasks, task_seed, task_design)
        self.test_tasks: list[Task] = self.family.test_tasks()
        obs_dim, act_dim = self.family.obs_dim, self.family.act_dim
        self.buffer = MultiTaskBuffer(num_train_tasks, buffer_capacity, obs_dim, act_dim, holdout_every)
        val_capacity = max(val_steps_per_task, 1)
        self.val_buffer = MultiTaskBuffer(len(self.test_tasks), val_capacity, obs_dim, act_dim)
        self.test_extrapolation = torch.tensor([t.split == "extrapolation" for t in self.test_tasks])
        self._train_stream: ContextTargetStream | None = None
        self._stream_passes = 0

    # ---- data -------------------------------------------------------------------------------
    def ensure_initial_data(self) -> None:
        """Fill empty buffers with random-action transitions (same data on every rank)."""
        hp = self.hparams
        if len(self.buffer) == 0:
            self.add_transitions(
                torch.arange(len(self.train_tasks)),
                collect_transitions(self.family, self.train_tasks, hp.random_steps_per_task, seed=hp.seed),
            )
        if len(self.val_buffer) == 0 and hp.val_steps_per_task > 0:
            data = collect_transitions(self.family, self.test_tasks, hp.val_steps_per_task, seed=hp.seed + 1)
            self.val_buffer.add(
                torch.arange(len(self.test_tasks)),
                data.obs,
                data.action,
                data.reward,
                data.next_obs,
                data.done,
            )

    def add_transitions(self, task_ids: torch.Tensor, data: Transitions) -> None:
        """Append real transitions ``[K, S, ·]`` of training tasks ``task_ids [K]``.

        Raises:
            ValueError: wrong feature sizes (e.g. from another env) or NaN/inf values.
        """
        self.buffer.add(task_ids, data.obs, data.action, data.reward, data.next_obs, data.done)

    def training_shard(self, rank: int, world_size: int) -> torch.Tensor:
        """The training tasks ``rank`` collects and imagines: ``rank, rank + W, ...``."""
        return shard_tasks(len(self.train_tasks), rank, world_size, "training tasks")

    def gather_collected(
        self, shard: Transitions, world_size: int, device: torch.device | str = "cpu", tasks: torch.Tensor | None = None
    ) -> Transitions:
        """Every rank's collected share of ``tasks`` (sorted training-task indices, default all; rank
        ``r`` collects those in its :meth:`training_shard`, ``[K_r, S, ·]``), all-gathered in task
        order ``[K, S, ·]``, identical on every rank. Call on every rank."""
        return gather_shards(shard, len(self.train_tasks), world_size, device=device, tasks=tasks)

    def model_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All training transitions as ``x = [s, a]`` ``[N, obs+act]`` and ``y = s' − s`` ``[N, obs]``."""
        self.ensure_initial_data()
        return self.buffer.all_xy()

    def task_contexts(self, size: int, seed: int = 0) -> tuple[list[Task], torch.Tensor, torch.Tensor]:
        """A fixed context of ``size`` transitions for every training and test task.

        Returns ``(tasks, context_x [T, size, obs+act], context_y [T, size, obs])``.
        """
        self.ensure_initial_data()
        g = torch.Generator().manual_seed(seed)
        xs, ys = [], []
        for buf in (self.buffer, self.val_buffer):
            ids = torch.arange(buf.num_tasks)
            x, y = buf.xy(ids, buf.sample_index(ids, size, g))
            xs.append(x)
            ys.append(y)
        return self.train_tasks + self.test_tasks, torch.cat(xs), torch.cat(ys)

    # ---- streams ----------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_stream(self, rank: int, world_size: int) -> ContextTargetStream:
        """The training stream of ``rank`` out of ``world_size``."""
        hp = self.hparams
        stream = ContextTargetStream(
            self.buffer,
            shard_tasks(len(self.train_tasks), rank, world_size, "training tasks"),
            hp.batches_per_epoch,
            hp.tasks_per_batch,
            hp.context_min,
            hp.context_max,
            hp.num_targets,
            seed=hp.seed,
            rank=rank,
            context_part="train" if hp.holdout_every else "all",
            target_part="train" if hp.holdout_every else "all",
        )
        stream.passes = self._stream_passes
        return stream

    def val_stream(self, rank: int, world_size: int) -> ContextTargetStream:
        """Held-out test-task batches of ``rank``: the same batches every epoch."""
        hp = self.hparams
        shard = shard_tasks(len(self.test_tasks), rank, world_size, "test tasks")
        return ContextTargetStream(
            self.val_buffer,
            shard,
            hp.val_batches,
            len(shard),
            hp.context_max,
            hp.context_max,
            hp.num_targets,
            seed=hp.seed + 1,
            rank=rank,
            extrapolation=self.test_extrapolation,
            fixed=True,
        )

    def holdout_batches(self) -> list[dict[str, torch.Tensor]]:
        """``holdout_batches`` fixed batches of *every* training task (identical on every rank):
        ``context_max`` context transitions from the training part, ``num_targets`` targets from
        the held-out part."""
        hp = self.hparams
        if not hp.holdout_every:
            raise ValueError("holdout_batches() needs data.holdout_every >= 2 (a held-out part of the buffers)")
        self.ensure_initial_data()
        n = len(self.train_tasks)
        stream = ContextTargetStream(
            self.buffer,
            torch.arange(n),
            hp.holdout_batches,
            n,
            hp.context_max,
            hp.context_max,
            hp.num_targets,
            seed=hp.seed + 2,
            fixed=True,
            context_part="train",
            target_part="holdout",
        )
        return list(stream)

    def end_train_epoch(self) -> None:
        """Stop this rank's training stream before its next batch (see :meth:`ContextTargetStream.request_stop`)."""
        if self._train_stream is not None:
            self._train_stream.request_stop()

    def train_dataloader(self) -> DataLoader:
        self.ensure_initial_data()
        self._train_stream = self.train_stream(*self._rank())
        return DataLoader(self._train_stream, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out test-task stream; none with ``val_steps_per_task = 0`` (Lightning then skips
        validation)."""
        self.ensure_initial_data()
        if self.hparams.val_steps_per_task == 0:
            return []
        return DataLoader(self.val_stream(*self._rank()), batch_size=None)

    def test_dataloader(self) -> DataLoader | list:
        """The held-out test-task stream (model-only ``test``; same batches as validation)."""
        return self.val_dataloader()

    # ---- checkpoint -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        passes = self._train_stream.passes if self._train_stream is not None else self._stream_passes
        return {
            "env": self.hparams.env,
            "buffer": self.buffer.state_dict(),
            "val_buffer": self.val_buffer.state_dict(),
            "stream_passes": passes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env") != self.hparams.env:
            raise ValueError(
                f"checkpoint data is for env {state.get('env')!r}, but this datamodule is for "
                f"{self.hparams.env!r}; use the config of {state.get('env')!r}"
            )
        self.buffer.load_state_dict(state["buffer"])
        self.val_buffer.load_state_dict(state["val_buffer"])
        self._stream_passes = int(state["stream_passes"])
        if self._train_stream is not None:
            self._train_stream.passes = self._stream_passes
