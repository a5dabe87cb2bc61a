"""`ExactDynamicsSearch`: APS's policy optimiser with the exact equations and the true physics in
place of GSSM and ``z_c`` — the gap ladder's first rung (DESIGN §9): what the optimiser can reach at all."""

from __future__ import annotations

from dataclasses import asdict

import torch

from common.seeding import IMAGINATION, derive_seed
from envs import TaskFamily
from modules.methods.gssm_aps.imagination import policy_rollouts
from modules.models.model_env import ModelEnv, exact_next_state
from modules.policies.actor_critic import ActorCritic
from modules.policies.ppo import PPOLearner, PPOSettings, Rollouts


def physics_code(family: TaskFamily, params: torch.Tensor) -> torch.Tensor:
    """``params [..., P]`` mapped to ``[-1, 1]`` over the training ranges: the latent the policy reads
    in place of ``z_c`` (test tasks outside the ranges fall outside ``[-1, 1]``)."""
    low, high = (torch.tensor([family.train_ranges[n][i] for n in family.param_names]) for i in (0, 1))
    return (params - (low + high) / 2) / ((high - low) / 2)


class ExactDynamicsSearch(PPOLearner):
    """One policy ``π(a | s, code(physics))`` trained by APS's PPO on rollouts of the exact equations.

    Each epoch is one PPO iteration: ``rollouts_per_task`` start states per training task drawn
    from ``start_obs`` (real states, e.g. the Dyna run's buffers, so the start distribution is
    APS's), ``horizon`` steps of the stochastic policy through :func:`exact_next_state` with that
    task's physics (:class:`~modules.models.model_env.ModelEnv`: the same projection, reward and
    termination as imagination), then APS's clipped-PPO updates. Only the model and the latent
    differ from :class:`~modules.methods.gssm_aps.aps.APSModule`; give it the same policy and PPO
    settings to measure APS's optimiser.

    Args:
        family: the task family (classic: it needs :meth:`TaskFamily.simulate`).
        params: ``[T, P]`` physics of the training tasks; start_obs: ``[T, N, O]`` real states of each.
        hidden_dim, init_log_std, min_action_std, horizon, rollouts_per_task, ppo: as APS's.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> tasks = fam.train_tasks(2, seed=0)
        >>> search = ExactDynamicsSearch(fam, fam.params_tensor(tasks), torch.zeros(2, 5, 6), horizon=3,
        ...                              rollouts_per_task=4, hidden_dim=8)
        >>> search.prepare_iteration().reward.shape
        torch.Size([3, 8])
    """

    def __init__(self, family: TaskFamily, params: torch.Tensor, start_obs: torch.Tensor, hidden_dim: int = 64,
                 init_log_std: float = -0.5, min_action_std: float = 0.0, horizon: int = 20,
                 rollouts_per_task: int = 64, ppo: PPOSettings | None = None, seed: int = 0):  # fmt: skip
        settings = PPOSettings.of(ppo)
        super().__init__(settings)
        self.save_hyperparameters({"env": family.name, "hidden_dim": hidden_dim, "init_log_std": init_log_std,
                                   "min_action_std": min_action_std, "horizon": horizon, "seed": seed,
                                   "rollouts_per_task": rollouts_per_task, "ppo": asdict(settings)})  # fmt: skip
        self.family, self.params, self.start_obs = family, params, start_obs
        self.policy = ActorCritic(family.obs_dim, len(family.param_names), family.act_dim, hidden_dim, init_log_std,
                                  min_action_std)  # fmt: skip

    def collect_rollouts(self) -> Rollouts:
        hp = self.hparams
        g = torch.Generator().manual_seed(derive_seed(IMAGINATION, hp.seed, self.iterations))
        tasks = torch.arange(len(self.params)).repeat_interleave(hp.rollouts_per_task)  # [B]
        start = self.start_obs[tasks, torch.randint(self.start_obs.shape[1], (len(tasks),), generator=g)]
        params = self.params[tasks]
        latent = physics_code(self.family, params)
        self.policy.input_normalizer.update(torch.cat([start, latent], dim=-1))
        env = ModelEnv(exact_next_state(self.family, params), self.family, params)
        return policy_rollouts(env, self.policy, start, latent, hp.horizon, g)

    @property
    def samples_per_iteration(self) -> int:
        return self.hparams.horizon * len(self.params) * self.hparams.rollouts_per_task
