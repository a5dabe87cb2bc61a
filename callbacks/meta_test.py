"""The meta-test protocol (DESIGN §6): online context, then evaluation episodes, no gradient step."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from envs import Task, TaskFamily
from modules.actor_critic import ActorCritic
from modules.meta_dynamics_model import MetaDynamicsModel


@dataclass
class TaskResult:
    """One method on one test task. ``reward_per_step`` is the return divided by the full episode
    length, so steps lost to an early termination count as zero reward."""

    method: str
    task: str
    split: str
    params: dict[str, float]
    return_mean: float
    return_std: float
    reward_per_step: float
    episodes: int


@torch.no_grad()
def collect_online_context(
    family: TaskFamily,
    tasks: list[Task],
    model: MetaDynamicsModel,
    policy: ActorCritic,
    n_context: int,
    seed: int,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Act in every test task for ``n_context`` steps, re-inferring ``z_c`` as the context grows.

    The latent starts at the model's prior (empty context) and before each step is the mean of
    ``q(z_c | transitions so far)``; actions are sampled from the policy (exploration helps
    identification). All tasks advance as one batch. Returns raw ``context_x [T, n, obs+act]``
    and ``context_y [T, n, obs]``.
    """
    device = model.device
    venv = family.make_vector_env(tasks, seed=seed)
    obs_np, _ = venv.reset(seed=seed)
    t, o, a = len(tasks), family.obs_dim, family.act_dim
    noise = torch.Generator(device=device).manual_seed(seed)
    cx = torch.zeros(t, n_context, o + a, device=device)
    cy = torch.zeros(t, n_context, o, device=device)
    for step in tqdm(range(n_context), desc="meta-test context", leave=False, disable=not progress):
        mask = (torch.arange(n_context, device=device) < step)[None].expand(t, -1)
        latent = model.infer_context(cx, cy, mask).q_zc.mean
        obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        action = policy.act(obs, latent, generator=noise)
        next_np, _, term, trunc, info = venv.step(action.cpu().numpy())
        real_next = next_np.copy()
        ended = term | trunc
        if ended.any():
            real_next[ended] = np.stack(info["final_obs"][ended])
        cx[:, step] = torch.cat([obs, action], dim=-1)
        cy[:, step] = torch.as_tensor(real_next, dtype=torch.float32, device=device) - obs
        obs_np = next_np
    venv.close()
    return cx, cy


def evaluation_returns(
    family: TaskFamily,
    tasks: list[Task],
    episodes: int,
    seed: int,
    act_fn,
    progress: bool = False,
) -> np.ndarray:
    """Returns ``[T, episodes]``: one episode in each of ``T × episodes`` envs stepped as one batch.

    ``act_fn(obs [T·episodes, O]) → actions [T·episodes, A]`` (sub-env ``i`` runs task ``i // episodes``).
    """
    venv = family.make_vector_env([t for t in tasks for _ in range(episodes)], seed=seed)
    obs, _ = venv.reset(seed=seed)
    n = venv.num_envs
    returns, running = np.zeros(n), np.ones(n, dtype=bool)
    for _ in tqdm(range(family.episode_length), desc="meta-test episodes", leave=False, disable=not progress):
        obs, reward, term, trunc, _ = venv.step(act_fn(torch.as_tensor(obs, dtype=torch.float32)))
        returns += reward * running
        running &= ~(term | trunc)
        if not running.any():
            break
    venv.close()
    return returns.reshape(len(tasks), episodes)


def summarise(method: str, tasks: list[Task], returns: np.ndarray, episode_length: int) -> list[TaskResult]:
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
        )
        for task, r in zip(tasks, returns, strict=True)
    ]


@torch.no_grad()
def run_meta_test(
    family: TaskFamily,
    tasks: list[Task],
    model: MetaDynamicsModel,
    policy: ActorCritic,
    n_context: int,
    episodes: int,
    seed: int,
    progress: bool = False,
) -> tuple[list[TaskResult], torch.Tensor]:
    """GSSM+APS and a uniform-random policy on ``tasks``; returns the results and the inferred
    latents ``[T, Z]`` (mean of ``q(z_c | online context)``). The policy acts with its mean action."""
    device = model.device
    cx, cy = collect_online_context(family, tasks, model, policy, n_context, seed, progress)
    latent = model.infer_context(cx, cy).q_zc.mean  # [T, Z]
    per_env_latent = latent.repeat_interleave(episodes, dim=0)

    def policy_act(obs: torch.Tensor) -> np.ndarray:
        return policy.act(obs.to(device), per_env_latent, deterministic=True).cpu().numpy()

    rng = np.random.default_rng(seed)

    def random_act(obs: torch.Tensor) -> np.ndarray:
        return rng.uniform(-1, 1, size=(obs.shape[0], family.act_dim)).astype(np.float32)

    results = []
    for method, act in (("gssm_aps", policy_act), ("random", random_act)):
        returns = evaluation_returns(family, tasks, episodes, seed + 1, act, progress)
        results += summarise(method, tasks, returns, family.episode_length)
    return results, latent


def split_means(results: list[TaskResult]) -> dict[str, dict[str, float | None]]:
    """``{method: {"interpolation": r, "extrapolation": r, "all": r}}`` mean per-step reward
    (None for a split without tasks)."""
    out: dict[str, dict[str, float | None]] = {}
    for method in dict.fromkeys(r.method for r in results):
        rows = [r for r in results if r.method == method]
        out[method] = {}
        for split in ("interpolation", "extrapolation", "all"):
            values = [r.reward_per_step for r in rows if split in ("all", r.split)]
            out[method][split] = float(np.mean(values)) if values else None
    return out


def write_reports(results: list[TaskResult], directory: str | Path, header: str) -> str:
    """Write ``metatest.json`` and ``metatest.md`` into ``directory``; return the markdown."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = split_means(results)
    (directory / "metatest.json").write_text(
        json.dumps({"header": header, "summary": summary, "tasks": [asdict(r) for r in results]}, indent=2)
    )
    lines = [
        f"# Meta-test — {header}",
        "",
        "| method | task | split | parameters | return (mean ± std) | per-step reward |",
    ]
    lines.append("|---|---|---|---|---:|---:|")
    for r in results:
        params = ", ".join(f"{k}={v:g}" for k, v in r.params.items())
        lines.append(
            f"| {r.method} | {r.task} | {r.split} | {params} | {r.return_mean:.2f} ± {r.return_std:.2f} | "
            f"{r.reward_per_step:.3f} |"
        )
    lines += ["", "| method | interpolation | extrapolation | all |", "|---|---:|---:|---:|"]
    for method, s in summary.items():
        cells = " | ".join("n/a" if s[k] is None else f"{s[k]:.3f}" for k in ("interpolation", "extrapolation", "all"))
        lines.append(f"| {method} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    (directory / "metatest.md").write_text(markdown)
    return markdown


@torch.no_grad()
def rollout_strip(
    family: TaskFamily, task: Task, policy: ActorCritic, latent: torch.Tensor, frames: int = 8, seed: int = 0
) -> np.ndarray:
    """An image strip ``[H, frames·W, 3]`` of one evaluation episode of ``task`` (``latent [Z]``)."""
    env = gym.make(family.env_id, render_mode="rgb_array", **task.parameters)
    obs, _ = env.reset(seed=seed)
    keep = set(np.linspace(0, family.episode_length - 1, frames).round().astype(int).tolist())
    images = []
    for step in range(family.episode_length):
        if step in keep:
            images.append(env.render())
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=latent.device)[None]
        action = policy.act(obs_t, latent[None], deterministic=True)[0].cpu().numpy()
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            images.append(env.render())
            break
    env.close()
    return np.concatenate(images, axis=1)
