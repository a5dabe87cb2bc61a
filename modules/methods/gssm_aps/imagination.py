"""`imagine`: PPO rollouts of a policy in the meta dynamics model; `policy_rollouts`: the same in any model env."""

from __future__ import annotations

import torch

from common.sampling import sample_normal
from envs import TaskFamily
from envs.rollout import Trajectory, rollout
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.meta_dynamics_net import ContextEncoding
from modules.models.model_env import ModelEnv, meta_dynamics_next_state
from modules.policies.actor_critic import ActorCritic
from modules.policies.ppo import Rollouts


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
    """Roll the policy out in the model for ``horizon`` steps, all ``B`` trajectories as one batch:
    :func:`envs.rollout.rollout` on a :class:`modules.models.model_env.ModelEnv` of
    :func:`~modules.models.model_env.meta_dynamics_next_state` (see them for the context groups, mean or
    sampled next states, the physical projection, the exact reward, the MOPO penalty and the cut), with
    the policy's log-probabilities and values recorded for PPO. Trajectory ``b`` acts on
    ``[s, latent[b]]``; a trajectory cut where the model is unsure keeps that step
    (truncated, bootstrapped from the critic), later ones carry no reward and no loss.

    Args:
        start_obs: ``[B, O]`` real start states; latent: ``[B, Z]`` posterior samples of ``z_c``;
        encoding: ``E`` encoded context sets; params: ``[B, P]`` physics parameters of each
        trajectory's task (for the reward).
        generator: source of the action and next-state noise (on the tensors' device).

    NaN/inf states are left for PPO's check on every rank (:meth:`PPOLearner.prepare_iteration`).
    """
    next_state = meta_dynamics_next_state(model, encoding, latent, rollouts_per_context, sample_next, generator)
    env = ModelEnv(next_state, family, params, uncertainty_penalty, uncertainty_cut)
    return policy_rollouts(env, policy, start_obs, latent, horizon, generator)


@torch.no_grad()
def policy_rollouts(
    env: ModelEnv,
    policy: ActorCritic,
    start_obs: torch.Tensor,
    latent: torch.Tensor,
    horizon: int,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """``horizon`` steps of the stochastic policy in ``env`` from ``start_obs [B, O]``, trajectory ``b``
    acting on ``[s, latent[b]]``, with the log-probabilities and values PPO needs. An env without
    heads (exact equations) records zero disagreement and penalty.
    """

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dist, value = policy(obs, latent)
        action = sample_normal(dist, generator)
        return action, {"log_prob": dist.log_prob(action).sum(-1), "value": value}

    traj = rollout(env, act, env.reset(start_obs), horizon)
    final_value = policy(traj.last_obs, latent)[1]
    info = traj.info
    no_heads = torch.zeros_like(traj.reward)
    return Rollouts(
        obs=traj.obs,
        action=traj.action,
        log_prob=info["log_prob"],
        reward=traj.reward,
        alive=traj.alive,
        terminated=traj.terminated,
        value=torch.cat([info["value"], final_value[None]]),
        latent=latent,
        disagreement=info.get("disagreement", no_heads),
        penalty=info.get("penalty", no_heads) * traj.alive,
        truncated=traj.truncated,
    )
