"""Real environment steps/s of every task family: single env and a vector env over 16 tasks.

python benchmarks/env_throughput.py [--steps 4000] [--families acrobot cartpole_swingup]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs


def single_env_steps_per_s(fam: envs.TaskFamily, steps: int) -> float:
    env = fam.make_env(fam.train_tasks(1, seed=0)[0], seed=0)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, fam.act_dim)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_env_steps_per_s(fam: envs.TaskFamily, steps: int, num_tasks: int = 16) -> float:
    venv = fam.make_vector_env(fam.train_tasks(num_tasks, seed=0), seed=0)
    venv.reset(seed=0)
    calls = max(steps // num_tasks, 1)
    actions = np.random.default_rng(0).uniform(-1, 1, (calls, num_tasks, fam.act_dim)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    return calls * num_tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--families", nargs="+", default=sorted(envs.FAMILIES))
    args = parser.parse_args()
    print(
        f"# env steps/s on {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cpus), "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| family | single env | vector env, 16 tasks |")
    print("|---|---:|---:|")
    for name in args.families:
        fam = envs.make_family(name)
        single = single_env_steps_per_s(fam, args.steps)
        vector = vector_env_steps_per_s(fam, args.steps)
        print(f"| {name} | {single:,.0f} | {vector:,.0f} |")


if __name__ == "__main__":
    main()
