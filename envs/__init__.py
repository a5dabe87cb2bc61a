"""Task families of MDPs that differ in physics, and their registered gymnasium ids.

Example:
    >>> import envs
    >>> fam = envs.make_family("cartpole_swingup")
    >>> [t.split for t in fam.test_tasks()][:1]
    ['interpolation']
"""

from __future__ import annotations

import gymnasium as gym

from envs.acrobot import AcrobotEnv, AcrobotFamily
from envs.cartpole_swingup import CartPoleSwingUpEnv, CartPoleSwingUpFamily
from envs.family import NUM_TRAIN_TASKS, TASK_DESIGN, TASK_SEED, TaskFamily
from envs.half_cheetah import HalfCheetahFamily, HalfCheetahTaskEnv
from envs.slim_humanoid import SlimHumanoidFamily, SlimHumanoidTaskEnv
from envs.task import Task

FAMILIES: dict[str, type[TaskFamily]] = {
    family.name: family for family in (AcrobotFamily, CartPoleSwingUpFamily, HalfCheetahFamily, SlimHumanoidFamily)
}

for _family in FAMILIES.values():
    if _family.env_id not in gym.registry:
        gym.register(_family.env_id, entry_point=_family.env_class, max_episode_steps=_family.episode_length)


def make_family(name: str) -> TaskFamily:
    """The task family registered as ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[name]()


__all__ = [
    "FAMILIES",
    "NUM_TRAIN_TASKS",
    "TASK_DESIGN",
    "TASK_SEED",
    "AcrobotEnv",
    "AcrobotFamily",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpFamily",
    "HalfCheetahFamily",
    "HalfCheetahTaskEnv",
    "SlimHumanoidFamily",
    "SlimHumanoidTaskEnv",
    "Task",
    "TaskFamily",
    "make_family",
]
