"""An evaluation episode as a labelled image strip (TensorBoard's *Images*)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from envs import Task, TaskFamily
from envs.rollout import Agent, TaskVectorEnv, Trajectory, agent_policy, rollout


@torch.no_grad()
def rollout_strip(
    family: TaskFamily, task: Task, policy: Agent, latent: torch.Tensor, frames: int = 6, seed: int = 0,
    width: int = 170, per_row: int = 2,
) -> np.ndarray:  # fmt: skip
    """An image ``[H, W, 3]`` of one evaluation episode of ``task`` (``latent [Z]``): ``frames``
    frames, ``per_row`` a row, each ``width`` pixels wide and captioned with the time, the step's
    reward and the return so far; the task name and split head the image. The defaults make it
    340 pixels wide, so TensorBoard's image card shows it unscaled."""
    env = TaskVectorEnv(family, [task], seed, render_mode="rgb_array")
    keep = set(np.linspace(0, family.episode_length - 1, frames - 1).round().astype(int).tolist())  # + the last
    dt = getattr(env.venv.envs[0].unwrapped, "dt", None)
    obs = env.reset()
    images = [labelled_frame(env.render()[0], 0, dt, 0.0, 0.0, width)] if 0 in keep else []

    def draw(t: int, trajectory: Trajectory) -> None:
        if trajectory.alive[t, 0] == 0:
            return  # the episode ended earlier
        ended = bool(trajectory.terminated[t, 0] or trajectory.truncated[t, 0])
        if t + 1 in keep or ended:
            reward, total = float(trajectory.reward[t, 0]), float(trajectory.reward[: t + 1, 0].cumsum(0)[-1])
            images.append(labelled_frame(env.render()[0], t + 1, dt, reward, total, width))

    rollout(env, agent_policy(policy, latent[None], deterministic=True), obs, family.episode_length, on_step=draw)
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
