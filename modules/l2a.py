"""`L2A`: Learning to Adapt (GrBAL, Nagabandi et al., ICLR 2019) — a MAML dynamics MLP and online-adapting MPPI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from common.seeding import COLLECT_ENV, METATEST, STREAM, derive_seed
from datamodules.collection import Transitions
from datamodules.sharding import TaskIndexShard, gather_shards, shard_tasks
from datamodules.task_buffers import MultiTaskBuffer
from envs import Task, make_family
from envs.rollout import TaskVectorEnv, random_policy, rollout
from evaluation import TaskResult, log_final_hparams, publish_meta_test, run_meta_test, select_tasks
from modules.adaptive_dynamics import AdaptiveDynamics
from modules.l2a_agent import L2AAgent
from modules.mppi import MPPI


class WindowStream(IterableDataset):
    """Per epoch, ``batches`` draws of ``meta_batch`` windows: ``(slot [W], u [W])`` — a task slot of this
    rank's shard and a uniform number that ``training_step`` turns into a window start for the buffer's
    current size. The same count on every rank."""

    def __init__(self, slots: int, batches: int, meta_batch: int, seed: int):
        self.slots, self.batches, self.meta_batch = slots, batches, meta_batch
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            yield (torch.randint(self.slots, (self.meta_batch,), generator=self.generator),
                   torch.rand(self.meta_batch, generator=self.generator))  # fmt: skip


class L2A(pl.LightningModule):
    """L2A on a task family's training tasks, meta-tested by DESIGN §6; one epoch = one iteration.

    Each iteration (``on_train_epoch_start``) collects real transitions — iteration 0
    ``random_steps_per_task`` random steps in every task, later ``episode_length`` steps (one episode,
    or more after an early termination) in each of the next ``tasks_per_iteration`` tasks (round
    robin) with the :class:`modules.l2a_agent.L2AAgent` adapting online to its last ``recent``
    transitions; every rank collects in its shard of the tasks and the
    shares are all-gathered, so every rank (and the checkpoint) holds every task's data — then
    ``steps_per_iteration`` MAML steps (``training_step``): windows of ``recent + query`` consecutive
    transitions of one task (of the rank's shard), the model adapted on the first ``recent`` and
    scored on the next ``query`` (:meth:`AdaptiveDynamics.meta_loss`), Adam on the meta-learned
    weights (averaged over ranks by DDP). Windows may cross an episode boundary: every transition of
    a window is the same task's true dynamics. The normalisers are running statistics of all data
    collected so far; ``refit_normalizers=False`` fits them on iteration 0's random data only, which on
    acrobot let the normalised MSE rise from 0.15 to 5–75 (the controller's Δs are several times the
    random data's), hence the default. The run stops at the end of the iteration that reaches
    ``real_transitions``. A resumed run continues from its checkpoint (buffers, weights, counters);
    its window draws differ from an uninterrupted run's, as the model-free learners' minibatch order
    does. The meta-test also writes ``test_compute.json``: the planning and adaptation time per action.
    The meta-test collects the online context with the agent (adapting as the context grows), then
    evaluates ``metatest_episodes`` episodes per task, adapting online in each.

    Example:
        >>> L2A(env="acrobot", hidden_dim=16).hparams.recent
        16
    """

    def __init__(
        self,
        env: str = "acrobot",
        real_transitions: int = 48_000,
        num_train_tasks: int = 16,
        task_seed: int = 0,
        random_steps_per_task: int = 200,
        tasks_per_iteration: int = 16,
        hidden_dim: int = 128,
        layers: int = 2,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        recent: int = 16,
        query: int = 16,
        meta_batch: int = 32,
        steps_per_iteration: int = 200,
        lr: float = 1e-3,
        refit_normalizers: bool = True,
        mpc_horizon: int = 20,
        mpc_samples: int = 64,
        mpc_iterations: int = 1,
        mpc_noise_std: float = 0.5,
        mpc_temperature: float = 0.03,
        eval_every_transitions: int = 0,
        metatest_context: int = 50,
        metatest_episodes: int = 10,
        metatest_tasks: list[str] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        for name, value in (("real_transitions", real_transitions), ("tasks_per_iteration", tasks_per_iteration),
                            ("recent", recent), ("query", query), ("meta_batch", meta_batch),
                            ("steps_per_iteration", steps_per_iteration)):  # fmt: skip
            if value < 1:
                raise ValueError(f"L2A {name}={value}; expected an integer >= 1")
        if random_steps_per_task < recent + query:
            raise ValueError(f"random_steps_per_task={random_steps_per_task} must hold one window of recent + query = "
                             f"{recent + query} transitions")  # fmt: skip
        self.save_hyperparameters()
        self.family = make_family(env)
        self.train_tasks = self.family.train_tasks(num_train_tasks, task_seed)
        self.test_tasks = select_tasks(self.family.test_tasks(), metatest_tasks, self.family.name)
        fam = self.family
        self.model = AdaptiveDynamics(fam.obs_dim, fam.act_dim, hidden_dim, layers, inner_lr, inner_steps)
        per_iteration = min(tasks_per_iteration, num_train_tasks)
        iterations = -(-max(real_transitions - num_train_tasks * random_steps_per_task, 0) // (per_iteration *
                                                                                             fam.episode_length))
        episodes_per_task = -(-iterations * per_iteration // num_train_tasks) + 1  # round robin: at most this many
        capacity = random_steps_per_task + episodes_per_task * fam.episode_length  # the ring never wraps
        self.buffer = MultiTaskBuffer(num_train_tasks, capacity, fam.obs_dim, fam.act_dim)
        self.real_transitions = self._transitions_before = self.iterations = 0
        self._results: list[TaskResult] = []
        self._compute = torch.zeros(2, dtype=torch.float64)  # the meta-test's planning seconds and actions
        self._latest_metatest: dict[str, float] = {}

    # ---- the agent and its data -------------------------------------------------------------
    def shard(self) -> torch.Tensor:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        return shard_tasks(len(self.train_tasks), rank, world, "training tasks")

    def agent(self, tasks: list[Task], seed: int) -> L2AAgent:
        hp = self.hparams
        planner = MPPI(self.family.act_dim, hp.mpc_horizon, hp.mpc_samples, hp.mpc_iterations, hp.mpc_noise_std,
                       hp.mpc_temperature)  # fmt: skip
        params = self.family.params_tensor(tasks).to(self.device)
        return L2AAgent(self.model, self.family, params, planner, hp.recent, seed)

    def collection_tasks(self, rank: int, world: int) -> torch.Tensor:
        """The training tasks ``rank`` collects in this iteration (sorted): its whole shard at iteration 0,
        then the next ``tasks_per_iteration / world`` of it, round robin."""
        shard = shard_tasks(len(self.train_tasks), rank, world, "training tasks")
        if self.iterations == 0:
            return shard
        per_rank = min(self.hparams.tasks_per_iteration // world, len(shard))
        start = ((self.iterations - 1) * per_rank) % len(shard)
        return shard[(start + torch.arange(per_rank)) % len(shard)].sort().values

    @torch.no_grad()
    def on_train_epoch_start(self) -> None:
        """Every rank collects its tasks' share; the shares are all-gathered, so every rank's buffer
        (and checkpoint) holds every task's transitions and the normalisers agree across ranks."""
        hp, fam = self.hparams, self.family
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        if len(self.train_tasks) % world or hp.tasks_per_iteration % world:
            raise ValueError(f"L2A on {world} ranks: num_train_tasks={len(self.train_tasks)} and tasks_per_iteration="
                             f"{hp.tasks_per_iteration} must be multiples of the number of ranks")  # fmt: skip
        mine = self.collection_tasks(rank, world)
        collected = torch.cat([self.collection_tasks(r, world) for r in range(world)]).sort().values
        seed = derive_seed(COLLECT_ENV, hp.seed, self.iterations, rank) % 2**31
        if self.iterations == 0:
            steps = hp.random_steps_per_task
            policy = random_policy(fam.act_dim, torch.Generator().manual_seed(seed))
        else:
            steps = fam.episode_length
            agent = self.agent([self.train_tasks[i] for i in mine.tolist()], seed)
            empty_x = torch.zeros(len(mine), 0, fam.obs_dim + fam.act_dim, device=self.device)
            policy = agent.evaluation_policy(empty_x, torch.zeros(len(mine), 0, fam.obs_dim, device=self.device), 1)
        env = TaskVectorEnv(fam, [self.train_tasks[i] for i in mine.tolist()], seed)
        traj = rollout(env, policy, env.reset(), steps, episodic=False)
        env.close()
        as_tasks = lambda t: t.transpose(0, 1).cpu()  # noqa: E731  [H, B, ·] → [B, H, ·]
        share = Transitions(as_tasks(traj.obs), as_tasks(traj.action).clamp(-1, 1), as_tasks(traj.reward).float(),
                            as_tasks(traj.next_obs), as_tasks(traj.terminated))  # fmt: skip
        data = gather_shards(share, len(self.train_tasks), world, device=self.device, tasks=collected)
        self.buffer.add(collected, data.obs, data.action, data.reward, data.next_obs, data.done)
        if self.iterations == 0 or hp.refit_normalizers:
            x = torch.cat([data.obs, data.action], -1).reshape(-1, fam.obs_dim + fam.act_dim)
            self.model.x_normalizer.update(x.to(self.device))
            self.model.y_normalizer.update((data.next_obs - data.obs).reshape(-1, fam.obs_dim).to(self.device))
        if self.iterations > 0:
            self.log("real/reward_per_step", data.reward.mean(), rank_zero_only=True)
        self._transitions_before = self.real_transitions
        self.real_transitions += len(collected) * steps
        self.iterations += 1

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = derive_seed(STREAM, hp.seed, rank)
        stream = WindowStream(len(self.shard()), hp.steps_per_iteration, hp.meta_batch, seed)
        return DataLoader(stream, batch_size=None)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        slot, u = batch
        tasks = self.shard()[slot.cpu()]
        width = hp.recent + hp.query
        starts = (u.cpu() * (self.buffer.size[tasks] - width + 1)).long()
        x, y = self.buffer.xy(tasks, starts[:, None] + torch.arange(width))
        x, y = x.to(self.device), y.to(self.device)
        loss, unadapted = self.model.meta_loss(x[:, : hp.recent], y[:, : hp.recent], x[:, hp.recent :],
                                               y[:, hp.recent :])  # fmt: skip
        if not torch.isfinite(loss):
            raise FloatingPointError(f"L2A meta-loss is {loss.item()} at iteration {self.iterations}")
        self.log("model/train/adapted_mse", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("model/train/unadapted_mse", unadapted, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr)

    # ---- meta-test --------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        hp = self.hparams
        self.log("real/transitions", float(self.real_transitions), rank_zero_only=True)
        done = self.real_transitions >= hp.real_transitions
        every = hp.eval_every_transitions
        if done or (every > 0 and self.real_transitions // every > self._transitions_before // every):
            shard = torch.arange(len(self.test_tasks))[self.trainer.global_rank :: self.trainer.world_size]
            self._publish(self.meta_test_tasks(shard.tolist()))
        if done:
            self.trainer.should_stop = True

    @torch.no_grad()
    def meta_test_tasks(self, indices: list[int]) -> list[TaskResult]:
        """The protocol on the test tasks at ``indices`` (this rank's share)."""
        if not indices:
            return []
        hp = self.hparams
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = derive_seed(METATEST, hp.seed, self.iterations, rank)
        tasks = [self.test_tasks[i] for i in indices]
        agent = self.agent(tasks, derive_seed(METATEST, hp.seed, self.iterations, rank, 1))
        results, _ = run_meta_test(self.family, tasks, "l2a", agent, hp.metatest_episodes, seed, agent.infer_latent,
                                   hp.metatest_context,
                                   adapt=lambda cx, cy, latent, episodes: agent.evaluation_policy(cx, cy, episodes))
        self._compute += torch.tensor([agent.seconds, agent.actions], dtype=torch.float64)
        return results

    def _publish(self, results: list[TaskResult]) -> None:
        hp = self.hparams
        header = (
            f"{self.family.name}, l2a, iteration {self.iterations}, {self.real_transitions} real training "
            f"transitions, {hp.metatest_context} context steps, {hp.metatest_episodes} episodes per task"
        )
        scalars = publish_meta_test(self.trainer, results, self.test_tasks, "l2a", header, self.real_transitions)
        totals = self._compute  # planning and adaptation seconds, actions: summed over ranks
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        self._compute = torch.zeros(2, dtype=torch.float64)
        compute = {"time/test_seconds_per_action": float(totals[0] / totals[1].clamp_min(1))}
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a broadcast: every rank
        if self.trainer.is_global_zero:
            (log_dir / "test_compute.json").write_text(json.dumps({"method": "l2a", **compute}, indent=1))
        for name, value in {**scalars, **compute}.items():
            self.log(name, value, rank_zero_only=True)
        self._latest_metatest = scalars

    def on_fit_end(self) -> None:
        """Rank 0: the run's settings in TensorBoard's *HParams* tab with the final meta-test per split."""
        log_final_hparams(self, self._latest_metatest, self.real_transitions)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TaskIndexShard(len(self.test_tasks), self.trainer.global_rank, self.trainer.world_size),
                          batch_size=None)  # fmt: skip

    def test_step(self, indices: torch.Tensor, batch_idx: int) -> None:
        self._results += self.meta_test_tasks(indices.tolist())

    def on_test_epoch_end(self) -> None:
        self._publish(self._results)
        self._results = []

    # ---- checkpoint -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["l2a"] = {"buffer": self.buffer.state_dict(), "real_transitions": self.real_transitions,
                             "iterations": self.iterations}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("env")
        if saved != self.hparams.env:
            raise ValueError(f"checkpoint was made for env={saved!r}, this run has env={self.hparams.env!r}")
        state = checkpoint["l2a"]
        capacity = state["buffer"]["obs"].shape[1]
        if capacity != self.buffer.capacity:  # written with another bound (the size bound changed on 2026-11-29)
            fam = self.family
            self.buffer = MultiTaskBuffer(len(self.train_tasks), capacity, fam.obs_dim, fam.act_dim)
        self.buffer.load_state_dict(state["buffer"])
        self.real_transitions, self.iterations = state["real_transitions"], state["iterations"]
