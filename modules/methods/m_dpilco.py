"""`MDPILCO`: meta Deep PILCO (DESIGN §8) — embedded ensemble dynamics and a pathwise-trained policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch.distributions import Normal
from torch.utils.data import DataLoader, IterableDataset

from common.clock import synchronized_clock
from common.finite_loss import require_finite_loss
from common.sampling import sample_normal
from common.seeding import IMAGINATION, STREAM, derive_seed
from common.validation import DISCOUNT, INTEGER_1, POSITIVE, SEED, check_settings, weight
from datamodules.collection import Transitions
from envs import Task, TaskFamily
from envs.rollout import StepPolicy, agent_policy, rollout
from evaluation import TaskResult, run_meta_test
from modules.methods.collecting_learner import CollectingLearner
from modules.methods.settings import BudgetSettings, CollectionSettings, MetaTestSettings
from modules.models.embedded_dynamics import EmbeddedDynamics
from modules.models.model_env import ModelEnv, embedded_dynamics_next_state
from modules.policies.embedded_policy import EmbeddedPolicy

MODEL, POLICY = 0, 1  # the two phases of an iteration
DEFAULT_METATEST = MetaTestSettings(every_transitions=9600)  # the learning curve: every 3 iterations of 16 episodes


class PhaseStream(IterableDataset):
    """Per epoch, ``model_steps`` batches ``(MODEL, slot [K, B], u [K, B])`` — for each ensemble member
    its own minibatch of task slots of this rank's shard and uniform numbers that ``training_step``
    turns into buffer indices — then ``policy_steps`` batches ``(POLICY, slot [P], u [P])`` of start
    states. The same count on every rank. Each epoch's draws come from ``epoch_seed()``, read when the
    epoch starts iterating, so a resumed run draws what an uninterrupted one would."""

    def __init__(self, slots: int, model_steps: int, members: int, model_batch: int, policy_steps: int,
                 rollouts: int, epoch_seed: Callable[[], int]):  # fmt: skip
        self.slots, self.model_steps, self.members, self.model_batch = slots, model_steps, members, model_batch
        self.policy_steps, self.rollouts, self.epoch_seed = policy_steps, rollouts, epoch_seed

    def __len__(self) -> int:
        return self.model_steps + self.policy_steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch_seed())
        for _ in range(self.model_steps):
            shape = (self.members, self.model_batch)
            yield MODEL, torch.randint(self.slots, shape, generator=g), torch.rand(shape, generator=g)
        for _ in range(self.policy_steps):
            shape = (self.rollouts,)
            yield POLICY, torch.randint(self.slots, shape, generator=g), torch.rand(shape, generator=g)


class MDPILCO(CollectingLearner):
    """Meta Deep PILCO on a task family's training tasks, meta-tested by DESIGN §6; one epoch = one iteration.

    Each iteration collects real transitions (``on_train_epoch_start``) — iteration 0
    ``collection.random_steps_per_task`` random steps in every task, later one episode
    (``episode_length`` steps) in each of the next ``collection.tasks_per_iteration`` tasks (round
    robin), acting with ``π(a | s, μ_j)`` plus exploration noise; every rank collects its share and
    the shares are all-gathered — then, in ``training_step`` (manual optimisation, two Adams):

    1. ``model_steps`` steps of :meth:`EmbeddedDynamics.loss` — the dynamics ensemble and every
       training task's ``q(h_j)`` by their negative ELBO;
    2. ``policy_steps`` pathwise steps: ``policy_rollouts`` particles start at states of the rank's
       tasks' buffers, each with an embedding sampled from its task's ``q(h_j)`` and one ensemble member,
       roll ``horizon`` steps through the ensemble's :class:`modules.models.model_env.ModelEnv` with the
       exact reward, and the policy ascends the gradient of their mean discounted return backpropagated
       through the model (Deep PILCO: Gal et al., 2016), clipped to norm ``grad_clip``.

    Start states come from the real buffers with a short horizon (as APS's imagination does) rather than
    the whole episode from the initial states (200 differentiable model steps per update). At meta-test,
    a test task's ``q(h)`` is inferred from its online context by ``infer_steps`` variational steps on
    the embedding only
    (:meth:`EmbeddedDynamics.infer`; re-inferred before each context step, as the protocol asks); the
    policy takes no gradient step and acts with the mean of ``q(h)``. ``test_compute.json`` holds that
    inference's seconds per test task. The run stops at the end of the iteration that reaches
    ``budget.real_transitions``; a resumed run continues from its checkpoint (buffers, weights, optimisers,
    counters) as the uninterrupted run would (every draw is seeded per iteration). Under DDP the two
    phases touch different parameters: use ``strategy: ddp_find_unused_parameters_true``.

    Args:
        budget, collection, metatest: :mod:`modules.methods.settings` blocks (or dicts of some of their
            fields: the rest keep this class's defaults).
        model_lr, policy_lr: Adam's learning rates; 0 leaves that phase's weights as they are (the
            other phase still trains).

    Example:
        >>> MDPILCO(env="acrobot", hidden_dim=16).hparams.horizon
        20
    """

    METHOD = "m_dpilco"
    RANGES: ClassVar[dict[str, Any]] = {
        "budget": BudgetSettings, "collection": CollectionSettings, "embedding_dim": INTEGER_1, "members": INTEGER_1,
        "hidden_dim": INTEGER_1, "layers": INTEGER_1, "model_steps": INTEGER_1, "model_batch": INTEGER_1,
        "model_lr": weight("the model stays as it is"), "policy_hidden_dim": INTEGER_1, "policy_steps": INTEGER_1,
        "policy_rollouts": INTEGER_1, "horizon": INTEGER_1, "discount": DISCOUNT,
        "policy_lr": weight("the policy stays as it is"), "grad_clip": POSITIVE, "exploration_std": POSITIVE,
        "infer_steps": INTEGER_1, "infer_lr": POSITIVE, "metatest": MetaTestSettings, "seed": SEED,
    }  # fmt: skip
    COMPUTE_NAME = "inference_seconds_per_task"

    def __init__(
        self,
        env: str = "acrobot",
        budget: BudgetSettings = BudgetSettings(),
        collection: CollectionSettings = CollectionSettings(),
        embedding_dim: int = 4,
        members: int = 4,
        hidden_dim: int = 200,
        layers: int = 2,
        model_steps: int = 500,
        model_batch: int = 256,
        model_lr: float = 1e-3,
        policy_hidden_dim: int = 64,
        policy_steps: int = 200,
        policy_rollouts: int = 256,
        horizon: int = 20,
        discount: float = 1.0,
        policy_lr: float = 1e-3,
        grad_clip: float = 1.0,
        exploration_std: float = 0.2,
        infer_steps: int = 50,
        infer_lr: float = 0.1,
        metatest: MetaTestSettings = DEFAULT_METATEST,
        seed: int = 0,
    ):
        check_settings(MDPILCO, locals())
        super().__init__()
        budget, collection = BudgetSettings.of(budget), CollectionSettings.of(collection)
        metatest = MetaTestSettings.of(metatest, DEFAULT_METATEST)
        if policy_rollouts % members:
            raise ValueError(f"MDPILCO policy_rollouts={policy_rollouts} must be a multiple of members={members}")
        self.init_collection(env, budget, collection, metatest)
        budget, collection, metatest = map(asdict, (budget, collection, metatest))  # plain data: weights_only
        self.save_hyperparameters()
        self.automatic_optimization = False
        fam = self.family
        self.model = EmbeddedDynamics(fam.obs_dim, fam.act_dim, len(self.train_tasks), embedding_dim, members,
                                      hidden_dim, layers)  # fmt: skip
        self.policy = EmbeddedPolicy(fam.obs_dim, fam.act_dim, embedding_dim, policy_hidden_dim,
                                     exploration_std=exploration_std)  # fmt: skip
        self.register_buffer("train_params", fam.params_tensor(self.train_tasks), persistent=False)
        self._noise = torch.Generator()  # embedding samples, re-seeded every iteration

    # ---- data -------------------------------------------------------------------------------
    def collection_policy(self, tasks: torch.Tensor, seed: int) -> StepPolicy:
        """``π(a | s, μ_j)`` with exploration noise, ``μ_j`` the mean of task ``j``'s ``q(h_j)``."""
        noise = torch.Generator(device=self.device).manual_seed(seed)
        return agent_policy(self.policy, self.model.task_mean[tasks.to(self.device)].detach(), generator=noise)

    def on_collected(self, data: Transitions) -> None:
        """The running normalisers take the new transitions; this iteration's embedding noise is seeded."""
        self.update_model_normalizers(data)
        self.policy.obs_normalizer.update(data.obs.reshape(-1, self.family.obs_dim).to(self.device))
        self._noise.manual_seed(derive_seed(IMAGINATION, self.hparams.seed, self.iterations, self.rank_world()[0]))

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank, _ = self.rank_world()
        epoch_seed = lambda: derive_seed(STREAM, hp.seed, rank, self.iterations)  # noqa: E731
        stream = PhaseStream(len(self.shard()), hp.model_steps, hp.members, hp.model_batch, hp.policy_steps,
                             hp.policy_rollouts, epoch_seed)  # fmt: skip
        return DataLoader(stream, batch_size=None)

    def _indices(self, slot: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training tasks and buffer indices of a stream's ``slot``, ``u`` (any shape)."""
        tasks = self.shard()[slot.cpu()]
        return tasks, (u.cpu() * self.buffer.size[tasks]).long().clamp_max(self.buffer.size[tasks] - 1)

    # ---- the two phases ---------------------------------------------------------------------
    def training_step(self, batch: tuple[int, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        phase, slot, u = batch
        is_model = int(phase) == MODEL
        optimizer = self.optimizers()[MODEL if is_model else POLICY]
        loss = self.model_step(slot, u) if is_model else self.policy_step(slot, u)
        require_finite_loss(self, loss, f"M-DPILCO {'model' if is_model else 'policy'} loss",
                            f"at iteration {self.iterations}")  # fmt: skip
        optimizer.zero_grad()
        self.manual_backward(loss)
        if not is_model:  # gradients through many model steps can explode
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def model_step(self, slot: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The negative ELBO of a minibatch per member ``[K, B]`` (this rank's tasks' KL)."""
        tasks, index = self._indices(slot, u)
        x, y = self.buffer.xy(tasks.reshape(-1), index.reshape(-1, 1))
        k, b = slot.shape
        shard = self.shard()
        terms = self.model.loss(x.view(k, b, -1).to(self.device), y.view(k, b, -1).to(self.device),
                                tasks.to(self.device), shard.to(self.device), self.buffer.size[shard].to(self.device),
                                self._noise)  # fmt: skip
        for name in ("nll", "kl", "mse"):
            self.log(f"model/train/{name}", terms[name], on_step=False, on_epoch=True, sync_dist=True)
        return terms["loss"]

    def policy_step(self, slot: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Minus the imagined reward per step of ``P`` particles from the rank's tasks' real states."""
        hp = self.hparams
        tasks, index = self._indices(slot, u)
        start = self.buffer.obs[tasks, index].to(self.device)
        tasks = tasks.to(self.device)
        with torch.no_grad():  # the policy learns to act on its task's embeddings; they learn from the model loss
            h = sample_normal(self.model.task_posterior(tasks), self._noise)
        self.model.requires_grad_(False)  # the gradient passes through the model; its weights need none
        try:
            reward_per_step = imagined_reward_per_step(self.model, self.policy, self.family, start, h,
                                                       self.train_params[tasks], hp.horizon, hp.discount)
        finally:
            self.model.requires_grad_(True)
        self.log("policy/imagined_reward_per_step", reward_per_step, on_step=False, on_epoch=True, sync_dist=True)
        return -reward_per_step

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [torch.optim.Adam(self.model.parameters(), lr=hp.model_lr),
                torch.optim.Adam(self.policy.parameters(), lr=hp.policy_lr)]  # fmt: skip

    # ---- meta-test --------------------------------------------------------------------------
    def run_protocol(self, tasks: list[Task], seed: int, agent_seed: int) -> list[TaskResult]:
        """The embedding inferred from the online context so far before every context step; the policy
        acts on its mean."""
        hp = self.hparams
        noise = torch.Generator().manual_seed(agent_seed)
        seconds = 0.0

        def infer_latent(context_x: torch.Tensor, context_y: torch.Tensor, mask: torch.Tensor) -> Normal:
            nonlocal seconds
            start = synchronized_clock()
            posterior = self.model.infer(context_x, context_y, mask, hp.infer_steps, hp.infer_lr, noise)
            seconds += synchronized_clock() - start
            return posterior

        results, _ = run_meta_test(self.family, tasks, self.METHOD, self.policy, self.metatest.episodes, seed,
                                   infer_latent, self.metatest.context)  # fmt: skip
        self._compute += torch.tensor([seconds, len(tasks)], dtype=torch.float64)
        return results


def imagined_reward_per_step(model: EmbeddedDynamics, policy: EmbeddedPolicy, family: TaskFamily,
                             start: torch.Tensor, h: torch.Tensor, params: torch.Tensor, horizon: int,
                             discount: float = 1.0) -> torch.Tensor:  # fmt: skip
    """M-DPILCO's pathwise objective: the mean discounted reward per step of ``horizon`` steps of
    ``π(a | s, h)`` in the ensemble's ``ModelEnv`` from ``start [B, O]`` with embeddings ``h [B, E]`` and
    physics ``params [B, P]`` — a scalar differentiable in the policy's (and the model's) weights.

    Example:
        >>> from envs import make_family
        >>> from modules.models.embedded_dynamics import EmbeddedDynamics
        >>> from modules.policies.embedded_policy import EmbeddedPolicy
        >>> model = EmbeddedDynamics(6, 1, num_tasks=2, embedding_dim=2, members=2, hidden_dim=8)
        >>> policy = EmbeddedPolicy(6, 1, embedding_dim=2, hidden_dim=8)
        >>> r = imagined_reward_per_step(model, policy, make_family("acrobot"), torch.zeros(4, 6), torch.zeros(4, 2),
        ...                              torch.ones(4, 4), horizon=3)
        >>> r.shape, r.requires_grad
        (torch.Size([]), True)
    """
    env = ModelEnv(embedded_dynamics_next_state(model, h), family, params)
    traj = rollout(env, lambda obs, t, trajectory: (policy(obs, h), {}), env.reset(start), horizon)
    weights = discount ** torch.arange(horizon, device=start.device, dtype=traj.reward.dtype)
    return (traj.reward * weights[:, None]).sum(0).mean() / weights.sum()
