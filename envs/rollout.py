"""The one rollout loop: a policy steps a batch of environments, real or imagined, for ``H`` steps.

Every place that steps something — data collection, the model-free learners' episodes, the
meta-test's online context and evaluation episodes, the TensorBoard strip, and imagination in the
learned model (:class:`modules.models.model_env.ModelEnv`) — calls :func:`rollout` with a
:class:`BatchedEnv`, so there is one definition of a trajectory and of its ``alive`` mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from envs.family import TaskFamily
from envs.task import Task


@dataclass
class EnvStep:
    """What one step of a :class:`BatchedEnv` returns, batched over its ``B`` sub-envs.

    Attributes:
        obs: ``[B, O]`` the observation to act on next (a reset one where an episode ended and
            the env resets itself).
        next_obs: ``[B, O]`` the state the step reached (the final one where an episode ended).
        reward: ``[B]``; terminated, truncated: ``[B]`` bool.
        info: per-step extras ``[B, ...]`` (a learned model's disagreement and penalty).
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)


class BatchedEnv(Protocol):
    """``B`` environments stepped as one: ``step(action [B, A]) → EnvStep`` (actions in ``[-1, 1]``).
    Each implementation has its own ``reset`` (a real env draws start states, a model starts from given ones)."""

    def step(self, action: torch.Tensor) -> EnvStep: ...


class GivenStartEnv(BatchedEnv, Protocol):
    """A :class:`BatchedEnv` whose trajectories start at given states (a learned model,
    :class:`modules.models.model_env.ModelEnv`): ``reset(start_obs [B, O])`` → the observations to act on."""

    def reset(self, start_obs: torch.Tensor) -> torch.Tensor: ...


class Agent(Protocol):
    """A policy as the rollout loop and the meta-test see it: actions in ``[-1, 1]`` for
    ``obs [N, O]`` and ``latent [N, Z]`` (``Z = 0`` without a latent), and parameters that say its
    device (an ``nn.Module``)."""

    def act(
        self, obs: torch.Tensor, latent: torch.Tensor, deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...  # fmt: skip

    def parameters(self): ...


class TaskVectorEnv:
    """One real env per task behind gymnasium's vector API, speaking tensors.

    Sub-env ``i`` runs ``tasks[i]`` seeded with ``seed + i``. Episodes reset themselves on the
    same step (``SAME_STEP``); :attr:`EnvStep.next_obs` is then the final observation from
    ``info["final_obs"]``, so every step yields a true transition. With ``render_mode`` the
    sub-envs render and reset on the step *after* an end (``NEXT_STEP``, so the final frame can be
    drawn): that step is no transition, so roll such an env out episodically only.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> env = TaskVectorEnv(fam, fam.train_tasks(2, seed=0), seed=0)
        >>> env.step(torch.zeros(2, 1)).next_obs.shape
        torch.Size([2, 6])
    """

    def __init__(self, family: TaskFamily, tasks: list[Task], seed: int, render_mode: str | None = None):
        if render_mode is None:
            self.venv = family.make_vector_env(tasks, seed=seed)
        else:
            fns = [lambda t=t: gym.make(family.env_id, render_mode=render_mode, **t.parameters) for t in tasks]
            self.venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self.seed = seed
        self.num_envs = len(tasks)

    def reset(self) -> torch.Tensor:
        """First observations ``[B, O]`` (the envs reseeded with ``seed``)."""
        obs, _ = self.venv.reset(seed=self.seed)
        return torch.as_tensor(obs, dtype=torch.float32)

    def step(self, action: torch.Tensor) -> EnvStep:
        obs, reward, terminated, truncated, info = self.venv.step(action.detach().float().cpu().numpy())
        next_obs = obs.copy()
        ended = terminated | truncated
        if ended.any() and "final_obs" in info:
            next_obs[ended] = np.stack(info["final_obs"][ended])
        return EnvStep(
            torch.as_tensor(obs, dtype=torch.float32),
            torch.as_tensor(next_obs, dtype=torch.float32),
            torch.as_tensor(reward),  # float64, as the envs give it: returns are summed without rounding
            torch.as_tensor(terminated),
            torch.as_tensor(truncated),
        )

    def render(self) -> list[np.ndarray]:
        """One frame per sub-env (with ``render_mode="rgb_array"``)."""
        return list(self.venv.render())

    def close(self) -> None:
        self.venv.close()


@dataclass
class Trajectory:
    """``H`` steps of ``B`` trajectories, time-major, filled by :func:`rollout`.

    Shapes: obs/next_obs ``[H, B, O]`` (``next_obs[t]`` is the state step ``t`` reached;
    ``obs[t + 1]`` differs from it only where an episode ended and the env reset itself),
    action ``[H, B, A]`` (what the policy returned; the env got it clipped to ``[-1, 1]``),
    reward/alive ``[H, B]``, terminated/truncated ``[H, B]`` bool, ``info[k]`` ``[H, B, ...]``
    (the policy's and the env's per-step extras), last_obs ``[B, O]`` (the observation to act on
    after the last step: a bootstrap value's input where no env reset itself; ``next_obs[-1]`` is the
    state the last step reached).

    ``alive[t]`` is 1 where the trajectory was still running when step ``t`` began; in an
    episodic rollout it drops to 0 after the first termination or truncation and later steps
    carry zero reward and no ``terminated``/``truncated`` flag. A continuing rollout (real data
    collection) keeps it at 1 through the envs' own resets.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    alive: torch.Tensor
    info: dict[str, torch.Tensor]
    last_obs: torch.Tensor

    def episode_returns(self) -> list[list[float]]:
        """Per sub-env, the returns of the episodes that ended within the rollout."""
        ended = (self.terminated | self.truncated).T.cpu()
        returns = []
        for rewards, ends in zip(self.reward.T.double().cpu(), ended, strict=True):
            bounds = [0, *(ends.nonzero()[:, 0] + 1).tolist()]
            returns.append([float(rewards[a:b].cumsum(0)[-1]) for a, b in itertools.pairwise(bounds)])  # step order
        return returns


StepPolicy = Callable[[torch.Tensor, int, Trajectory], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(obs [B, O], t, trajectory so far) → (action [B, A], extras {name: [B, ...]})``."""


def agent_policy(
    agent: Agent, latent: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
) -> StepPolicy:
    """A :class:`StepPolicy` of an :class:`Agent` acting on a fixed ``latent [B, Z]`` (on the agent's
    device; actions come back on the observations' device)."""
    device = next(agent.parameters()).device

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        action = agent.act(obs.to(device), latent, deterministic=deterministic, generator=generator)
        return action.to(obs.device), {}

    return act


def random_policy(act_dim: int, generator: torch.Generator) -> StepPolicy:
    """Uniform actions in ``[-1, 1]`` from ``generator``."""

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.rand(obs.shape[0], act_dim, generator=generator) * 2 - 1, {}

    return act


def rollout(
    env: BatchedEnv,
    policy: StepPolicy,
    obs: torch.Tensor,
    steps: int,
    episodic: bool = True,
    on_step: Callable[[int, Trajectory], None] | None = None,
    progress: str | None = None,
) -> Trajectory:
    """Step ``env`` with ``policy`` for ``steps`` steps from ``obs [B, O]`` (what its ``reset`` gave).

    Each step is one policy call and one env step for all ``B`` trajectories; the trajectory is
    filled in place (the policy and ``on_step`` see the steps so far) and
    ``on_step(t, trajectory)`` runs after step ``t`` is recorded. See :class:`Trajectory` for
    ``episodic`` and the ``alive`` mask. ``progress`` labels a progress bar over the steps (None: none).

    Example:
        >>> from envs import make_family
        >>> fam = make_family("cartpole_swingup")
        >>> env = TaskVectorEnv(fam, fam.train_tasks(3, seed=0), seed=0)
        >>> traj = rollout(env, random_policy(1, torch.Generator().manual_seed(0)), env.reset(), steps=4)
        >>> traj.obs.shape, traj.alive.shape
        (torch.Size([4, 3, 5]), torch.Size([4, 3]))
    """
    if steps < 1:
        raise ValueError(f"a rollout needs steps >= 1, got {steps}")
    b = obs.shape[0]
    traj = Trajectory(*(None,) * 7, info={}, last_obs=obs)  # tensors allocated at the first step
    alive = torch.ones(b, device=obs.device)
    for t in tqdm(range(steps), desc=progress, leave=False, disable=progress is None):
        action, extras = policy(obs, t, traj)
        result = env.step(action.clamp(-1.0, 1.0))
        record = {
            "obs": obs, "action": action, "reward": result.reward * alive, "next_obs": result.next_obs,
            "terminated": result.terminated & (alive > 0), "truncated": result.truncated & (alive > 0), "alive": alive,
        }  # fmt: skip
        info = {**extras, **result.info}
        if t == 0:  # shapes and devices are known now
            for name, value in record.items():
                setattr(traj, name, value.new_zeros(steps, *value.shape))
            traj.info = {name: value.new_zeros(steps, *value.shape) for name, value in info.items()}
        for name, value in record.items():
            getattr(traj, name)[t] = value
        for name, value in info.items():
            traj.info[name][t] = value
        if episodic:
            alive = alive * (~(result.terminated | result.truncated)).to(alive.dtype)
        obs = traj.last_obs = result.obs
        if on_step is not None:
            on_step(t, traj)
    return traj
