"""L2A (GrBAL): the MAML inner step must make the dynamics MLP fit a task it has only seen a few
transitions of, and the online-adapting planner must act on what it adapted to."""

from __future__ import annotations

import pytest
import torch
from test_test_time_methods import ReachZeroToyFamily

import envs
from envs.rollout import Trajectory
from modules.methods.l2a.agent import L2AAgent, last_transitions
from modules.methods.l2a.learner import L2A
from modules.models.adaptive_dynamics import AdaptiveDynamics
from modules.policies.mppi import MPPI, MPPISettings


def linear_windows(tasks: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``Δs = w·a`` with ``w`` uniform in [−2, 2] per task: ``x [T, n, 2]``, ``y [T, n, 1]``."""
    w = torch.rand(tasks, 1, 1, generator=g) * 4 - 2
    s, a = torch.randn(tasks, n, 1, generator=g), torch.rand(tasks, n, 1, generator=g) * 2 - 1
    return torch.cat([s, a], -1), w * a


@pytest.fixture(scope="module")
def meta_trained() -> AdaptiveDynamics:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = AdaptiveDynamics(obs_dim=1, act_dim=1, hidden_dim=32, inner_lr=0.1, inner_steps=1)
    x, y = linear_windows(256, 40, g)
    model.x_normalizer.fit(x.reshape(-1, 2))
    model.y_normalizer.fit(y.reshape(-1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        x, y = linear_windows(32, 32, g)
        loss, _ = model.meta_loss(x[:, :16], y[:, :16], x[:, 16:], y[:, 16:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_the_maml_inner_step_lowers_the_loss_on_a_new_tasks_next_transitions(meta_trained):
    x, y = linear_windows(64, 32, torch.Generator().manual_seed(1))  # tasks never trained on
    adapted, unadapted = meta_trained.meta_loss(x[:, :16], y[:, :16], x[:, 16:], y[:, 16:])
    assert adapted < 0.3 * unadapted, (float(adapted), float(unadapted))
    none = meta_trained.adapt(x[:, :16], y[:, :16], torch.zeros(64, 16, dtype=torch.bool))  # nothing seen: θ
    for name, theta in meta_trained.weights().items():
        torch.testing.assert_close(none[name], theta.expand_as(none[name]))


def test_the_meta_gradient_is_maml_s_second_order_one():
    """Against ``torch.autograd`` with ``create_graph``: ``∇_θ L_query(θ − α ∇_θ L_support(θ))``."""
    torch.manual_seed(0)
    model = AdaptiveDynamics(obs_dim=1, act_dim=1, hidden_dim=8, inner_lr=0.1)
    x, y = linear_windows(1, 8, torch.Generator().manual_seed(2))
    loss, _ = model.meta_loss(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])
    got = torch.autograd.grad(loss, list(model.net.parameters()))
    theta = list(model.net.parameters())
    names = [name for name, _ in model.net.named_parameters()]
    xn, yn = model.x_normalizer.normalize(x[0]), model.y_normalizer.normalize(y[0])

    def mse(weights: list[torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        prediction = torch.func.functional_call(model.net, dict(zip(names, weights, strict=True)), (inputs,))
        return ((prediction - targets) ** 2).mean()

    inner = torch.autograd.grad(mse(theta, xn[:4], yn[:4]), theta, create_graph=True)
    adapted = [t - 0.1 * g for t, g in zip(theta, inner, strict=True)]
    expected = torch.autograd.grad(mse(adapted, xn[4:], yn[4:]), theta)
    first_order = torch.autograd.grad(mse([t - 0.1 * g.detach() for t, g in zip(theta, inner, strict=True)],
                                          xn[4:], yn[4:]), theta)  # fmt: skip
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(b, c) for b, c in zip(expected, first_order, strict=True))  # the check can tell


def test_evaluation_adapts_to_the_context_then_the_episode_so_far(meta_trained, monkeypatch):
    """At step ``t`` the rows of task ``i`` adapt to the last ``recent`` of: task ``i``'s context, then their
    own episode's ``(s_k, a_k, s_{k+1} − s_k)``, ``k < t``."""
    monkeypatch.setitem(envs.FAMILIES, "toy_reach", ReachZeroToyFamily)
    planner = MPPI(1, MPPISettings(horizon=2, samples=4))
    agent = L2AAgent(meta_trained, ReachZeroToyFamily(), torch.zeros(2, 1), planner, recent=4)
    seen = {}
    monkeypatch.setattr(agent, "plan", lambda obs, x, y, mask, generator=None: seen.update(x=x, y=y, mask=mask) or obs)
    cx = torch.arange(6.0).view(2, 3, 1).expand(-1, -1, 2) * torch.tensor([1.0, 0.0])  # s = 0..5, a = 0
    cy = torch.ones(2, 3, 1)
    act = agent.evaluation_policy(cx, cy, episodes=2)  # rows 0, 1: task 0; rows 2, 3: task 1
    obs = 10 + torch.arange(4.0)[None, :, None] + 100 * torch.arange(3.0)[:, None, None]  # [t, row, 1]
    trajectory = Trajectory(obs=obs, action=torch.full((3, 4, 1), 0.5), reward=None, next_obs=obs + 7,
                            terminated=None, truncated=None, alive=None, info={}, last_obs=None)  # fmt: skip
    act(obs[2], 2, trajectory)
    assert seen["mask"].all()
    assert seen["x"][0, :, 0].tolist() == [1, 2, 10, 110] and seen["x"][3, :, 0].tolist() == [4, 5, 13, 113]
    assert seen["x"][3, :, 1].tolist() == [0, 0, 0.5, 0.5] and seen["y"][3, :, 0].tolist() == [1, 1, 7, 7]


def test_last_transitions_takes_the_newest_and_masks_what_does_not_exist():
    x = torch.arange(10.0).view(1, 10, 1).expand(2, -1, -1)
    rx, ry, mask = last_transitions(x, 2 * x, torch.tensor([7, 2]), m=4)
    assert rx[0, :, 0].tolist() == [3, 4, 5, 6] and ry[0, :, 0].tolist() == [6, 8, 10, 12] and mask[0].all()
    assert rx[1, 2:, 0].tolist() == [0, 1] and mask[1].tolist() == [False, False, True, True]
    _, _, none = last_transitions(x[:, :0], x[:, :0], torch.tensor([0, 0]), m=4)
    assert not none.any()


def test_the_agent_plans_in_the_model_adapted_to_each_tasks_transitions(meta_trained, monkeypatch):
    """Tasks with ``w = ±1.5``: adapted to each task's transitions, the plan from ``s = 1`` pushes the
    state toward 0 with that task's sign."""
    monkeypatch.setitem(envs.FAMILIES, "toy_reach", ReachZeroToyFamily)
    g = torch.Generator().manual_seed(3)
    s, a = torch.randn(2, 20, 1, generator=g), torch.rand(2, 20, 1, generator=g) * 2 - 1
    cx, cy = torch.cat([s, a], -1), torch.tensor([1.5, -1.5])[:, None, None] * a
    planner = MPPI(1, MPPISettings(horizon=5, samples=128, iterations=2, temperature=0.1))
    agent = L2AAgent(meta_trained, ReachZeroToyFamily(), torch.zeros(2, 1), planner)
    with pytest.raises(RuntimeError, match="before infer_latent"):
        agent.act(torch.ones(2, 1), torch.zeros(2, 0))
    q = agent.infer_latent(cx, cy, torch.ones(2, 20, dtype=torch.bool))
    assert q.mean.shape == (2, 0)
    action = agent.act(torch.ones(2, 1), q.mean)
    assert action[0] < -0.2 and action[1] > 0.2, action.flatten().tolist()
    act = agent.evaluation_policy(cx, cy, episodes=2)  # rows 0–1 task 0, 2–3 task 1, nothing seen in the episode
    action, _ = act(torch.ones(4, 1), 0, None)
    assert (action[:2] < -0.2).all() and (action[2:] > 0.2).all(), action.flatten().tolist()


def test_bad_l2a_settings_and_another_envs_checkpoint_are_refused_by_name():
    with pytest.raises(ValueError, match="env='acrobot'"):
        L2A(env="cartpole_swingup", hidden_dim=8).on_load_checkpoint({"hyper_parameters": {"env": "acrobot"}})
    with pytest.raises(ValueError, match=r"L2A.recent: 0 — expected an integer ≥ 1"):
        L2A(recent=0)
    with pytest.raises(ValueError, match="random_steps_per_task=20"):
        L2A(collection={"random_steps_per_task": 20})


@pytest.mark.slow
def test_l2a_fits_and_tests_from_the_command_line(tmp_path):
    """A tiny budget: 3 tasks × 40 random steps, then one MPC episode in each (720 transitions)."""
    import json

    from cli_runner import ROOT, run_cli

    config = str(ROOT / "conf/baselines/acrobot_l2a.yaml")
    tiny = ["--model.budget.real_transitions", "700", "--model.budget.num_train_tasks", "3",
            "--model.collection.random_steps_per_task", "40", "--model.collection.tasks_per_iteration", "3",
            "--model.hidden_dim", "16", "--model.steps_per_iteration", "5",
            "--model.meta_batch", "4", "--model.mpc.horizon", "3", "--model.mpc.samples", "4",
            "--model.metatest.episodes", "2", "--model.metatest.context", "5",
            "--model.metatest.tasks", "[interp-default, extrap-mixed]", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.version", "fixed"]  # fmt: skip
    run_cli(tmp_path, "fit", "--config", config, *tiny)
    log_dir = tmp_path / "runs/l2a/acrobot/fixed"
    report = json.loads((log_dir / "metatest.json").read_text())
    assert sorted(r["task"] for r in report["tasks"] if r["method"] == "l2a") == ["extrap-mixed", "interp-default"]
    assert all(-1.0 <= r["reward_per_step"] <= 0.0 for r in report["tasks"])
    assert "720 real training transitions" in report["header"]
    ckpt = log_dir / "checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["l2a"]["real_transitions"] == 720 and state["l2a"]["iterations"] == 2
    assert (state["l2a"]["buffer"]["size"] == 240).all()  # 40 random + one 200-step episode per task
    compute = json.loads((log_dir / "test_compute.json").read_text())
    assert compute["method"] == "l2a" and compute["time/test_seconds_per_action"] > 0
    (log_dir / "metatest.json").unlink()
    run_cli(tmp_path, "test", "--config", config, *tiny, "--ckpt_path", str(ckpt))
    tested = json.loads((log_dir / "metatest.json").read_text())
    assert [r["return_mean"] for r in tested["tasks"]] == [r["return_mean"] for r in report["tasks"]]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_l2a_under_two_process_ddp_shards_tasks_and_reports_once(tmp_path):
    import json

    from cli_runner import ROOT, run_cli

    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    tiny = ["--model.budget.real_transitions", "900", "--model.budget.num_train_tasks", "4",
            "--model.collection.random_steps_per_task", "40", "--model.collection.tasks_per_iteration", "4",
            "--model.hidden_dim", "16", "--model.steps_per_iteration", "3",
            "--model.meta_batch", "4", "--model.mpc.horizon", "3", "--model.mpc.samples", "4",
            "--model.metatest.episodes", "2", "--model.metatest.context", "5", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.version", "fixed"]  # fmt: skip
    run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/baselines/acrobot_l2a.yaml"), *ddp, *tiny, timeout=400)
    log_dir = tmp_path / "runs/l2a/acrobot/fixed"
    names = [r["task"] for r in json.loads((log_dir / "metatest.json").read_text())["tasks"] if r["method"] == "l2a"]
    assert len(names) == len(set(names)) == 6, names  # every test task once, from both ranks' shards
    state = torch.load(log_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert state["l2a"]["real_transitions"] == 4 * 40 + 4 * 200  # both ranks counted: 2 tasks each
    assert state["l2a"]["buffer"]["size"].tolist() == [240] * 4  # every task's data, gathered from both ranks

