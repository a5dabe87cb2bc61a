"""Task families: gymnasium API, exact batched reward/termination, physics, bad input."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.acrobot import AcrobotEnv as GymAcrobot
from gymnasium.envs.classic_control.cartpole import CartPoleEnv as GymCartPole
from gymnasium.utils.env_checker import check_env

import envs
from envs import AcrobotEnv, CartPoleSwingUpEnv
from envs.cartpole_swingup import SUBSTEPS

FAMILY_NAMES = ["acrobot", "cartpole_swingup"]  # the MuJoCo families: test_mujoco_envs.py


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_check_env_passes_at_several_tasks(name):
    fam = envs.make_family(name)
    for task in fam.train_tasks(3, seed=0) + fam.test_tasks():
        env = fam.make_env(task, seed=0)
        check_env(env.unwrapped, skip_render_check=False)
        assert env.unwrapped.get_params() == task.parameters


def _random_transitions(fam, tasks, steps, seed):
    """Roll a vector env with random actions biased per task (so cart-poles leave the track)."""
    venv = fam.make_vector_env(tasks, seed=seed)
    rng = np.random.default_rng(seed)
    bias = rng.uniform(-0.8, 0.8, size=(len(tasks), fam.act_dim))
    obs, _ = venv.reset(seed=seed)
    rows = []
    for _ in range(steps):
        act = np.clip(bias + rng.uniform(-1, 1, size=bias.shape), -1, 1).astype(np.float32)
        next_obs, rew, term, trunc, info = venv.step(act)
        real_next = next_obs.copy()
        done = term | trunc
        if done.any():
            real_next[done] = np.stack(info["final_obs"][done])
        rows.append((obs, act, real_next, rew, term))
        obs = next_obs
    return [np.concatenate([r[i] for r in rows]) for i in range(5)], len(tasks)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_batched_reward_and_termination_equal_env_step(name):
    fam = envs.make_family(name)
    tasks = fam.train_tasks(12, seed=1) + fam.test_tasks()
    (obs, act, nxt, rew, term), n = _random_transitions(fam, tasks, steps=250, seed=2)
    assert len(rew) >= 4000
    params = fam.params_tensor(tasks).repeat(len(rew) // n, 1)
    t = torch.as_tensor
    r = fam.reward(t(obs), t(act), t(nxt), params)
    d = fam.terminated(t(nxt), params)
    assert r.shape == d.shape == (len(rew),)
    np.testing.assert_allclose(r.numpy(), rew, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(d.numpy(), term)
    if name == "cartpole_swingup":
        assert term.any(), "the transitions should include cart-poles leaving the track"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_the_batched_simulator_equals_env_step(name):
    """The exact-model planners' copy of the equations (DESIGN §9) steps as the env does, on training and
    test tasks, through cart-poles leaving the track; beyond ±1 an action is clipped as the env clips it."""
    fam = envs.make_family(name)
    tasks = fam.train_tasks(12, seed=1) + fam.test_tasks()
    (obs, act, nxt, rew, _), n = _random_transitions(fam, tasks, steps=250, seed=3)
    params = fam.params_tensor(tasks).repeat(len(rew) // n, 1)
    predicted = fam.simulate(torch.as_tensor(obs), torch.as_tensor(act), params)
    assert predicted.dtype == torch.float32 and predicted.shape == nxt.shape
    np.testing.assert_allclose(predicted.numpy(), nxt, rtol=1e-6, atol=1e-6)  # float32 observations
    wide = fam.simulate(torch.as_tensor(obs[:50]), 3 * torch.as_tensor(act[:50]).sign(), params[:50])
    clipped = fam.simulate(torch.as_tensor(obs[:50]), torch.as_tensor(act[:50]).sign(), params[:50])
    torch.testing.assert_close(wide, clipped, rtol=0, atol=0)


def test_cartpole_default_step_matches_gymnasium():
    rng = np.random.default_rng(0)
    ours, ref = CartPoleSwingUpEnv(), GymCartPole()
    ours.reset(seed=0)
    ref.reset(seed=0)
    for _ in range(50):
        state = rng.uniform([-1, -1, -0.15, -1], [1, 1, 0.15, 1])
        for action, gym_action in ((1.0, 1), (-1.0, 0)):
            ours.state = state.copy()
            ref.state = state.copy()
            ref.steps_beyond_terminated = None
            obs, *_ = ours.step(np.array([action], dtype=np.float32))
            for _ in range(SUBSTEPS):
                ref.step(gym_action)
            x, x_dot, theta, theta_dot = ref.state
            expected = [x, x_dot, math.cos(theta), math.sin(theta), theta_dot]
            np.testing.assert_allclose(obs, expected, rtol=1e-6, atol=1e-6)


def test_acrobot_default_step_matches_gymnasium():
    rng = np.random.default_rng(0)
    ours, ref = AcrobotEnv(), GymAcrobot()
    ours.reset(seed=0)
    ref.reset(seed=0)
    for _ in range(50):
        state = rng.uniform([-math.pi, -math.pi, -5, -10], [math.pi, math.pi, 5, 10])
        for torque, index in ((-1.0, 0), (0.0, 1), (1.0, 2)):
            ours.state = state.copy()
            ref.state = state.copy()
            obs, *_ = ours.step(np.array([torque], dtype=np.float32))
            ref_obs, *_ = ref.step(index)
            np.testing.assert_allclose(obs, ref_obs, rtol=1e-6, atol=1e-6)


def _trajectory(env, steps=60):
    obs, _ = env.reset(seed=0)
    out = [obs]
    for k in range(steps):
        out.append(env.step(np.array([math.sin(0.3 * k)], dtype=np.float32))[0])
    return np.stack(out)


@pytest.mark.parametrize(
    "env_cls,param,other",
    [
        (CartPoleSwingUpEnv, "pole_half_length", 0.73),
        (CartPoleSwingUpEnv, "pole_mass", 0.31),
        (CartPoleSwingUpEnv, "cart_mass", 1.37),
        (AcrobotEnv, "link1_mass", 1.31),
        (AcrobotEnv, "link2_mass", 0.61),
        (AcrobotEnv, "link1_length", 1.19),
    ],
)
def test_changing_a_parameter_changes_trajectory_and_restoring_is_exact(env_cls, param, other):
    env = env_cls()
    base = _trajectory(env)
    for _ in range(3):  # repeated changes must not accumulate (set from the saved defaults)
        env.set_params(**{param: other})
        changed = _trajectory(env)
        assert not np.allclose(changed, base)
        env.set_params(**{param: env_cls.defaults[param]})
        assert np.array_equal(_trajectory(env), base)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CartPoleSwingUpEnv(pole_mass=-0.1),
        lambda: CartPoleSwingUpEnv(cart_mass=0.0),
        lambda: CartPoleSwingUpEnv(pole_half_length=0),
        lambda: AcrobotEnv(link1_length=-1.0),
        lambda: AcrobotEnv(link2_mass=0.0),
        lambda: AcrobotEnv(link1_mass=float("nan")),
        lambda: gym.make("mbmrl/Acrobot-v0", link1_mass=-2.0),
        lambda: envs.make_family("cartpole_swingup").make_task("x", "interpolation", pole_mass=0),
    ],
)
def test_non_positive_physics_parameter_is_a_clear_error(make):
    with pytest.raises(ValueError, match=r"must be a finite number > 0"):
        make()


def test_unknown_parameter_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown physics parameter.*pole_lenght.*expected names"):
        CartPoleSwingUpEnv(pole_lenght=0.5)
    with pytest.raises(ValueError, match=r"unknown physics parameter.*link3_mass"):
        envs.make_family("acrobot").make_task("x", "extrapolation", link3_mass=1.0)


@pytest.mark.parametrize("env_cls", [CartPoleSwingUpEnv, AcrobotEnv])
@pytest.mark.parametrize("action", [np.zeros(2), np.zeros((1, 1)), 0.5])
def test_action_of_wrong_shape_is_a_clear_error(env_cls, action):
    env = env_cls()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(1,\)"):
        env.step(action)


def test_unknown_family_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown task family 'acrobat'.*acrobot.*cartpole_swingup"):
        envs.make_family("acrobat")


@pytest.mark.parametrize("name", ["acrobot", "cartpole_swingup"])
def test_the_sobol_task_design_puts_two_of_16_training_tasks_in_every_octant_of_the_box(name):
    fam = envs.make_family(name)
    tasks = fam.train_tasks(16, seed=0, design="sobol")
    assert tasks == fam.train_tasks(16, seed=0, design="sobol") != fam.train_tasks(16, seed=1, design="sobol")
    centre = torch.tensor([sum(fam.train_ranges[k]) / 2 for k in fam.param_names])
    octants = ((fam.params_tensor(tasks) > centre).long() * torch.tensor([1, 2, 4])).sum(1)
    assert torch.bincount(octants, minlength=8).tolist() == [2] * 8
    iid = fam.params_tensor(fam.train_tasks(16, seed=0, design="uniform"))
    uniform = ((iid > centre).long() * torch.tensor([1, 2, 4])).sum(1)
    assert torch.bincount(uniform, minlength=8).min() == 0  # the i.i.d. draw leaves an octant empty
    with pytest.raises(ValueError, match="task design 'grid'; expected 'uniform' or 'sobol'"):
        fam.train_tasks(16, seed=0, design="grid")


def test_the_sobol_design_on_a_grid_spreads_a_subset_and_takes_the_whole_grid_when_asked_for_it():
    fam = envs.make_family("half_cheetah")
    assert fam.train_tasks(25, seed=0) == fam.train_tasks(25, seed=0, design="uniform")  # the paper's 5 × 5 grid
    corners = fam.params_tensor(fam.train_tasks(8, seed=1)) > 1.0  # [8, 2]: above the centre scale
    quadrants = (corners.long() * torch.tensor([1, 2])).sum(1)
    assert torch.bincount(quadrants, minlength=4).min() >= 1  # every quadrant of the grid has a task


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_task_lists_are_reproducible_disjoint_and_split_correctly(name):
    fam = envs.make_family(name)
    assert fam.train_tasks(10, seed=3) == fam.train_tasks(10, seed=3)
    assert fam.train_tasks(10, seed=3) != fam.train_tasks(10, seed=4)
    assert fam.test_tasks() == fam.test_tasks()
    train, test = fam.train_tasks(50, seed=3), fam.test_tasks()
    assert not {t.params for t in train} & {t.params for t in test}
    assert len({t.name for t in train + test}) == len(train + test)
    splits = {t.split for t in test}
    assert splits == {"interpolation", "extrapolation"}
    for task in train + test:
        inside = [lo <= v <= hi for k, v in task.parameters.items() for lo, hi in [fam.train_ranges[k]]]
        if task.split == "extrapolation":
            assert not any(inside), task
        else:
            assert all(inside), task


def test_task_is_immutable_and_params_tensor_is_ordered():
    fam = envs.make_family("acrobot")
    task = fam.test_tasks()[-1]
    with pytest.raises(AttributeError):
        task.name = "other"
    task.parameters["link1_mass"] = 99.0
    assert task.parameters["link1_mass"] == 1.45
    p = fam.params_tensor([task])
    assert p.shape == (1, 3)
    assert p[0, fam.param_names.index("link2_mass")] == pytest.approx(0.6)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_registered_id_takes_parameters_and_truncates_at_episode_length(name):
    fam = envs.make_family(name)
    task = fam.test_tasks()[1]
    env = gym.make(fam.env_id, **task.parameters)
    assert env.unwrapped.get_params() == task.parameters
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(np.zeros(fam.act_dim, dtype=np.float32))
        steps += 1
        done = term or trunc
    assert trunc and not term and steps == fam.episode_length  # zero torque/force from rest ends nothing early


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_vector_env_runs_one_task_per_sub_env(name):
    fam = envs.make_family(name)
    tasks = fam.test_tasks()
    venv = fam.make_vector_env(tasks, seed=0)
    assert venv.num_envs == len(tasks)
    assert list(venv.call("get_params")) == [t.parameters for t in tasks]


@pytest.mark.parametrize("env_cls", [CartPoleSwingUpEnv, AcrobotEnv])
def test_rgb_render_draws_something(env_cls):
    env = env_cls(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert (frame < 255).any()
