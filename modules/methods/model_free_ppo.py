"""`ModelFreePPO`: the model-free rows of the comparison — DR-PPO and PE-PPO on real episodes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar, Literal

import torch
from torch.distributions import Normal

from common.sampling import sample_normal
from common.seeding import COLLECT_ENV, COLLECT_LATENT, METATEST, derive_seed
from common.validation import INTEGER_1, NUMBER, SEED, check_settings, weight
from datamodules.task_buffers import MultiTaskBuffer
from envs import make_family
from envs.rollout import TaskVectorEnv, Trajectory, rollout
from evaluation import TaskResult, run_meta_test, select_tasks
from modules.methods.meta_tested_learner import MetaTestedLearner
from modules.methods.settings import BudgetSettings, MetaTestSettings
from modules.policies.actor_critic import ActorCritic
from modules.policies.pe_encoder import ProbabilisticContextEncoder
from modules.policies.ppo import PPOLearner, PPOSettings, Rollouts

METHODS = ("dr_ppo", "pe_ppo")
DEFAULT_PPO = PPOSettings(ppo_epochs=10, num_minibatches=32, lr=3e-4)  # CleanRL's: 32 minibatches of 100 steps
DEFAULT_METATEST = MetaTestSettings(every_transitions=16_000)  # every 5 iterations of 16 episodes


class ModelFreePPO(MetaTestedLearner, PPOLearner):
    """PPO trained directly on real episodes of the training tasks, meta-tested by DESIGN §6.

    * ``method="dr_ppo"`` — domain randomisation: a policy ``π(a | s)`` without a latent.
    * ``method="pe_ppo"`` — a PEARL-style probabilistic context encoder
      (:class:`~modules.policies.pe_encoder.ProbabilisticContextEncoder`) and ``π(a | s, z)``. Each episode's
      ``z = μ + σ ε`` is drawn once from ``q(z | C)``, ``C`` a random subset (size uniform in
      ``[0, context_size]``) of the transitions its task produced in earlier iterations (empty at
      first: the prior). The PPO loss recomputes ``z`` from the stored ``C`` and ``ε``, so the encoder
      learns through the actor and critic losses, plus ``kl_weight · KL[q ‖ N(0, I)]``.
      At meta-test ``z`` is inferred from the online context exactly as for APS.

    Each epoch is one PPO iteration (:class:`~modules.policies.ppo.PPOLearner`): every rank runs
    ``envs_per_iteration`` full episodes in parallel, each in a training task drawn uniformly
    (seeded by run seed, iteration and rank). Steps after an early termination are masked out and not
    counted. The budget ``budget.real_transitions`` counts the transitions used, over all ranks; the run
    stops at the end of the iteration that spends it (set ``trainer.max_epochs: -1``), with a meta-test
    every ``metatest.every_transitions`` and at the end. The policy's input normaliser is updated after each
    collection, and the behaviour log-probabilities and values are recomputed under it, so each
    iteration's PPO starts at ratio 1.
    ``train.py test --ckpt_path`` meta-tests a checkpoint.

    Args:
        budget, metatest: :mod:`modules.methods.settings` blocks (or dicts of some of their fields: the
            rest keep this class's defaults); the training tasks are
            ``family.train_tasks(budget.num_train_tasks, budget.task_seed, budget.task_design)``, as the GSSM
            datamodule draws them.
        context_capacity: transitions kept per training task for PE contexts.
        kl_weight: weight of the PE encoder's KL term (0: none).
        ppo: :class:`modules.policies.ppo.PPOSettings` (or a dict of some of its fields), shared with APS;
            here CleanRL's step size 3e-4 and its 10 epochs × 32 minibatches.

    Example:
        >>> agent = ModelFreePPO(env="acrobot", method="pe_ppo", latent_dim=3, hidden_dim=16)
        >>> agent.policy(torch.zeros(2, 6), torch.zeros(2, 3))[1].shape
        torch.Size([2])
    """

    RANGES: ClassVar[dict[str, Any]] = {
        "budget": BudgetSettings, "envs_per_iteration": INTEGER_1, "latent_dim": INTEGER_1, "context_size": INTEGER_1,
        "context_capacity": INTEGER_1, "kl_weight": weight("no KL term"), "hidden_dim": INTEGER_1,
        "init_log_std": NUMBER, "ppo": PPOSettings, "metatest": MetaTestSettings, "seed": SEED,
    }  # fmt: skip

    def __init__(
        self,
        env: str = "acrobot",
        method: Literal["dr_ppo", "pe_ppo"] = "dr_ppo",
        budget: BudgetSettings = BudgetSettings(),
        envs_per_iteration: int = 16,
        latent_dim: int = 8,
        context_size: int = 50,
        context_capacity: int = 2_000,
        kl_weight: float = 0.1,
        hidden_dim: int = 64,
        init_log_std: float = -0.5,
        ppo: PPOSettings = DEFAULT_PPO,
        metatest: MetaTestSettings = DEFAULT_METATEST,
        seed: int = 0,
    ):
        check_settings(ModelFreePPO, locals())
        super().__init__(PPOSettings.of(ppo, DEFAULT_PPO))
        self.budget, self.metatest = BudgetSettings.of(budget), MetaTestSettings.of(metatest, DEFAULT_METATEST)
        if method not in METHODS:
            raise ValueError(f"unknown model-free method {method!r}; expected one of {METHODS}")
        if self.budget.real_transitions < 1 or envs_per_iteration < 1:
            raise ValueError(f"real_transitions={self.budget.real_transitions} and envs_per_iteration="
                             f"{envs_per_iteration} must be ≥ 1")  # fmt: skip
        budget, ppo, metatest = map(asdict, (self.budget, self.ppo, self.metatest))  # plain data: weights_only
        self.save_hyperparameters()
        self.family = make_family(env)
        self.train_tasks = self.family.train_tasks(self.budget.num_train_tasks, self.budget.task_seed,
                                                  self.budget.task_design)
        self.test_tasks = select_tasks(self.family.test_tasks(), self.metatest.tasks, self.family.name)
        obs_dim, act_dim = self.family.obs_dim, self.family.act_dim
        self.encoder = None
        if method == "pe_ppo":
            self.encoder = ProbabilisticContextEncoder(obs_dim + act_dim, obs_dim, latent_dim, hidden_dim)
        self.policy = ActorCritic(obs_dim, latent_dim if self.encoder else 0, act_dim, hidden_dim, init_log_std)
        tasks = len(self.train_tasks)
        self.contexts = MultiTaskBuffer(tasks, context_capacity, obs_dim, act_dim) if self.encoder else None
        self.real_transitions = self._transitions_before = 0
        self._context: tuple[torch.Tensor, ...] = ()
        self.METHOD = method  # the meta-test's name: dr_ppo or pe_ppo
        self._results: list[TaskResult] = []
        self._latest_metatest: dict[str, float] = {}

    # ---- real episodes ----------------------------------------------------------------------
    @property
    def samples_per_iteration(self) -> int:
        return self.hparams.envs_per_iteration * self.family.episode_length

    def episode_latents(self, tasks: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``z`` per episode ``[B, Z]`` (``Z = 0`` for DR-PPO); stores the context and noise for the loss."""
        if self.encoder is None:
            return torch.zeros(len(tasks), 0, device=self.device)
        n = self.hparams.context_size
        sizes = self.contexts.size[tasks]
        index = (torch.rand(len(tasks), n, generator=g) * sizes.clamp_min(1)[:, None]).long()
        cx, cy = self.contexts.xy(tasks, index)
        mask = (torch.arange(n)[None] < torch.randint(0, n + 1, (len(tasks), 1), generator=g)) & (sizes[:, None] > 0)
        eps = torch.randn(len(tasks), self.hparams.latent_dim, generator=g)
        self._context = tuple(t.to(self.device) for t in (cx, cy, mask, eps))
        with torch.no_grad():
            q = self.encoder(*self._context[:3])
        return q.loc + q.scale * self._context[3]

    @torch.no_grad()
    def collect_rollouts(self) -> Rollouts:
        hp, fam, device = self.hparams, self.family, self.device
        rank = self.trainer.global_rank if self._trainer is not None else 0
        g = torch.Generator().manual_seed(derive_seed(COLLECT_LATENT, hp.seed, self.iterations, rank))
        tasks = torch.randint(len(self.train_tasks), (hp.envs_per_iteration,), generator=g)
        latent = self.episode_latents(tasks, g)
        env_seed = derive_seed(COLLECT_ENV, hp.seed, self.iterations, rank) % 2**31
        env = TaskVectorEnv(fam, [self.train_tasks[i] for i in tasks], env_seed)
        noise = torch.Generator().manual_seed(env_seed)

        def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict]:
            dist, _ = self.policy(obs.to(device), latent)
            return sample_normal(dist, noise).cpu(), {}  # unclipped: PPO's log-probability is of this sample

        traj = rollout(env, act, env.reset(), fam.episode_length)
        env.close()
        obs = torch.cat([traj.obs, traj.next_obs[-1:]])  # row H: each episode's last state, for the bootstrap
        self._remember(tasks, obs, traj.action, traj.alive)
        reward = traj.reward.float()
        return self._evaluate(obs.to(device), traj.action.to(device), reward.to(device), traj.alive.to(device),
                              traj.terminated.to(device), latent)  # fmt: skip

    def _remember(self, tasks: torch.Tensor, obs: torch.Tensor, action: torch.Tensor, alive: torch.Tensor) -> None:
        """Add each episode's live transitions to its task's context buffer; update the normalisers."""
        live = alive.T > 0  # [B, H]
        x = torch.cat([obs[:-1], action], dim=-1).transpose(0, 1)[live]
        y = (obs[1:] - obs[:-1]).transpose(0, 1)[live]
        if self.encoder is not None:
            self.encoder.x_normalizer.update(x, self._sum_over_ranks)
            self.encoder.y_normalizer.update(y, self._sum_over_ranks)
            for k, task in enumerate(tasks.tolist()):  # ≤ envs_per_iteration ring writes, not per step
                n = int(live[k].sum())
                nothing = torch.zeros(1, n)  # rewards and dones play no part in a context
                self.contexts.add(torch.tensor([task]), obs[:n, k][None], action[:n, k][None], nothing,
                                  obs[1 : n + 1, k][None], nothing.bool())  # fmt: skip

    def _evaluate(self, obs, action, reward, alive, terminated, latent) -> Rollouts:
        """Behaviour log-probabilities and values under the input normaliser updated with this batch."""
        h = reward.shape[0]
        z = latent.expand(h + 1, -1, -1)
        self.policy.input_normalizer.update(torch.cat([obs[:-1], z[:-1]], dim=-1)[alive > 0], self._sum_over_ranks)
        dist, value = self.policy(obs, z)
        log_prob = Normal(dist.loc[:h], dist.scale[:h], validate_args=False).log_prob(action).sum(-1)
        self._transitions_before = self.real_transitions
        self.real_transitions += int(self._sum_over_ranks(alive.sum().reshape(1))[0])
        return Rollouts(obs[:h], action, log_prob, reward, alive, terminated, value, latent)

    def minibatch_latent(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """PE-PPO: ``z`` recomputed from each episode's context and noise, with gradients, and the
        KL term; DR-PPO: the (empty) stored latent."""
        if self.encoder is None:
            return super().minibatch_latent(mb)
        cx, cy, mask, eps = self._context
        q = self.encoder(cx, cy, mask)
        z = q.loc + q.scale * eps
        return z[mb["trajectory"]], self.hparams.kl_weight * self.encoder.kl_to_prior(q).mean()

    def log_rollouts(self, r: Rollouts) -> None:
        n = r.reward.shape[1]
        self.log("real/episode_return", r.returns.mean(), batch_size=n, sync_dist=True)
        self.log("real/reward_per_step", r.reward.sum() / r.alive.sum(), batch_size=n, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.meta_test_when_due()

    # ---- meta-test --------------------------------------------------------------------------
    def meta_test_tasks(self, indices: list[int]) -> list[TaskResult]:
        """Run the meta-test protocol on the test tasks at ``indices`` (this rank's share)."""
        hp = self.hparams
        if len(indices) == 0:
            return []
        rank = self.trainer.global_rank if self._trainer is not None else 0
        was_training = self.training
        self.eval()
        try:
            results, _ = run_meta_test(
                self.family, [self.test_tasks[i] for i in indices], hp.method, self.policy,
                self.metatest.episodes, seed=derive_seed(METATEST, hp.seed, self.iterations, rank),
                infer_latent=self.encoder, n_context=self.metatest.context,  # None for DR-PPO
            )  # fmt: skip
        finally:
            self.train(was_training)
        return results

    def metatest_header(self) -> str:
        return (f"{self.family.name}, {self.METHOD}, PPO iteration {self.iterations}, {self.real_transitions} real "
                f"training transitions, {self.metatest.protocol()}")

    # ---- checkpoint -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_free_ppo"] = {
            "contexts": self.contexts.state_dict() if self.contexts is not None else None,
            "real_transitions": self.real_transitions,
            "iterations": self.iterations,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        for key in ("env", "method"):
            if saved.get(key) != self.hparams[key]:
                raise ValueError(
                    f"checkpoint was made for {key}={saved.get(key)!r}, this run has {key}={self.hparams[key]!r}"
                )
        state = checkpoint["model_free_ppo"]
        if self.contexts is not None:
            self.contexts.load_state_dict(state["contexts"])
        self.real_transitions, self.iterations = state["real_transitions"], state["iterations"]
