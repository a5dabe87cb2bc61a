"""`L2A`: Learning to Adapt (GrBAL, Nagabandi et al., ICLR 2019) — a MAML dynamics MLP and online-adapting MPPI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, IterableDataset

from common.finite_loss import require_finite_loss
from common.seeding import STREAM, derive_seed
from common.validation import INTEGER_1, POSITIVE, SEED, check_settings
from datamodules.collection import Transitions
from envs import Task
from envs.rollout import StepPolicy
from evaluation import TaskResult, run_meta_test
from modules.methods.collecting_learner import CollectingLearner
from modules.methods.l2a.agent import L2AAgent
from modules.methods.settings import BudgetSettings, CollectionSettings, MetaTestSettings
from modules.models.adaptive_dynamics import AdaptiveDynamics
from modules.policies.mppi import MPPI, MPPISettings

DEFAULT_METATEST = MetaTestSettings(episodes=10)  # MPC is slow per action: 10 evaluation episodes per test task


class WindowStream(IterableDataset):
    """Per epoch, ``batches`` draws of ``meta_batch`` windows: ``(slot [W], u [W])`` — a task slot of this
    rank's shard and a uniform number that ``training_step`` turns into a window start for the buffer's
    current size. The same count on every rank. Each epoch's draws come from ``epoch_seed()``, read when
    the epoch starts iterating, so a resumed run draws what an uninterrupted one would."""

    def __init__(self, slots: int, batches: int, meta_batch: int, epoch_seed: Callable[[], int]):
        self.slots, self.batches, self.meta_batch, self.epoch_seed = slots, batches, meta_batch, epoch_seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.epoch_seed())
        for _ in range(self.batches):
            yield (torch.randint(self.slots, (self.meta_batch,), generator=generator),
                   torch.rand(self.meta_batch, generator=generator))  # fmt: skip


class L2A(CollectingLearner):
    """L2A on a task family's training tasks, meta-tested by DESIGN §6; one epoch = one iteration.

    Each iteration (``on_train_epoch_start``, :class:`modules.methods.collecting_learner.CollectingLearner`) collects
    real transitions — iteration 0
    ``collection.random_steps_per_task`` random steps in every task, later ``episode_length`` steps (one
    episode, or more after an early termination) in each of the next ``collection.tasks_per_iteration``
    tasks (round robin) with the :class:`modules.methods.l2a.agent.L2AAgent` adapting online to its last ``recent``
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
    ``budget.real_transitions``. A resumed run continues from its checkpoint (buffers, weights, counters) as the
    uninterrupted run would (every draw is seeded per iteration). The meta-test also writes
    ``test_compute.json``: the planning and adaptation time per action.
    The meta-test collects the online context with the agent (adapting as the context grows), then
    evaluates ``metatest.episodes`` episodes per task, adapting online in each.

    Args:
        budget, collection, metatest: :mod:`modules.methods.settings` blocks (or dicts of some of their
            fields: the rest keep this class's defaults); mpc: the planner's
            :class:`modules.policies.mppi.MPPISettings`.

    Example:
        >>> L2A(env="acrobot", hidden_dim=16).hparams.recent
        16
    """

    METHOD = "l2a"
    RANGES: ClassVar[dict[str, Any]] = {
        "budget": BudgetSettings, "collection": CollectionSettings, "hidden_dim": INTEGER_1, "layers": INTEGER_1,
        "inner_lr": POSITIVE, "inner_steps": INTEGER_1, "recent": INTEGER_1, "query": INTEGER_1,
        "meta_batch": INTEGER_1, "steps_per_iteration": INTEGER_1, "lr": POSITIVE, "mpc": MPPISettings,
        "metatest": MetaTestSettings, "seed": SEED,
    }  # fmt: skip
    COMPUTE_NAME = "test_seconds_per_action"

    def __init__(
        self,
        env: str = "acrobot",
        budget: BudgetSettings = BudgetSettings(),
        collection: CollectionSettings = CollectionSettings(),
        hidden_dim: int = 128,
        layers: int = 2,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        recent: int = 16,
        query: int = 16,
        meta_batch: int = 32,
        steps_per_iteration: int = 500,  # acrobot's training tasks plateau after 3 iterations of 500, 7 of 200
        lr: float = 1e-3,
        refit_normalizers: bool = True,
        mpc: MPPISettings = MPPISettings(),
        metatest: MetaTestSettings = DEFAULT_METATEST,
        seed: int = 0,
    ):
        check_settings(L2A, locals())
        super().__init__()
        budget, collection = BudgetSettings.of(budget), CollectionSettings.of(collection)
        metatest, self.mpc = MetaTestSettings.of(metatest, DEFAULT_METATEST), MPPISettings.of(mpc)
        if collection.random_steps_per_task < recent + query:
            raise ValueError(f"random_steps_per_task={collection.random_steps_per_task} must hold one window of "
                             f"recent + query = {recent + query} transitions")  # fmt: skip
        self.init_collection(env, budget, collection, metatest)
        budget, collection, metatest, mpc = map(asdict, (budget, collection, metatest, self.mpc))  # weights_only data
        self.save_hyperparameters()
        fam = self.family
        self.model = AdaptiveDynamics(fam.obs_dim, fam.act_dim, hidden_dim, layers, inner_lr, inner_steps)

    # ---- the agent and its data -------------------------------------------------------------
    def agent(self, tasks: list[Task], seed: int) -> L2AAgent:
        planner = MPPI(self.family.act_dim, self.mpc)
        params = self.family.params_tensor(tasks).to(self.device)
        return L2AAgent(self.model, self.family, params, planner, self.hparams.recent, seed)

    def collection_policy(self, tasks: torch.Tensor, seed: int) -> StepPolicy:
        """The controller, adapting online to each task's episode so far."""
        fam = self.family
        agent = self.agent([self.train_tasks[i] for i in tasks.tolist()], seed)
        empty_x = torch.zeros(len(tasks), 0, fam.obs_dim + fam.act_dim, device=self.device)
        return agent.evaluation_policy(empty_x, torch.zeros(len(tasks), 0, fam.obs_dim, device=self.device), 1)

    def on_collected(self, data: Transitions) -> None:
        """The running normalisers take the new transitions (only iteration 0's without ``refit_normalizers``)."""
        if self.iterations == 0 or self.hparams.refit_normalizers:
            self.update_model_normalizers(data)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank, _ = self.rank_world()
        epoch_seed = lambda: derive_seed(STREAM, hp.seed, rank, self.iterations)  # noqa: E731
        stream = WindowStream(len(self.shard()), hp.steps_per_iteration, hp.meta_batch, epoch_seed)
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
        require_finite_loss(self, loss, "L2A meta-loss", f"at iteration {self.iterations}")
        self.log("model/train/adapted_mse", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("model/train/unadapted_mse", unadapted, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr)

    # ---- meta-test --------------------------------------------------------------------------
    def run_protocol(self, tasks: list[Task], seed: int, agent_seed: int) -> list[TaskResult]:
        """The agent collects the online context, adapting as it grows, then adapts online in every episode."""
        agent = self.agent(tasks, agent_seed)
        results, _ = run_meta_test(self.family, tasks, self.METHOD, agent, self.metatest.episodes, seed,
                                   agent.infer_latent, self.metatest.context,
                                   adapt=lambda cx, cy, latent, episodes: agent.evaluation_policy(cx, cy, episodes))
        self._compute += torch.tensor([agent.seconds, agent.actions], dtype=torch.float64)
        return results
