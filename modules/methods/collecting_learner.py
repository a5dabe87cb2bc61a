"""`CollectingLearner`: the iteration and data plumbing of the model-based baselines that collect their
own real transitions (L2A, M-DPILCO)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from common.seeding import COLLECT_ENV, METATEST, derive_seed
from datamodules.collection import Transitions
from datamodules.sharding import gather_shards, rank_share, round_robin_tasks, shard_tasks
from datamodules.task_buffers import MultiTaskBuffer
from envs import Task, make_family
from envs.rollout import StepPolicy, TaskVectorEnv, random_policy, rollout
from evaluation import TaskResult, select_tasks
from modules.methods.meta_tested_learner import MetaTestedLearner
from modules.methods.settings import BudgetSettings, CollectionSettings, MetaTestSettings


class CollectingLearner(MetaTestedLearner, pl.LightningModule):
    """A LightningModule whose epoch is one iteration: collect real transitions, then train on them.

    A subclass calls :meth:`init_collection` in its ``__init__`` with its ``env`` and settings blocks
    (:mod:`modules.methods.settings`) and gives :meth:`collection_policy`, :meth:`run_protocol` and,
    where it has normalisers, :meth:`on_collected`.

    - ``on_train_epoch_start`` (every rank): iteration 0 takes ``collection.random_steps_per_task``
      random steps in every training task, later iterations one episode (``episode_length`` steps) in
      each of the next ``collection.tasks_per_iteration`` tasks (:meth:`collection_tasks`: one global
      round robin, the same tasks on any number of ranks) with :meth:`collection_policy`; each rank
      collects its :func:`datamodules.sharding.rank_share` of them and the shares are all-gathered, so
      every rank's buffer (and the checkpoint) holds every task's transitions.
    - ``on_train_epoch_end``: the meta-test when due (:class:`modules.methods.meta_tested_learner.MetaTestedLearner`);
      its extra compute — seconds over a count, summed over ranks into ``time/<COMPUTE_NAME>`` — is
      logged and written to ``test_compute.json`` by rank 0.
    - The checkpoint holds the buffer and the counters under the method's name; one of another env is
      refused, naming both.
    """

    COMPUTE_NAME = ""  # e.g. "test_seconds_per_action": seconds per counted unit of test-time work

    def init_collection(self, env: str, budget: BudgetSettings, collection: CollectionSettings,
                        metatest: MetaTestSettings) -> None:  # fmt: skip
        """Settle the settings blocks, the training and test tasks and a buffer that holds the whole budget."""
        self.budget, self.collection, self.metatest = budget, collection, metatest
        self.family = fam = make_family(env)
        tasks, random_steps = budget.num_train_tasks, collection.random_steps_per_task
        self.train_tasks = fam.train_tasks(tasks, budget.task_seed, budget.task_design)
        self.test_tasks = select_tasks(fam.test_tasks(), metatest.tasks, fam.name)
        per_iteration = min(collection.tasks_per_iteration or tasks, tasks)
        iterations = -(-max(budget.real_transitions - tasks * random_steps, 0)
                       // (per_iteration * fam.episode_length))  # fmt: skip
        episodes_per_task = -(-iterations * per_iteration // tasks) + 1  # round robin: at most this many
        capacity = random_steps + episodes_per_task * fam.episode_length  # the ring never wraps
        self.buffer = MultiTaskBuffer(tasks, capacity, fam.obs_dim, fam.act_dim)
        self.real_transitions = self._transitions_before = self.iterations = 0
        self._results: list[TaskResult] = []
        self._compute = torch.zeros(2, dtype=torch.float64)  # the meta-test's extra seconds and their count
        self._latest_metatest: dict[str, float] = {}

    # ---- what a subclass gives ------------------------------------------------------------
    def collection_policy(self, tasks: torch.Tensor, seed: int) -> StepPolicy:
        """The policy that collects one episode in each of the training tasks ``tasks [T]`` (iteration ≥ 1)."""
        raise NotImplementedError

    def on_collected(self, data: Transitions) -> None:
        """Called on every rank with the iteration's gathered transitions ``[T, steps, ·]`` (e.g. to update
        normalisers)."""

    def update_model_normalizers(self, data: Transitions) -> None:
        """``self.model``'s running normalisers of ``[s, a]`` and ``s' − s`` take ``data`` ``[T, steps, ·]``."""
        fam = self.family
        x = torch.cat([data.obs, data.action], -1).reshape(-1, fam.obs_dim + fam.act_dim)
        self.model.x_normalizer.update(x.to(self.device))
        self.model.y_normalizer.update((data.next_obs - data.obs).reshape(-1, fam.obs_dim).to(self.device))

    def run_protocol(self, tasks: list[Task], seed: int, agent_seed: int) -> list[TaskResult]:
        """DESIGN §6's protocol on ``tasks`` (``seed`` for the envs, ``agent_seed`` for the method's own
        noise); adds its extra seconds and their count to ``self._compute``."""
        raise NotImplementedError

    # ---- data -------------------------------------------------------------------------------
    def rank_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)

    def shard(self) -> torch.Tensor:
        rank, world = self.rank_world()
        return shard_tasks(len(self.train_tasks), rank, world, "training tasks")

    def collection_tasks(self) -> torch.Tensor:
        """The training tasks collected in this iteration, over all ranks, sorted ``[K]``: every one at
        iteration 0, then :func:`datamodules.sharding.round_robin_tasks`."""
        if self.iterations == 0:
            return torch.arange(len(self.train_tasks))
        return round_robin_tasks(self.iterations, self.collection.tasks_per_iteration, len(self.train_tasks))

    @torch.no_grad()
    def on_train_epoch_start(self) -> None:
        fam, tasks = self.family, len(self.train_tasks)
        rank, world = self.rank_world()
        per_iteration = min(self.collection.tasks_per_iteration or tasks, tasks)
        if tasks % world or per_iteration % world:
            raise ValueError(f"{self.METHOD} on {world} ranks: num_train_tasks={tasks} and "
                             f"tasks_per_iteration={per_iteration} must be multiples of the number of ranks")
        collected = self.collection_tasks()
        mine = rank_share(collected, rank, world)
        seed = derive_seed(COLLECT_ENV, self.hparams.seed, self.iterations, rank) % 2**31
        if self.iterations == 0:
            steps = self.collection.random_steps_per_task
            policy = random_policy(fam.act_dim, torch.Generator().manual_seed(seed))
        else:
            steps, policy = fam.episode_length, self.collection_policy(mine, seed)
        env = TaskVectorEnv(fam, [self.train_tasks[i] for i in mine.tolist()], seed)
        traj = rollout(env, policy, env.reset(), steps, episodic=False)
        env.close()
        as_tasks = lambda t: t.transpose(0, 1).cpu()  # noqa: E731  [H, B, ·] → [B, H, ·]
        share = Transitions(as_tasks(traj.obs), as_tasks(traj.action).clamp(-1, 1), as_tasks(traj.reward).float(),
                            as_tasks(traj.next_obs), as_tasks(traj.terminated))  # fmt: skip
        data = gather_shards(share, len(self.train_tasks), world, device=self.device, tasks=collected)
        self.buffer.add(collected, data.obs, data.action, data.reward, data.next_obs, data.done)
        self.on_collected(data)
        if self.iterations > 0:
            self.log("real/reward_per_step", data.reward.mean(), rank_zero_only=True)
        self._transitions_before = self.real_transitions
        self.real_transitions += len(collected) * steps
        self.iterations += 1

    # ---- meta-test --------------------------------------------------------------------------
    @torch.no_grad()
    def meta_test_tasks(self, indices: list[int]) -> list[TaskResult]:
        """The protocol on the test tasks at ``indices`` (this rank's share), seeded by iteration and rank."""
        if not indices:
            return []
        rank, _ = self.rank_world()
        seed, it = self.hparams.seed, self.iterations
        return self.run_protocol([self.test_tasks[i] for i in indices], derive_seed(METATEST, seed, it, rank),
                                 derive_seed(METATEST, seed, it, rank, 1))  # fmt: skip

    def on_train_epoch_end(self) -> None:
        self.meta_test_when_due()

    def metatest_header(self) -> str:
        return (f"{self.family.name}, {self.METHOD}, iteration {self.iterations}, {self.real_transitions} real "
                f"training transitions, {self.metatest.protocol()}")

    def test_compute(self) -> dict[str, float]:
        """``time/<COMPUTE_NAME>``: the meta-test's extra seconds over their count, summed over ranks."""
        totals = self._compute
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        self._compute = torch.zeros(2, dtype=torch.float64)
        return {f"time/{self.COMPUTE_NAME}": float(totals[0] / totals[1].clamp_min(1))}

    # ---- checkpoint -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.METHOD] = {"buffer": self.buffer.state_dict(), "real_transitions": self.real_transitions,
                                   "iterations": self.iterations}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("env")
        if saved != self.hparams.env:
            raise ValueError(f"checkpoint was made for env={saved!r}, this run has env={self.hparams.env!r}")
        state = checkpoint[self.METHOD]
        self.buffer.load_state_dict(state["buffer"])
        self.real_transitions, self.iterations = state["real_transitions"], state["iterations"]
