"""An evaluation episode as a labelled image strip (TensorBoard's *Images*)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from envs import Task, TaskFamily
from evaluation.protocol import Agent


@torch.no_grad()
def rollout_strip(
    family: TaskFamily, task: Task, policy: Agent, latent: torch.Tensor, frames: int = 6, seed: int = 0,
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
