"""The meta-test protocol (DESIGN §6): online context, then evaluation episodes, no gradient step."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.distributions import Normal
from tqdm.auto import tqdm

from callbacks.tensorboard_writing import epoch_log_step, tensorboard_logger
from datamodules.collection import true_next_obs
from envs import Task, TaskFamily
from modules.actor_critic import ActorCritic


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


@torch.no_grad()
def collect_online_context(
    family: TaskFamily,
    tasks: list[Task],
    infer_latent: LatentInference,
    policy: ActorCritic,
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
    venv = family.make_vector_env(tasks, seed=seed)
    obs_np, _ = venv.reset(seed=seed)
    t, o, a = len(tasks), family.obs_dim, family.act_dim
    noise = torch.Generator(device=device).manual_seed(seed)
    cx = torch.zeros(t, n_context, o + a, device=device)
    cy = torch.zeros(t, n_context, o, device=device)
    for step in tqdm(range(n_context), desc="meta-test context", leave=False, disable=not progress):
        mask = (torch.arange(n_context, device=device) < step)[None].expand(t, -1)
        latent = infer_latent(cx, cy, mask).mean
        obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        action = policy.act(obs, latent, generator=noise)
        next_np, _, term, trunc, info = venv.step(action.cpu().numpy())
        real_next = true_next_obs(next_np, term | trunc, info)
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
    policy: ActorCritic,
    episodes: int,
    seed: int,
    infer_latent: LatentInference | None = None,
    n_context: int = 0,
    progress: bool = False,
) -> tuple[list[TaskResult], torch.Tensor]:
    """The protocol for one method, plus a uniform-random policy, on ``tasks``.

    With ``infer_latent`` (GSSM+APS, PE-PPO) the latent is the mean of ``q(z_c | online context)``
    after :func:`collect_online_context`; without (DR-PPO) the policy reads no latent (``Z = 0``).
    The policy acts with its mean action. Returns the results and the latents ``[T, Z]``.
    """
    device = next(policy.parameters()).device
    if infer_latent is None:
        latent = torch.zeros(len(tasks), 0, device=device)
    else:
        cx, cy = collect_online_context(family, tasks, infer_latent, policy, n_context, seed, progress)
        latent = infer_latent(cx, cy, torch.ones(cx.shape[:2], dtype=torch.bool, device=device)).mean  # [T, Z]
    per_env_latent = latent.repeat_interleave(episodes, dim=0)

    def policy_act(obs: torch.Tensor) -> np.ndarray:
        return policy.act(obs.to(device), per_env_latent, deterministic=True).cpu().numpy()

    rng = np.random.default_rng(seed)

    def random_act(obs: torch.Tensor) -> np.ndarray:
        return rng.uniform(-1, 1, size=(obs.shape[0], family.act_dim)).astype(np.float32)

    results = []
    for name, act, z in ((method, policy_act, latent), ("random", random_act, None)):
        returns = evaluation_returns(family, tasks, episodes, seed + 1, act, progress)
        results += summarise(name, tasks, returns, family.episode_length, z)
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


def publish_meta_test(
    trainer: pl.Trainer, results: list[TaskResult], tasks: list[Task], method: str, header: str,
    real_transitions: int,
) -> dict[str, float]:  # fmt: skip
    """Gather every rank's ``results`` (rank ``r`` ran ``tasks[r::W]``) on rank 0, which writes
    ``metatest.json``/``.md`` into the log directory, appends the split means to
    ``metatest_history.jsonl`` (one line per evaluation: the learning curve against
    ``real_transitions``) and the table as TensorBoard text. Call on every rank (the log directory is
    a broadcast); returns the ``metatest/...`` scalars of ``method`` on rank 0 (the caller logs
    them), an empty dict elsewhere."""
    log_dir = trainer.log_dir or trainer.default_root_dir
    if trainer.world_size > 1:
        gathered: list[list] = [[] for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    if not trainer.is_global_zero:
        return {}
    position = {t.name: i for i, t in enumerate(tasks)}
    results = sorted(results, key=lambda r: (r.method != method, position[r.task]))
    markdown = write_reports(results, log_dir, header)
    summaries = split_means(results)
    with open(Path(log_dir) / "metatest_history.jsonl", "a") as history:
        history.write(json.dumps({"real_transitions": real_transitions, "summary": summaries}) + "\n")
    summary = summaries[method]
    ours = [r for r in results if r.method == method]
    random = summaries.get("random", {})
    scalars = {
        "metatest/return_mean": float(np.mean([r.return_mean for r in ours])),
        "metatest/return_std": float(np.mean([r.return_std for r in ours])),
        **{f"metatest/{s}/reward_per_step": v for s, v in summary.items() if s != "all" and v is not None},
        **{f"metatest/{s}/random_reward_per_step": v for s, v in random.items() if s != "all" and v is not None},
        **{f"metatest/task/{r.task}": r.return_mean for r in ours},
    }
    tb = tensorboard_logger(trainer)
    if tb is not None:
        tb.experiment.add_text("metatest/table", markdown, epoch_log_step(trainer))
    return scalars


def select_tasks(tasks: list[Task], names: list[str] | None, family: str) -> list[Task]:
    """``tasks``, or those named in ``names`` (a clear error for an unknown name)."""
    if names is None:
        return tasks
    known = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown metatest_tasks {unknown} for {family}; test tasks are {sorted(known)}")
    return [known[n] for n in names]


@torch.no_grad()
def rollout_strip(
    family: TaskFamily, task: Task, policy: ActorCritic, latent: torch.Tensor, frames: int = 6, seed: int = 0,
    width: int = 170, per_row: int = 2,
) -> np.ndarray:  # fmt: skip
    """An image ``[H, W, 3]`` of one evaluation episode of ``task`` (``latent [Z]``): ``frames``
    frames, ``per_row`` a row, each ``width`` pixels wide and captioned with the time, the step's
    reward and the return so far; the task name and split head the image. The defaults make it
    340 pixels wide, so TensorBoard's image card shows it unscaled."""
    env = gym.make(family.env_id, render_mode="rgb_array", **task.parameters)
    obs, _ = env.reset(seed=seed)
    keep = set(np.linspace(0, family.episode_length - 1, frames - 1).round().astype(int).tolist())  # + the last
    dt = getattr(env.unwrapped, "dt", None)
    images, total, reward = [], 0.0, 0.0
    for step in range(family.episode_length):
        if step in keep:
            images.append(labelled_frame(env.render(), step, dt, reward, total, width))
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=latent.device)[None]
        action = policy.act(obs_t, latent[None], deterministic=True)[0].cpu().numpy()
        obs, reward, term, trunc, _ = env.step(action)
        total += float(reward)
        if term or trunc:
            images.append(labelled_frame(env.render(), step + 1, dt, float(reward), total, width))
            break
    env.close()
    images += [np.full_like(images[0], 255)] * (-len(images) % per_row)
    rows = [np.concatenate(images[i : i + per_row], axis=1) for i in range(0, len(images), per_row)]
    grid = np.concatenate(rows, axis=0)
    title = Image.new("RGB", (grid.shape[1], 24), "white")
    ImageDraw.Draw(title).text((4, 4), f"{task.name} ({task.split})", fill="black", font=caption_font(14))
    return np.concatenate([np.asarray(title), grid], axis=0)


def labelled_frame(
    frame: np.ndarray, step: int, dt: float | None, reward: float, total: float, width: int
) -> np.ndarray:
    """``frame`` scaled to ``width`` pixels with a caption: time (or step), reward, return so far."""
    image = Image.fromarray(frame).convert("RGB")
    image = image.resize((width, max(1, round(image.height * width / image.width))))
    when = f"t = {step * dt:.1f} s" if dt else f"step {step}"
    caption = Image.new("RGB", (width, 34), "white")
    ImageDraw.Draw(caption).multiline_text((4, 2), f"{when}\nr {reward:+.2f}  return {total:+.1f}", fill="black",
                                           font=caption_font(13), spacing=2)  # fmt: skip
    return np.concatenate([np.asarray(image), np.asarray(caption)], axis=0)


def caption_font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``size`` pixels (no system font needed)."""
    return ImageFont.load_default(size=size)
