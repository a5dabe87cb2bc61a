"""`collect_transitions`: real transitions of one env per task, stepped in lockstep, as tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from envs import Task, TaskFamily
from envs.rollout import TaskVectorEnv, Trajectory, random_policy, rollout

ActFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Transitions:
    """Real transitions of ``T`` tasks, ``S`` steps each (``done`` = terminated, not truncated).

    Shapes: obs/next_obs ``[T, S, obs]``, action ``[T, S, act]``, reward/done ``[T, S]``.
    ``episode_returns[k]`` lists the returns of the episodes task ``k`` finished.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor
    episode_returns: list[list[float]] = field(default_factory=list)


def collect_transitions(
    family: TaskFamily,
    tasks: list[Task],
    steps_per_task: int,
    seed: int,
    act_fn: ActFn | None = None,
    progress: bool = False,
) -> Transitions:
    """Step a vector env over ``tasks`` for ``steps_per_task`` steps (episodes auto-reset).

    Args:
        act_fn: maps observations ``[T, obs]`` to actions ``[T, act]`` in ``[-1, 1]``;
            None draws uniform random actions from a generator seeded with ``seed``.
        progress: show a progress bar over the steps.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> data = collect_transitions(fam, fam.train_tasks(2, seed=0), steps_per_task=5, seed=0)
        >>> data.obs.shape
        torch.Size([2, 5, 6])
    """
    env = TaskVectorEnv(family, tasks, seed)
    if act_fn is None:
        policy = random_policy(family.act_dim, torch.Generator().manual_seed(seed))
    else:

        def policy(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict]:
            return act_fn(obs).detach().float().cpu(), {}

    traj = rollout(env, policy, env.reset(), steps_per_task, episodic=False, progress="collect" if progress else None)
    env.close()
    time_major = (traj.obs, traj.action, traj.reward.float(), traj.next_obs, traj.terminated)
    return Transitions(*(x.transpose(0, 1).contiguous() for x in time_major), traj.episode_returns())
