"""`GSSMTestTimeMethod`: the methods that start from a trained GSSM+APS and work per test task (DESIGN §8)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from common.seeding import METATEST, derive_seed
from datamodules.sharding import TaskIndexShard
from envs import Task, make_family
from evaluation import TaskResult, publish_meta_test, run_meta_test, select_tasks, write_test_compute
from modules.methods.gssm_aps.dyna_checkpoint import DynaCheckpoint, load_dyna_checkpoint
from modules.methods.gssm_test_time.model_predictive_agent import ModelPredictiveAgent
from modules.methods.gssm_test_time.task_policy_search import TaskPolicySearch
from modules.policies.mppi import MPPI

METHODS = ("gssm_mpc", "gssm_nonamortized")


class GSSMTestTimeMethod(pl.LightningModule):
    """The meta-test (DESIGN §6) of a method that uses the GSSM of a main-job ``checkpoint`` at test
    time, run by ``python train.py test --config conf/baselines/<env>_<method>.yaml
    --model.checkpoint <runs/<env>/.../last.ckpt>``; it trains nothing.

    * ``method="gssm_mpc"`` — :class:`model_predictive_agent.ModelPredictiveAgent`: MPPI in
      GSSM with the task's inferred context and the exact reward, re-planning every step, no policy;
      it also collects the online context (the latent re-inferred as the context grows).
    * ``method="gssm_nonamortized"`` — :class:`modules.methods.gssm_test_time.task_policy_search.TaskPolicySearch`: the
      amortized policy collects the online context, then each test task gets its own policy from
      ``search_iterations`` PPO iterations on imagined rollouts of that task alone.

    Each rank runs its shard of the test tasks (``r, r + W, ...``) in ``test_step``; rank 0 writes
    ``metatest.json``/``.md`` and ``test_compute.json`` (the method's extra compute: seconds per test
    task and per action, over all ranks' tasks) into the log directory.

    Args:
        checkpoint: a main-job (Dyna) checkpoint of ``env``; its GSSM and its APS policy are used.
        metatest_episodes: evaluation episodes per test task (MPC is slow per action: fewer).
        mpc_*: :class:`modules.policies.mppi.MPPI`'s settings; search_*: :class:`TaskPolicySearch`'s.

    Example:
        >>> GSSMTestTimeMethod(env="acrobot", method="gssm_mpc", checkpoint="last.ckpt").hparams.method
        'gssm_mpc'
    """

    def __init__(
        self,
        env: str = "acrobot",
        method: str = "gssm_mpc",
        checkpoint: str | None = None,
        metatest_context: int = 50,
        metatest_episodes: int = 50,
        metatest_tasks: list[str] | None = None,
        mpc_horizon: int = 20,
        mpc_samples: int = 64,
        mpc_iterations: int = 1,
        mpc_noise_std: float = 0.5,
        mpc_temperature: float = 0.03,
        search_iterations: int = 10,
        search_rollouts: int = 256,
        search_init: str = "amortized",
        max_grad_norm: float = 0.5,
        seed: int = 0,
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown test-time method {method!r}; expected one of {METHODS}")
        if checkpoint is None:
            raise ValueError(f"{method} needs --model.checkpoint: a main-job (train.py fit) checkpoint of {env}")
        self.save_hyperparameters()
        self.family = make_family(env)
        self.test_tasks = select_tasks(self.family.test_tasks(), metatest_tasks, self.family.name)
        self.run: DynaCheckpoint | None = None
        self._results: list[TaskResult] = []
        self._compute = {"seconds": 0.0, "tasks": 0, "actions": 0}

    def setup(self, stage: str) -> None:
        # loaded here, not in __init__: LightningCLI instantiates this class while parsing (Lightning 2.6)
        if self.run is None:
            self.run = load_dyna_checkpoint(self.hparams.checkpoint, self.hparams.env)
            self.gssm, self.aps = self.run.model, self.run.aps  # submodules: moved to the device with this one

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TaskIndexShard(len(self.test_tasks), self.trainer.global_rank, self.trainer.world_size),
                          batch_size=None)  # fmt: skip

    def test_step(self, indices: torch.Tensor, batch_idx: int) -> None:
        self._results += self.meta_test_tasks([self.test_tasks[i] for i in indices.tolist()], indices.tolist())

    @torch.no_grad()
    def meta_test_tasks(self, tasks: list[Task], indices: list[int] | None = None) -> list[TaskResult]:
        """The protocol of this method on ``tasks`` (this rank's share, at ``indices`` of the task list;
        any tasks of the family, e.g. the training tasks a benchmark tunes on), adding its compute to the
        totals."""
        hp = self.hparams
        if not tasks:
            return []
        indices = list(range(len(tasks))) if indices is None else indices
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = derive_seed(METATEST, hp.seed, 0, rank)
        params = self.family.params_tensor(tasks).to(self.device)
        self.gssm.eval()
        if hp.method == "gssm_mpc":
            planner = MPPI(self.family.act_dim, hp.mpc_horizon, hp.mpc_samples, hp.mpc_iterations, hp.mpc_noise_std,
                           hp.mpc_temperature)  # fmt: skip
            agent = ModelPredictiveAgent(self.gssm, self.family, params, planner, seed=derive_seed(METATEST, hp.seed, 0,
                                                                                                   rank, 1))
            results, _ = run_meta_test(self.family, tasks, hp.method, agent, hp.metatest_episodes, seed,
                                       agent.infer_latent, hp.metatest_context,
                                       adapt=lambda cx, cy, latent, episodes: agent.evaluation_policy(latent, episodes))
            self._compute["seconds"] += agent.seconds
            self._compute["actions"] += agent.actions
        else:
            search = TaskPolicySearch(self.gssm, self.aps, hp.search_iterations, hp.search_rollouts, hp.search_init,
                                      hp.max_grad_norm, seed)  # fmt: skip
            results, _ = run_meta_test(
                self.family, tasks, hp.method, self.aps.policy, hp.metatest_episodes, seed,
                lambda cx, cy, mask: self.gssm.infer_context(cx, cy, mask).q_zc, hp.metatest_context,
                adapt=lambda cx, cy, latent, episodes: search.adapt(cx, cy, latent, episodes, params, indices),
            )  # fmt: skip
            self._compute["seconds"] += search.seconds
        self._compute["tasks"] += len(tasks)
        return results

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        header = (
            f"{self.family.name}, {hp.method} on {Path(hp.checkpoint).name} ({self.run.real_transitions} real training "
            f"transitions), {hp.metatest_context} context steps, {hp.metatest_episodes} episodes per task"
        )
        scalars = publish_meta_test(self.trainer, self._results, self.test_tasks, hp.method, header,
                                    self.run.real_transitions)  # fmt: skip
        compute = self.compute_per_task_and_action()
        for name, value in {**scalars, **compute}.items():
            self.log(name, value, rank_zero_only=True)
        write_test_compute(self.trainer, hp.method, compute)
        self._results = []

    def compute_per_task_and_action(self) -> dict[str, float]:
        """The method's extra test-time compute in seconds, over all ranks' tasks: per test task (the
        per-task search; MPC's planning over the whole protocol) and per action (MPC's planning time
        over the env rows it planned for)."""
        c = self._compute
        totals = torch.tensor([c["seconds"], c["tasks"], c["actions"]], dtype=torch.float64)
        if self._trainer is not None and self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        seconds, tasks, actions = totals.tolist()
        out = {"time/test_seconds_per_task": seconds / max(tasks, 1)}
        if self.hparams.method == "gssm_mpc":
            out["time/test_seconds_per_action"] = seconds / max(actions, 1)
        return out
