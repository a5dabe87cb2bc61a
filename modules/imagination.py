"""Imagined rollouts in the meta dynamics model."""

from __future__ import annotations

import torch

from common.sampling import sample_normal
from envs import TaskFamily
from modules.actor_critic import ActorCritic
from modules.meta_dynamics_model import MetaDynamicsModel
from modules.meta_dynamics_net import ContextEncoding
from modules.ppo import Rollouts


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
    sample_next: bool = True,
    uncertainty_penalty: float = 0.0,
    uncertainty_cut: float | None = None,
) -> Rollouts:
    """Roll the policy out in the model for ``horizon`` steps, all ``B`` trajectories as one batch.

    The ``B = E · M`` trajectories come in ``E`` consecutive groups of ``M = rollouts_per_context``:
    group ``e`` reads context set ``e`` of ``encoding`` (its ``M`` trajectories are the ``M`` target
    queries of that set, so the keys/values computed once per set serve every step with no copy).
    Trajectory ``b`` acts on ``[s, latent[b]]`` and steps with the target latent around ``latent[b]``.
    With ``sample_next`` the target latent and the next state are sampled from the model's
    Gaussians; otherwise both are their means (our tasks are deterministic). Every next state is
    projected back to a physical one (:meth:`TaskFamily.project`). Rewards and terminations are the
    family's exact batched functions, minus ``uncertainty_penalty`` × the model heads' disagreement
    (MOPO). A trajectory whose step has a disagreement above ``uncertainty_cut`` is cut there: that
    step counts (truncated, bootstrapped from the critic) and later ones carry no reward and no loss.
    Each step is a fixed sequence of batched tensor ops.

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
        disagreement=zeros(horizon, b),
        penalty=zeros(horizon, b),
        truncated=torch.zeros(horizon, b, dtype=torch.bool, device=start_obs.device),
    )
    z_c = latent.view(groups, rollouts_per_context, -1)
    obs, alive = start_obs, start_obs.new_ones(b)
    out.obs[0] = obs
    for t in range(horizon):
        dist, out.value[t] = policy(obs, latent)
        action = out.action[t] = sample_normal(dist, generator)
        applied = action.clamp(-1.0, 1.0)
        x = torch.cat([obs, applied], dim=-1).view(groups, rollouts_per_context, -1)
        next_dist, disagreement = model.predict_with_disagreement(x, encoding, z_c, sample_next, generator)
        next_obs = sample_normal(next_dist, generator) if sample_next else next_dist.mean
        next_obs = out.obs[t + 1] = family.project(next_obs.view(b, o))
        terminated = out.terminated[t] = family.terminated(next_obs, params) & (alive > 0)
        out.alive[t] = alive
        out.log_prob[t] = dist.log_prob(action).sum(-1)
        out.disagreement[t] = disagreement.view(b)
        out.penalty[t] = uncertainty_penalty * out.disagreement[t] * alive
        out.reward[t] = family.reward(obs, applied, next_obs, params) * alive - out.penalty[t]
        if uncertainty_cut is not None:
            out.truncated[t] = (out.disagreement[t] > uncertainty_cut) & (alive > 0) & ~terminated
            alive = alive * (~out.truncated[t]).float()
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
