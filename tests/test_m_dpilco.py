"""M-DPILCO (meta Deep PILCO): the policy gradient backpropagated through the model must be the true
derivative of the imagined return, the embedding inferred from a few transitions must tell tasks
apart, and a policy trained this way must act on that embedding."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from test_test_time_methods import ReachZeroToyFamily

from envs import make_family
from modules.methods.l2a.learner import L2A
from modules.methods.m_dpilco import MDPILCO, imagined_reward_per_step
from modules.models.embedded_dynamics import EmbeddedDynamics
from modules.models.model_env import ModelEnv, embedded_dynamics_next_state
from modules.policies.embedded_policy import EmbeddedPolicy

# the notes about Lightning's own internals that train.py filters too (its Trainer runs in-process here)
pytestmark = [pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
              pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined")]  # fmt: skip


def test_the_pathwise_gradient_matches_a_finite_difference():
    """Acrobot's exact reward through 6 steps of a 2-member ensemble, in float64: autograd's derivative of
    the imagined return in a policy weight equals a central difference, and it is not zero."""
    torch.manual_seed(0)
    family = make_family("acrobot")
    model = EmbeddedDynamics(6, 1, num_tasks=2, embedding_dim=2, members=2, hidden_dim=16).double()
    policy = EmbeddedPolicy(6, 1, embedding_dim=2, hidden_dim=16).double()
    data = family.project(torch.randn(64, 6, dtype=torch.float64))
    model.x_normalizer.fit(torch.cat([data, torch.rand(64, 1, dtype=torch.float64) * 2 - 1], -1))
    model.y_normalizer.fit(0.3 * torch.randn(64, 6, dtype=torch.float64))
    policy.obs_normalizer.fit(data)
    start, h = data[:8], torch.randn(8, 2, dtype=torch.float64)
    params = family.params_tensor(family.train_tasks(8, seed=0)).double()

    def objective() -> torch.Tensor:
        return imagined_reward_per_step(model, policy, family, start, h, params, horizon=6)

    weight = policy.net[0].weight
    (grad,) = torch.autograd.grad(objective(), weight)
    eps = 1e-6
    for i, j in [(0, 0), (3, 6), (7, 2), (11, 7)]:  # inputs: 6 normalised state features, then h
        with torch.no_grad():
            weight[i, j] += eps
            up = objective()
            weight[i, j] -= 2 * eps
            down = objective()
            weight[i, j] += eps
        finite = (up - down) / (2 * eps)
        assert abs(grad[i, j]) > 1e-6
        assert torch.isclose(grad[i, j], finite, rtol=1e-5, atol=1e-9), (i, j, grad[i, j].item(), finite.item())


def test_particles_keep_their_member_and_the_objective_discounts_and_stops_at_termination():
    """Row ``k·R + i`` steps with member ``k``; on cart-pole (which terminates when the cart leaves the
    track) the objective is the hand-computed discounted reward of the steps before each row's end."""
    torch.manual_seed(0)
    family = make_family("cartpole_swingup")
    model = EmbeddedDynamics(5, 1, num_tasks=2, embedding_dim=2, members=3, hidden_dim=16)
    model.y_normalizer.fit(torch.randn(64, 5))  # Δs of a few units: some carts leave the track
    policy = EmbeddedPolicy(5, 1, embedding_dim=2, hidden_dim=16)
    start = family.project(torch.randn(6, 5))
    h, params = torch.randn(6, 2), family.params_tensor(family.train_tasks(6, seed=0))
    env = ModelEnv(embedded_dynamics_next_state(model, h), family, params)
    env.reset(start)
    action = torch.rand(6, 1) * 2 - 1
    step = env.step(action)
    x = torch.cat([start, action], -1)
    by_member = model.y_normalizer.denormalize(model.net(model._inputs(x, h)))  # [3, 6, 5]: every member, every row
    own = by_member[torch.arange(6) // 2, torch.arange(6)]
    assert torch.allclose(step.next_obs, family.project(start + own))

    discount, horizon = 0.9, 8
    with torch.no_grad():
        objective = imagined_reward_per_step(model, policy, family, start, h, params, horizon, discount)
        env.reset(start)
        obs, alive, total, ended = start, torch.ones(6), torch.zeros(6), torch.zeros(6, dtype=torch.bool)
        for t in range(horizon):
            step = env.step(policy(obs, h))
            total += discount**t * step.reward * alive
            ended |= step.terminated
            alive = alive * ~step.terminated
            obs = step.next_obs
    assert ended.any() and not ended.all()  # the check covers both kinds of row
    weights = discount ** torch.arange(horizon, dtype=torch.float32)
    assert torch.isclose(objective, total.mean() / weights.sum())


def reach_data(w: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` transitions of ``s' = s + w·a`` per task ``w [T]``: ``x [T, n, 2]``, ``y [T, n, 1]``."""
    s = torch.randn(len(w), n, 1, generator=g) * 2
    a = torch.rand(len(w), n, 1, generator=g) * 2 - 1
    return torch.cat([s, a], -1), w[:, None, None] * a


@pytest.fixture(scope="module")
def trained() -> tuple[EmbeddedDynamics, EmbeddedPolicy, torch.Tensor]:
    """A model of 8 reach-zero tasks (``w`` of either sign) and a policy trained through it pathwise."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([-1.5, -1.0, -0.7, -0.5, 0.5, 0.7, 1.0, 1.5])
    x, y = reach_data(w, 128, g)
    model = EmbeddedDynamics(1, 1, num_tasks=8, embedding_dim=2, members=2, hidden_dim=32)
    model.x_normalizer.fit(x.reshape(-1, 2))
    model.y_normalizer.fit(y.reshape(-1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        tasks = torch.randint(8, (2, 64), generator=g)
        index = torch.randint(128, (2, 64), generator=g)
        loss = model.loss(x[tasks, index], y[tasks, index], tasks, torch.arange(8), torch.full((8,), 128), g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    family = ReachZeroToyFamily()
    policy = EmbeddedPolicy(1, 1, embedding_dim=2, hidden_dim=32)
    policy.obs_normalizer.fit(x[..., :1].reshape(-1, 1))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(150):
        tasks = torch.randint(8, (64,), generator=g)
        with torch.no_grad():
            h = model.task_posterior(tasks).sample()
        start = torch.randn(64, 1, generator=g) * 2
        loss = -imagined_reward_per_step(model, policy, family, start, h, w[tasks, None], horizon=5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, policy, w


def test_the_embedding_inferred_from_a_few_transitions_tells_a_new_task(trained):
    model, _, _ = trained
    g = torch.Generator().manual_seed(1)
    w = torch.tensor([-1.2, -0.6, 0.6, 1.2])  # tasks never trained on
    cx, cy = reach_data(w, 8, g)
    q = model.infer(cx, cy, torch.ones(4, 8, dtype=torch.bool), steps=100, lr=0.1, generator=g)
    x, y = reach_data(w, 64, g)
    mse = lambda h: ((model.net(model._inputs(x, h[:, None].expand(-1, 64, -1))).mean(0)  # noqa: E731
                      - model.y_normalizer.normalize(y)) ** 2).mean()  # fmt: skip
    inferred, prior = mse(q.mean), mse(torch.zeros_like(q.mean))
    assert inferred < 0.1 * prior, (inferred.item(), prior.item())
    assert (q.stddev < 1).all()  # narrower than the prior it started from
    masked = model.infer(cx, cy, torch.zeros(4, 8, dtype=torch.bool), steps=5)
    assert (masked.mean == 0).all() and (masked.stddev == 1).all()  # nothing seen: the prior
    first = torch.arange(8) < 3  # the meta-test's context so far: the first 3 transitions of 8
    partial = model.infer(cx, cy, first.expand(4, -1), steps=20, generator=torch.Generator().manual_seed(3))
    truncated = model.infer(cx[:, :3], cy[:, :3], first[:3].expand(4, -1), steps=20,
                            generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.allclose(partial.mean, truncated.mean, atol=1e-6)


def test_the_pathwise_trained_policy_acts_on_the_inferred_embedding(trained):
    """Reach zero in ``s' = s + w·a`` with unknown sign of ``w``: from the embedding inferred from 8
    transitions the policy drives the state to 0 in the true system; at the prior it cannot."""
    model, policy, _ = trained
    g = torch.Generator().manual_seed(2)
    w = torch.tensor([-1.2, -0.6, 0.6, 1.2])
    cx, cy = reach_data(w, 8, g)
    h = model.infer(cx, cy, torch.ones(4, 8, dtype=torch.bool), steps=100, lr=0.1, generator=g).mean

    def true_return(latent: torch.Tensor) -> float:
        s, total = torch.full((4, 16, 1), 2.0), 0.0
        s[:, 8:] = -2.0
        for _ in range(10):
            with torch.no_grad():
                a = policy.act(s.reshape(-1, 1), latent.repeat_interleave(16, 0), deterministic=True).view(4, 16, 1)
            s = s + w[:, None, None] * a
            total += -s.abs().mean().item()
        return total

    informed, uninformed = true_return(h), true_return(torch.zeros_like(h))
    assert informed > 0.5 * uninformed, (informed, uninformed)  # returns are negative: at most half the cost
    assert informed > -4.0, informed  # from |s| = 2: near 0 within a few steps


def test_bad_m_dpilco_settings_and_another_envs_checkpoint_are_refused_by_name():
    with pytest.raises(ValueError, match="env='acrobot'"):
        MDPILCO(env="cartpole_swingup", hidden_dim=8).on_load_checkpoint({"hyper_parameters": {"env": "acrobot"}})
    with pytest.raises(ValueError, match=r"MDPILCO.horizon: 0 — expected an integer ≥ 1"):
        MDPILCO(horizon=0)
    with pytest.raises(ValueError, match="policy_rollouts=10 must be a multiple of members=4"):
        MDPILCO(policy_rollouts=10)
    with pytest.raises(ValueError, match=r"MDPILCO.discount: 1\.5 — expected a number in \(0, 1\]"):
        MDPILCO(discount=1.5)
    with pytest.raises(ValueError, match=r"context y of shape \(4, 6, 3\); expected \(4, 6, 2\)"):
        EmbeddedDynamics(2, 1, num_tasks=2, hidden_dim=8).infer(torch.zeros(4, 6, 3), torch.zeros(4, 6, 3),
                                                               torch.ones(4, 6, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ValueError, match="expected \\[3, N, D\\]"):
        EmbeddedDynamics(2, 1, num_tasks=2, members=3, hidden_dim=8).delta_each(torch.zeros(2, 4, 3),
                                                                               torch.zeros(2, 4, 4))  # fmt: skip


TINY = {"l2a": (L2A, {"hidden_dim": 8, "steps_per_iteration": 3, "meta_batch": 4, "mpc": {"horizon": 3, "samples": 4}}),
        "m_dpilco": (MDPILCO, {"hidden_dim": 8, "members": 2, "model_steps": 3, "policy_steps": 2, "policy_rollouts": 4,
                               "horizon": 3})}  # fmt: skip


def tiny_learner(method: str, **settings):
    torch.manual_seed(0)  # the same initial weights every time
    cls, sizes = TINY[method]
    return cls(env="acrobot", budget={"real_transitions": 10**6, "num_train_tasks": 2},
               collection={"random_steps_per_task": 40, "tasks_per_iteration": 2}, **sizes, **settings)  # fmt: skip


def fit(module, epochs: int, root, ckpt_path=None):
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root)  # fmt: skip
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def test_each_phase_steps_only_its_own_weights(tmp_path):
    """Model phase: the model's Adam; policy phase: the policy's, through a model whose weights stay
    trainable afterwards (the policy's gradient passes through them without touching them)."""
    for frozen, moving in (("model", "policy"), ("policy", "model")):
        learner = tiny_learner("m_dpilco", **{f"{'model' if frozen == 'model' else 'policy'}_lr": 0.0})
        before = {name: p.detach().clone() for name, p in learner.named_parameters()}
        fit(learner, 2, tmp_path)
        changed = {name.split(".")[0] for name, p in learner.named_parameters() if not torch.equal(p, before[name])}
        assert changed == {moving}, (frozen, changed)
        assert all(p.requires_grad for p in learner.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("method", TINY)
def test_a_resumed_run_continues_as_the_uninterrupted_one(method, tmp_path):
    """3 iterations in one go, or 2, a checkpoint, and the third in a new process's worth of objects:
    the same weights, normalisers, optimiser-driven updates and buffers, to the bit."""
    whole = tiny_learner(method)
    fit(whole, 3, tmp_path)
    first = tiny_learner(method)
    fit(first, 2, tmp_path).save_checkpoint(tmp_path / "mid.ckpt")
    resumed = tiny_learner(method)
    fit(resumed, 3, tmp_path, tmp_path / "mid.ckpt")
    assert resumed.iterations == whole.iterations == 3
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert torch.equal(whole.buffer.obs, resumed.buffer.obs) and torch.equal(whole.buffer.size, resumed.buffer.size)


@pytest.mark.slow
def test_m_dpilco_fits_and_tests_from_the_command_line(tmp_path):
    """A tiny budget: 3 tasks × 40 random steps, then one policy episode in each (720 transitions)."""
    import json

    from cli_runner import ROOT, run_cli

    config = str(ROOT / "conf/baselines/acrobot_m_dpilco.yaml")
    tiny = ["--model.budget.real_transitions", "700", "--model.budget.num_train_tasks", "3",
            "--model.collection.random_steps_per_task", "40", "--model.collection.tasks_per_iteration", "3",
            "--model.hidden_dim", "16", "--model.members", "2",
            "--model.model_steps", "5", "--model.policy_steps", "3", "--model.policy_rollouts", "8",
            "--model.horizon", "4", "--model.infer_steps", "3", "--model.metatest.episodes", "2",
            "--model.metatest.context", "5", "--model.metatest.tasks", "[interp-default, extrap-mixed]",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.version", "fixed"]  # fmt: skip
    run_cli(tmp_path, "fit", "--config", config, *tiny)
    log_dir = tmp_path / "runs/m_dpilco/acrobot/fixed"
    report = json.loads((log_dir / "metatest.json").read_text())
    assert sorted(r["task"] for r in report["tasks"] if r["method"] == "m_dpilco") == ["extrap-mixed", "interp-default"]
    assert all(-1.0 <= r["reward_per_step"] <= 0.0 for r in report["tasks"])
    assert all(len(r["latent"]) == 4 for r in report["tasks"] if r["method"] == "m_dpilco")
    assert "720 real training transitions" in report["header"]
    ckpt = log_dir / "checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["m_dpilco"]["real_transitions"] == 720 and state["m_dpilco"]["iterations"] == 2
    assert (state["m_dpilco"]["buffer"]["size"] == 240).all()  # 40 random + one 200-step episode per task
    assert len(state["optimizer_states"]) == 2  # the model's and the policy's Adam
    compute = json.loads((log_dir / "test_compute.json").read_text())
    assert compute["method"] == "m_dpilco" and compute["time/inference_seconds_per_task"] > 0
    (log_dir / "metatest.json").unlink()
    run_cli(tmp_path, "test", "--config", config, *tiny, "--ckpt_path", str(ckpt))
    tested = json.loads((log_dir / "metatest.json").read_text())
    assert [r["return_mean"] for r in tested["tasks"]] == [r["return_mean"] for r in report["tasks"]]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_m_dpilco_under_two_process_ddp_shards_tasks_and_reports_once(tmp_path):
    import json

    from cli_runner import ROOT, run_cli

    ddp = ["--trainer.strategy", "ddp_find_unused_parameters_true", "--trainer.devices", "2",
           "--trainer.accelerator", "cpu"]  # fmt: skip
    tiny = ["--model.budget.real_transitions", "900", "--model.budget.num_train_tasks", "4",
            "--model.collection.random_steps_per_task", "40", "--model.collection.tasks_per_iteration", "4",
            "--model.hidden_dim", "16", "--model.members", "2",
            "--model.model_steps", "3", "--model.policy_steps", "2", "--model.policy_rollouts", "8",
            "--model.horizon", "3", "--model.infer_steps", "2", "--model.metatest.episodes", "2",
            "--model.metatest.context", "5", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.version", "fixed"]  # fmt: skip
    run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/baselines/acrobot_m_dpilco.yaml"), *ddp, *tiny, timeout=400)
    log_dir = tmp_path / "runs/m_dpilco/acrobot/fixed"
    tasks = json.loads((log_dir / "metatest.json").read_text())["tasks"]
    names = [r["task"] for r in tasks if r["method"] == "m_dpilco"]
    assert len(names) == len(set(names)) == 6, names  # every test task once, from both ranks' shards
    state = torch.load(log_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert state["m_dpilco"]["real_transitions"] == 4 * 40 + 4 * 200  # both ranks counted: 2 tasks each
    assert state["m_dpilco"]["buffer"]["size"].tolist() == [240] * 4  # every task's data, gathered from both ranks


@pytest.mark.slow
def test_the_training_task_curve_meta_tests_training_tasks_only(tmp_path):
    import subprocess
    import sys

    from cli_runner import ROOT

    tiny = ["budget.real_transitions=1300", "budget.num_train_tasks=3", "collection.random_steps_per_task=40",
            "collection.tasks_per_iteration=3",
            "hidden_dim=8", "model_steps=3", "policy_steps=2", "policy_rollouts=8"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/training_tasks_curve.py"), "--method", "m_dpilco",
                           "--env", "acrobot", "--tasks", "2", "--episodes", "1", "--every", "700", "--set", *tiny],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "meta-tested on train-000, train-001\n" in proc.stdout
    assert proc.stdout.count("training-task meta-test at") == 2  # at 720 (crossing 700) and at the end, 1320
    assert "Warning" not in proc.stderr
