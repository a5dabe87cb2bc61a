"""MuJoCo families: gymnasium API, exact batched reward, scales from saved originals, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs

MUJOCO = ["half_cheetah", "slim_humanoid"]
pytestmark = pytest.mark.filterwarnings("ignore:.*Box observation space .*infinity:UserWarning")


@pytest.mark.parametrize("name", MUJOCO)
def test_check_env_passes_at_several_tasks(name):
    fam = envs.make_family(name)
    for task in fam.train_tasks(2, seed=0) + fam.test_tasks()[::7]:
        env = fam.make_env(task, seed=0)
        check_env(env.unwrapped, skip_render_check=True)  # rendering needs an OpenGL context
        assert env.unwrapped.get_params() == task.parameters
        assert env.observation_space.shape == (fam.obs_dim,) and env.action_space.shape == (fam.act_dim,)


@pytest.mark.parametrize("name", MUJOCO)
def test_batched_reward_equals_env_step_over_many_tasks(name):
    fam = envs.make_family(name)
    tasks = fam.train_tasks(6, seed=1) + fam.test_tasks()[::3]
    venv = fam.make_vector_env(tasks, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = venv.reset(seed=0)
    rows = []
    for _ in range(120):
        act = rng.uniform(-1, 1, size=(len(tasks), fam.act_dim)).astype(np.float32)
        nxt, rew, term, _, _ = venv.step(act)
        rows.append((obs, act, nxt, rew, term))
        obs = nxt
    o, a, n, r, d = (torch.as_tensor(np.concatenate([row[i] for row in rows]), dtype=torch.float32) for i in range(5))
    assert len(r) >= 1000
    params = fam.params_tensor(tasks).repeat(len(rows), 1)
    torch.testing.assert_close(fam.reward(o, a, n, params), r, rtol=1e-4, atol=1e-3)
    assert not fam.terminated(n, params).any() and not d.bool().any()


def _trajectory(env, steps=40):
    obs, _ = env.reset(seed=0)
    out = [obs]
    for k in range(steps):
        out.append(env.step(np.full(env.action_space.shape, np.sin(0.3 * k), dtype=np.float32))[0])
    return np.stack(out)


@pytest.mark.parametrize("name", MUJOCO)
@pytest.mark.parametrize("param", ["mass_scale", "damping_scale"])
def test_changing_a_scale_changes_trajectory_and_restoring_is_exact(name, param):
    env = envs.make_family(name).make_env(envs.make_family(name).train_tasks(1, seed=0)[0]).unwrapped
    env.set_params(mass_scale=1.0, damping_scale=1.0)
    base = _trajectory(env)
    for _ in range(3):  # repeated changes must not accumulate
        env.set_params(**{param: 1.7})
        assert not np.allclose(_trajectory(env), base)
        env.set_params(**{param: 1.0})
        assert np.array_equal(_trajectory(env), base)


@pytest.mark.parametrize("name", MUJOCO)
@pytest.mark.parametrize("bad", [0.0, -0.5, float("inf")])
def test_non_positive_scale_is_a_clear_error(name, bad):
    fam = envs.make_family(name)
    with pytest.raises(ValueError, match=r"mass_scale=.* must be a finite number > 0"):
        fam.env_class(mass_scale=bad)
    with pytest.raises(ValueError, match=r"damping_scale=.* must be a finite number > 0"):
        fam.make_task("x", "extrapolation", damping_scale=bad)


EXTRAPOLATION_SETS = {
    "half_cheetah": [(0.2, 0.3), (0.4, 0.5), (1.5, 1.6), (1.7, 1.8)],
    "slim_humanoid": [(0.4, 0.5), (0.6, 0.7), (1.5, 1.6), (1.7, 1.8)],
}


def _pairs(scales):
    return {(m, d) for m in scales for d in scales}


def _scales(tasks):
    return {(t.parameters["mass_scale"], t.parameters["damping_scale"]) for t in tasks}


@pytest.mark.parametrize("name", MUJOCO)
def test_task_grids_are_the_papers_protocol(name):
    fam = envs.make_family(name)
    train, test = fam.train_tasks(25, seed=0), fam.test_tasks()
    interp = [t for t in test if t.split == "interpolation"]
    extrap = [t for t in test if t.split == "extrapolation"]
    assert len(train) == 25 and _scales(train) == _pairs((0.8, 0.9, 1.0, 1.1, 1.2))
    assert len(interp) == 16 and _scales(interp) == _pairs((0.85, 0.95, 1.05, 1.15))
    assert len(extrap) == 16 and _scales(extrap) == set().union(*map(_pairs, EXTRAPOLATION_SETS[name]))
    assert fam.train_tasks(5, seed=3) == fam.train_tasks(5, seed=3) != fam.train_tasks(5, seed=4)
    assert len({t.params for t in fam.train_tasks(7, seed=1)}) == 7
    assert not {t.params for t in train} & {t.params for t in test}
    assert fam.train_ranges == {"mass_scale": (0.8, 1.2), "damping_scale": (0.8, 1.2)}
    for t in test:  # interpolation strictly inside the train box, extrapolation with both scales outside it
        inside = [0.8 < v < 1.2 for v in t.parameters.values()]
        assert all(inside) if t.split == "interpolation" else not any(inside), t
    with pytest.raises(ValueError, match=r"must be in \[1, 25\]"):
        fam.train_tasks(26, seed=0)


def test_mujoco_warnings_do_not_reach_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fam = envs.make_family("slim_humanoid")  # its model file triggers a MuJoCo deprecation warning
    fam.make_env(fam.test_tasks()[0], seed=0).close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize("name", MUJOCO)
def test_action_of_wrong_shape_is_a_clear_error(name):
    fam = envs.make_family(name)
    env = fam.make_env(fam.test_tasks()[0], seed=0)
    with pytest.raises(ValueError, match=rf"expected shape \({fam.act_dim},\)"):
        env.step(np.zeros(fam.act_dim + 1))
