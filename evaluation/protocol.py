"""The meta-test protocol (DESIGN §6): online context, then evaluation episodes, no gradient step.

It needs of a method only an :class:`Agent` (``act(obs, latent)``) and, for methods with a task
latent, a :data:`LatentInference` — so GSSM+APS, PE-PPO and DR-PPO are tested by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Normal

from envs import Task, TaskFamily
from envs.rollout import Agent, StepPolicy, TaskVectorEnv, Trajectory, agent_policy, rollout


@dataclass
class TaskResult:
    """One method on one test task. ``reward_per_step`` is the return divided by the full episode
    length, so steps lost to an early termination count as zero reward; ``latent`` is the mean of
    ``q(z | online context)`` the method acted on (empty without a latent)."""

    method: str
    task: str
    split: str
    params: dict[str, float]
    return_mean: float
    return_std: float
    reward_per_step: float
    episodes: int
    latent: list[float]


LatentInference = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Normal]
TestTimeAdaptation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], StepPolicy]
"""``(context_x [T, n, X], context_y [T, n, O], latent [T, Z], episodes E) → the step policy of the
T × E evaluation envs`` (env ``i·E + e`` runs task ``i``): a method that does work per test task
after its online context (a per-task policy search) plugs in here."""


@torch.no_grad()
def collect_online_context(
    family: TaskFamily,
    tasks: list[Task],
    infer_latent: LatentInference,
    policy: Agent,
    n_context: int,
    seed: int,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Act in every test task for ``n_context`` steps, re-inferring ``z_c`` as the context grows.

    The latent starts at the prior (empty context) and before each step is the mean of
    ``infer_latent(context_x, context_y, mask)`` — ``q(z_c | transitions so far)``; actions are
    sampled from the policy (exploration helps identification). All tasks advance as one batch.
    Returns raw ``context_x [T, n, obs+act]`` and ``context_y [T, n, obs]``.
    """
    device = next(policy.parameters()).device
    cx = torch.zeros(len(tasks), n_context, family.obs_dim + family.act_dim, device=device)
    cy = torch.zeros(len(tasks), n_context, family.obs_dim, device=device)
    if n_context == 0:  # zero-shot: the latent stays the prior's
        return cx, cy
    noise = torch.Generator(device=device).manual_seed(seed)
    steps = torch.arange(n_context, device=device)

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict]:
        latent = infer_latent(cx, cy, (steps < t)[None].expand(len(tasks), -1)).mean
        return policy.act(obs.to(device), latent, generator=noise).to(obs.device), {}

    def remember(t: int, trajectory: Trajectory) -> None:  # step t joins the context of the next action
        cx[:, t] = torch.cat([trajectory.obs[t], trajectory.action[t]], dim=-1).to(device)
        cy[:, t] = (trajectory.next_obs[t] - trajectory.obs[t]).to(device)

    env = TaskVectorEnv(family, tasks, seed)
    rollout(env, act, env.reset(), n_context, episodic=False, on_step=remember,
            progress="meta-test context" if progress else None)  # fmt: skip
    env.close()
    return cx, cy


def evaluation_returns(
    family: TaskFamily,
    tasks: list[Task],
    episodes: int,
    seed: int,
    policy: StepPolicy,
    progress: bool = False,
) -> np.ndarray:
    """Returns ``[T, episodes]``: one episode in each of ``T × episodes`` envs stepped as one batch
    (sub-env ``i`` runs task ``i // episodes``); steps after an episode's end add nothing."""
    env = TaskVectorEnv(family, [t for t in tasks for _ in range(episodes)], seed)
    traj = rollout(env, policy, env.reset(), family.episode_length, progress="meta-test episodes" if progress else None)
    env.close()
    return traj.reward.cumsum(0)[-1].numpy().reshape(len(tasks), episodes)  # summed in step order


def summarise(
    method: str, tasks: list[Task], returns: np.ndarray, episode_length: int, latent: torch.Tensor | None = None
) -> list[TaskResult]:
    """One :class:`TaskResult` per task from ``returns [T, episodes]`` (and latents ``[T, Z]``)."""
    latents = latent.cpu().tolist() if latent is not None else [[] for _ in tasks]
    return [
        TaskResult(
            method,
            task.name,
            task.split,
            task.parameters,
            float(r.mean()),
            float(r.std()),
            float(r.mean() / episode_length),
            len(r),
            z,
        )
        for task, r, z in zip(tasks, returns, latents, strict=True)
    ]


@torch.no_grad()
def run_meta_test(
    family: TaskFamily,
    tasks: list[Task],
    method: str,
    policy: Agent,
    episodes: int,
    seed: int,
    infer_latent: LatentInference | None = None,
    n_context: int = 0,
    progress: bool = False,
    adapt: TestTimeAdaptation | None = None,
) -> tuple[list[TaskResult], torch.Tensor]:
    """The protocol for one method, plus a uniform-random policy, on ``tasks``.

    With ``infer_latent`` (GSSM+APS, PE-PPO) the latent is the mean of ``q(z_c | online context)``
    after :func:`collect_online_context`; without (DR-PPO) the policy reads no latent (``Z = 0``).
    The evaluation episodes act with the policy's mean action, or with what ``adapt`` makes of the
    online context (it needs ``infer_latent``). Returns the results and the latents ``[T, Z]``.
    """
    device = next(policy.parameters()).device
    if infer_latent is None:
        if adapt is not None:
            raise ValueError("run_meta_test: adapt needs an online context, so infer_latent too")
        latent = torch.zeros(len(tasks), 0, device=device)
    else:
        cx, cy = collect_online_context(family, tasks, infer_latent, policy, n_context, seed, progress)
        latent = infer_latent(cx, cy, torch.ones(cx.shape[:2], dtype=torch.bool, device=device)).mean  # [T, Z]
    random_act = uniform_random_policy(family.act_dim, seed)
    if adapt is None:
        evaluation_policy = agent_policy(policy, latent.repeat_interleave(episodes, dim=0), deterministic=True)
    else:
        evaluation_policy = adapt(cx, cy, latent, episodes)
    results = []
    for name, act, z in ((method, evaluation_policy, latent), ("random", random_act, None)):
        returns = evaluation_returns(family, tasks, episodes, seed + 1, act, progress)
        results += summarise(name, tasks, returns, family.episode_length, z)
    return results, latent


def uniform_random_policy(act_dim: int, seed: int) -> StepPolicy:
    """Actions uniform in ``[-1, 1]^A`` from a numpy generator seeded with ``seed``: the report's random reference."""
    rng = np.random.default_rng(seed)

    def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict]:
        return torch.as_tensor(rng.uniform(-1, 1, size=(obs.shape[0], act_dim)).astype(np.float32)), {}

    return act


def select_tasks(tasks: list[Task], names: list[str] | None, family: str) -> list[Task]:
    """``tasks``, or those named in ``names`` (a clear error for an unknown name)."""
    if names is None:
        return tasks
    known = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown metatest.tasks {unknown} for {family}; test tasks are {sorted(known)}")
    return [known[n] for n in names]
