"""Imagined rollouts in the meta dynamics model."""

from __future__ import annotations

import torch

from envs import TaskFamily
from modules.actor_critic import ActorCritic
from modules.meta_dynamics_model import MetaDynamicsModel
from modules.meta_dynamics_net import ContextEncoding
from modules.ppo import Rollouts
from modules.sampling import sample_normal


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
) -> Rollouts:
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
    out = Rollouts(
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
