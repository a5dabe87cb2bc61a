"""`GSSMTestTimeMethod`: the methods that start from a trained GSSM+APS and work per test task (DESIGN §8)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from common.seeding import METATEST, derive_seed
from common.validation import INTEGER_1, POSITIVE, SEED, check_settings
from envs import Task, make_family
from evaluation import TaskResult, run_meta_test, select_tasks
from modules.methods.gssm_aps.dyna_checkpoint import DynaCheckpoint, load_dyna_checkpoint
from modules.methods.gssm_test_time.model_predictive_agent import ModelPredictiveAgent
from modules.methods.gssm_test_time.task_policy_search import TaskPolicySearch
from modules.methods.meta_tested_learner import MetaTested
from modules.methods.settings import MetaTestSettings
from modules.policies.mppi import MPPI, MPPISettings

METHODS = ("gssm_mpc", "gssm_nonamortized")
DEFAULT_METATEST = MetaTestSettings(episodes=10)  # MPC is slow per action: 10 evaluation episodes per test task


class GSSMTestTimeMethod(MetaTested, pl.LightningModule):
    """The meta-test (DESIGN §6) of a method that uses the GSSM of a main-job ``checkpoint`` at test
    time, run by ``python train.py test --config conf/baselines/<env>_<method>.yaml
    --model.checkpoint <runs/<env>/.../last.ckpt>``; it trains nothing.

    * ``method="gssm_mpc"`` — :class:`model_predictive_agent.ModelPredictiveAgent`: MPPI in
      GSSM with the task's inferred context and the exact reward, re-planning every step, no policy;
      it also collects the online context (the latent re-inferred as the context grows).
    * ``method="gssm_nonamortized"`` — :class:`modules.methods.gssm_test_time.task_policy_search.TaskPolicySearch`: the
      amortized policy collects the online context, then each test task gets its own policy from
      ``search_iterations`` PPO iterations on imagined rollouts of that task alone.

    Each rank runs its share of the test tasks in ``test_step``
    (:class:`modules.methods.meta_tested_learner.MetaTested`); rank 0 writes ``metatest.json``/``.md``
    and ``test_compute.json`` (the method's extra compute: seconds per test task and per action, over
    all ranks' tasks) into the log directory.

    Args:
        checkpoint: a main-job (Dyna) checkpoint of ``env``; its GSSM and its APS policy are used.
        metatest: :class:`modules.methods.settings.MetaTestSettings` (or a dict of some of its fields),
            10 evaluation episodes per test task (MPC is slow per action); ``every_transitions`` does not
            apply (nothing is trained).
        mpc: :class:`modules.policies.mppi.MPPISettings`; search_*: :class:`TaskPolicySearch`'s settings.

    Example:
        >>> GSSMTestTimeMethod(env="acrobot", method="gssm_mpc", checkpoint="last.ckpt").hparams.method
        'gssm_mpc'
    """

    RANGES: ClassVar[dict[str, Any]] = {
        "metatest": MetaTestSettings, "mpc": MPPISettings, "search_iterations": INTEGER_1,
        "search_rollouts": INTEGER_1, "max_grad_norm": POSITIVE, "seed": SEED,
    }  # fmt: skip

    def __init__(
        self,
        env: str = "acrobot",
        method: str = "gssm_mpc",
        checkpoint: str | None = None,
        metatest: MetaTestSettings = DEFAULT_METATEST,
        mpc: MPPISettings = MPPISettings(),
        search_iterations: int = 10,
        search_rollouts: int = 256,
        search_init: str = "amortized",
        max_grad_norm: float = 0.5,
        seed: int = 0,
    ):
        check_settings(GSSMTestTimeMethod, locals())
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown test-time method {method!r}; expected one of {METHODS}")
        if checkpoint is None:
            raise ValueError(f"{method} needs --model.checkpoint: a main-job (train.py fit) checkpoint of {env}")
        self.metatest, self.mpc = MetaTestSettings.of(metatest, DEFAULT_METATEST), MPPISettings.of(mpc)
        if self.metatest.every_transitions:
            raise ValueError(f"{method} trains nothing: metatest.every_transitions={self.metatest.every_transitions} "
                             "does not apply")  # fmt: skip
        metatest, mpc = asdict(self.metatest), asdict(self.mpc)  # plain data: checkpoints load with weights_only
        self.save_hyperparameters()
        self.METHOD = method
        self.family = make_family(env)
        self.test_tasks = select_tasks(self.family.test_tasks(), self.metatest.tasks, self.family.name)
        self.run: DynaCheckpoint | None = None
        self._results: list[TaskResult] = []
        self._latest_metatest: dict[str, float] = {}
        self._compute = {"seconds": 0.0, "tasks": 0, "actions": 0}

    def setup(self, stage: str) -> None:
        # loaded here, not in __init__: LightningCLI instantiates this class while parsing (Lightning 2.6)
        if self.run is None:
            self.run = load_dyna_checkpoint(self.hparams.checkpoint, self.hparams.env)
            self.gssm, self.aps = self.run.model, self.run.aps  # submodules: moved to the device with this one

    @property
    def real_transitions(self) -> int:
        """The real training transitions of the checkpoint's run."""
        return self.run.real_transitions

    def meta_test_tasks(self, indices: list[int]) -> list[TaskResult]:
        return self.run_protocol([self.test_tasks[i] for i in indices], indices)

    @torch.no_grad()
    def run_protocol(self, tasks: list[Task], indices: list[int] | None = None) -> list[TaskResult]:
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
            agent = ModelPredictiveAgent(self.gssm, self.family, params, MPPI(self.family.act_dim, self.mpc),
                                         seed=derive_seed(METATEST, hp.seed, 0, rank, 1))  # fmt: skip
            results, _ = run_meta_test(self.family, tasks, hp.method, agent, self.metatest.episodes, seed,
                                       agent.infer_latent, self.metatest.context,
                                       adapt=lambda cx, cy, latent, episodes: agent.evaluation_policy(latent, episodes))
            self._compute["seconds"] += agent.seconds
            self._compute["actions"] += agent.actions
        else:
            search = TaskPolicySearch(self.gssm, self.aps, hp.search_iterations, hp.search_rollouts, hp.search_init,
                                      hp.max_grad_norm, seed)  # fmt: skip
            results, _ = run_meta_test(
                self.family, tasks, hp.method, self.aps.policy, self.metatest.episodes, seed,
                lambda cx, cy, mask: self.gssm.infer_context(cx, cy, mask).q_zc, self.metatest.context,
                adapt=lambda cx, cy, latent, episodes: search.adapt(cx, cy, latent, episodes, params, indices),
            )  # fmt: skip
            self._compute["seconds"] += search.seconds
        self._compute["tasks"] += len(tasks)
        return results

    def metatest_header(self) -> str:
        return (f"{self.family.name}, {self.METHOD} on {Path(self.hparams.checkpoint).name} ({self.real_transitions} "
                f"real training transitions), {self.metatest.protocol()}")

    def test_compute(self) -> dict[str, float]:
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
