"""Imagined rollouts in the meta dynamics model, and generalised advantage estimation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs import TaskFamily
from modules.actor_critic import ActorCritic
from modules.meta_dynamics_model import MetaDynamicsModel
from modules.meta_dynamics_net import ContextEncoding
from modules.sampling import sample_normal


@dataclass
class ImaginedRollouts:
    """``B`` imagined trajectories of ``H`` steps, time-major.

    Shapes: obs ``[H, B, O]``, action ``[H, B, A]`` (the unclipped policy sample),
    log_prob/reward/alive/terminated ``[H, B]``, value ``[H + 1, B]`` (the last one bootstraps),
    latent ``[B, Z]``. ``alive`` is 1 until the step on which the trajectory terminates
    (inclusive) and 0 after: rewards after termination are zeroed and those steps carry no loss.
    """

    obs: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    reward: torch.Tensor
    alive: torch.Tensor
    terminated: torch.Tensor
    value: torch.Tensor
    latent: torch.Tensor

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory ``[B]``."""
        return self.reward.sum(0)


@torch.no_grad()
def imagine(
    model: MetaDynamicsModel,
    policy: ActorCritic,
    family: TaskFamily,
    start_obs: torch.Tensor,
    encoding: ContextEncoding,
    latent: torch.Tensor,
    params: torch.Tensor,
    horizon: int,
    generator: torch.Generator | None = None,
    rollouts_per_context: int = 1,
) -> ImaginedRollouts:
    """Roll the policy out in the model for ``horizon`` steps, all ``B`` trajectories as one batch.

    The ``B = E · M`` trajectories come in ``E`` consecutive groups of ``M = rollouts_per_context``:
    group ``e`` reads context set ``e`` of ``encoding`` (its ``M`` trajectories are the ``M`` target
    queries of that set, so the keys/values computed once per set serve every step with no copy).
    Trajectory ``b`` acts on ``[s, latent[b]]`` and steps with the target latent sampled around
    ``latent[b]``. Next states are sampled from the model's Gaussian; rewards and terminations are
    the family's exact batched functions. Each step is a fixed sequence of batched tensor ops.

    Args:
        start_obs: ``[B, O]`` real start states; latent: ``[B, Z]`` posterior samples of ``z_c``;
        encoding: ``E`` encoded context sets; params: ``[B, P]`` physics parameters of each
        trajectory's task (for the reward).
        generator: source of the action and next-state noise (on the tensors' device).

    Raises:
        FloatingPointError: if the model produced NaN/inf states (checked once, after the rollout).
    """
    b, o = start_obs.shape
    if b % rollouts_per_context:
        raise ValueError(f"{b} start states do not split into groups of rollouts_per_context={rollouts_per_context}")
    groups = b // rollouts_per_context
    zeros = start_obs.new_zeros
    out = ImaginedRollouts(
        obs=zeros(horizon + 1, b, o),  # the extra row holds the final state until the return
        action=zeros(horizon, b, family.act_dim),
        log_prob=zeros(horizon, b),
        reward=zeros(horizon, b),
        alive=zeros(horizon, b),
        terminated=torch.zeros(horizon, b, dtype=torch.bool, device=start_obs.device),
        value=zeros(horizon + 1, b),
        latent=latent,
    )
    z_c = latent.view(groups, rollouts_per_context, -1)
    obs, alive = start_obs, start_obs.new_ones(b)
    out.obs[0] = obs
    for t in range(horizon):
        dist, out.value[t] = policy(obs, latent)
        action = out.action[t] = sample_normal(dist, generator)
        applied = action.clamp(-1.0, 1.0)
        x = torch.cat([obs, applied], dim=-1).view(groups, rollouts_per_context, -1)
        next_dist = model.predict(x, encoding, z_c, sample=True, generator=generator)
        next_obs = out.obs[t + 1] = sample_normal(next_dist, generator).view(b, o)
        terminated = out.terminated[t] = family.terminated(next_obs, params) & (alive > 0)
        out.alive[t] = alive
        out.log_prob[t] = dist.log_prob(action).sum(-1)
        out.reward[t] = family.reward(obs, applied, next_obs, params) * alive
        alive = alive * (~terminated).float()
        obs = next_obs
    out.value[horizon] = policy(obs, latent)[1]
    finite = torch.isfinite(out.obs).flatten(1).all(1)
    if not finite.all():
        step = int((~finite).nonzero()[0]) - 1
        raise FloatingPointError(
            f"imagined states became NaN/inf at step {step} of {horizon}; the dynamics model is "
            "unstable here: shorten the policy horizon or train the model longer first"
        )
    out.obs = out.obs[:horizon]
    return out


def generalized_advantages(
    reward: torch.Tensor, value: torch.Tensor, terminated: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) over time-major ``reward [H, B]``, ``value [H + 1, B]``, ``terminated [H, B]``.

    The backward recursion runs over ``H`` with all ``B`` trajectories as one tensor; a
    terminated step does not bootstrap. Returns ``(advantages [H, B], value targets [H, B])``.

    Example:
        >>> adv, ret = generalized_advantages(torch.ones(3, 1), torch.zeros(4, 1),
        ...                                   torch.zeros(3, 1, dtype=torch.bool), gamma=1.0, lam=1.0)
        >>> ret[:, 0].tolist()
        [3.0, 2.0, 1.0]
    """
    advantages = torch.zeros_like(reward)
    running = torch.zeros_like(reward[0])
    nonterminal = (~terminated).float()
    for t in reversed(range(reward.shape[0])):
        delta = reward[t] + gamma * value[t + 1] * nonterminal[t] - value[t]
        running = delta + gamma * lam * nonterminal[t] * running
        advantages[t] = running
    return advantages, advantages + value[:-1]
