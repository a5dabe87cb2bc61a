"""`collect_transitions`: run one env per task in lockstep and gather real transitions as tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from envs import Task, TaskFamily

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


def true_next_obs(next_obs: np.ndarray, ended: np.ndarray, info: dict) -> np.ndarray:
    """The observation each sub-env actually reached ``[N, obs]``: under ``SAME_STEP`` autoreset a vector
    env returns the reset observation for an episode that ended (``ended [N]``) and the last one in
    ``info["final_obs"]``.

    Example:
        >>> true_next_obs(np.zeros((2, 1)), np.array([False, True]),
        ...               {"final_obs": np.array([None, np.ones(1)], dtype=object)}).tolist()
        [[0.0], [1.0]]
    """
    real_next = next_obs.copy()
    if ended.any():
        real_next[ended] = np.stack(info["final_obs"][ended])
    return real_next


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
    venv = family.make_vector_env(tasks, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    t, d_obs, d_act = len(tasks), family.obs_dim, family.act_dim
    obs_buf = torch.zeros(t, steps_per_task, d_obs)
    act_buf = torch.zeros(t, steps_per_task, d_act)
    rew_buf = torch.zeros(t, steps_per_task)
    next_buf = torch.zeros(t, steps_per_task, d_obs)
    done_buf = torch.zeros(t, steps_per_task, dtype=torch.bool)
    returns: list[list[float]] = [[] for _ in tasks]
    running = np.zeros(t)
    obs_np, _ = venv.reset(seed=seed)
    for step in tqdm(range(steps_per_task), desc="collect", leave=False, disable=not progress):
        obs = torch.as_tensor(obs_np, dtype=torch.float32)
        if act_fn is None:
            action = torch.rand(t, d_act, generator=generator) * 2 - 1
        else:
            action = act_fn(obs).detach().float().cpu()
        next_np, reward, terminated, truncated, info = venv.step(action.numpy())
        ended = terminated | truncated
        real_next = true_next_obs(next_np, ended, info)
        obs_buf[:, step], act_buf[:, step] = obs, action
        rew_buf[:, step] = torch.as_tensor(reward, dtype=torch.float32)
        next_buf[:, step] = torch.as_tensor(real_next, dtype=torch.float32)
        done_buf[:, step] = torch.as_tensor(terminated)
        running += reward
        for k in np.flatnonzero(ended):
            returns[k].append(float(running[k]))
            running[k] = 0.0
        obs_np = next_np
    venv.close()
    return Transitions(obs_buf, act_buf, rew_buf, next_buf, done_buf, returns)
