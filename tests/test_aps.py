"""APS: imagined rollouts (shapes, exact rewards, termination), GAE, and PPO on a known optimum."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

import envs
from datamodules import MultiTaskBuffer
from modules import APSModule, MetaDynamicsModel
from modules.methods.gssm_aps.aps import ImaginationSource
from modules.methods.gssm_aps.imagination import imagine
from modules.policies.ppo import generalized_advantages


def tiny_source(env: str = "acrobot", tasks: int = 3) -> ImaginationSource:
    torch.manual_seed(0)
    fam = envs.make_family(env)
    model = MetaDynamicsModel(env, hidden_dim=16, latent_dim=3, num_heads=2, ensemble_size=1).eval()
    buf = MultiTaskBuffer(tasks, 40, fam.obs_dim, fam.act_dim)
    obs = torch.randn(tasks, 40, fam.obs_dim) * 0.3
    act = torch.rand(tasks, 40, fam.act_dim) * 2 - 1
    buf.add(
        torch.arange(tasks),
        obs,
        act,
        torch.zeros(tasks, 40),
        obs + 0.1,
        torch.zeros(tasks, 40, dtype=torch.bool),
    )
    x, y = buf.all_xy()
    model.x_normalizer.fit(x)
    model.y_normalizer.fit(y)
    return ImaginationSource(model, buf, torch.arange(tasks), fam.params_tensor(fam.train_tasks(tasks, seed=0)))


def test_imagined_rollouts_have_the_documented_shapes_and_exact_rewards():
    src = tiny_source()
    aps = APSModule("acrobot", latent_dim=3, hidden_dim=16, horizon=7, rollouts_per_task=6, context_size=10,
                     context_min=1, context_sets_per_task=3, min_action_std=0.0, latent="sample", next_state="sample",
                     uncertainty_cut=None)  # fmt: skip
    aps.source = src
    r = aps.imagine_batch()
    b = 3 * 6
    assert r.obs.shape == (7, b, 6) and r.action.shape == (7, b, 1)
    assert r.reward.shape == r.log_prob.shape == r.alive.shape == (7, b)
    assert r.value.shape == (8, b) and r.latent.shape == (b, 3)
    assert torch.isfinite(r.obs).all() and torch.isfinite(r.reward).all()
    # each reward is the family's reward of the model's predicted next state
    params = src.params.repeat_interleave(6, dim=0)
    expected = aps.family.reward(r.obs[:-1], r.action[:-1].clamp(-1, 1), r.obs[1:], params)
    torch.testing.assert_close(r.reward[:-1], expected)
    # rollouts of one task share its physics but have their own latent sample
    assert not torch.allclose(r.latent[0], r.latent[1])


def test_rollouts_grouped_per_context_set_equal_one_set_per_rollout():
    """Reading E encoded sets with M queries each is the same computation as E·M sets."""
    src = tiny_source()
    aps = APSModule("acrobot", latent_dim=3, hidden_dim=16)
    model, fam = src.model, aps.family
    with torch.no_grad():  # leave the initialisation, where z_t ignores the context message
        for w in model.parameters():
            w.add_(0.3 * torch.randn_like(w))
    e, m = 3, 4
    cx, cy = src.buffer.xy(torch.arange(e), src.buffer.sample_index(torch.arange(e), 10, torch.Generator()))
    mask = torch.arange(10)[None] < torch.tensor([[3], [10], [6]])
    with torch.no_grad():
        grouped = model.infer_context(cx, cy, mask)
    rep = lambda t: t.repeat_interleave(m, 0)  # noqa: E731
    per_rollout = type(grouped)(Normal(rep(grouped.q_zc.loc), rep(grouped.q_zc.scale)), rep(grouped.mask),
                                rep(grouped.keys), rep(grouped.values))  # fmt: skip
    start, latent, params = torch.randn(e * m, 6), torch.randn(e * m, 3), src.params[:1].expand(e * m, -1)
    run = lambda enc, group: imagine(model, aps.policy, fam, start, enc, latent, params, horizon=5,  # noqa: E731
                                     generator=torch.Generator().manual_seed(0), rollouts_per_context=group)
    a, b = run(grouped, m), run(per_rollout, 1)
    torch.testing.assert_close(a.obs, b.obs)
    torch.testing.assert_close(a.reward, b.reward)
    with pytest.raises(ValueError, match="context_sets_per_task=5"):
        APSModule("acrobot", rollouts_per_task=64, context_sets_per_task=5)


class DriftingModel:
    """A stand-in dynamics model: the cart moves +1 m per step (so it leaves the track)."""

    def predict_with_disagreement(self, x, encoding, z_c=None, sample=False, generator=None):
        nxt = x[..., :5].clone()
        nxt[..., 0] += 1.0
        nxt[..., 2] = 1.0  # upright: reward > 0 while on the track
        nxt[..., 3] = 0.0
        return Normal(nxt, torch.full_like(nxt, 1e-6)), torch.zeros(nxt.shape[:-1])


def test_terminated_imagined_rollouts_stop_accumulating_reward():
    fam = envs.make_family("cartpole_swingup")
    aps = APSModule("cartpole_swingup", latent_dim=2, hidden_dim=16)
    start = torch.zeros(4, 5)
    start[:, 0] = torch.tensor([-0.5, 0.0, 0.5, 1.0])  # crosses x > 2.4 after 3, 3, 2, 2 steps
    r = imagine(DriftingModel(), aps.policy, fam, start, None, torch.zeros(4, 2), torch.ones(4, 3), horizon=6)
    crossing = torch.tensor([2, 2, 1, 1])  # index of the step that terminates
    for b in range(4):
        t = int(crossing[b])
        assert r.terminated[:, b].nonzero().flatten().tolist() == [t]
        assert (r.reward[: t + 1, b] > 0).all()
        assert (r.reward[t + 1 :, b] == 0).all() and (r.alive[t + 1 :, b] == 0).all()
    _, ret = generalized_advantages(r.reward, torch.zeros(7, 4), r.terminated, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret[0], r.returns)  # nothing after termination is counted


def test_gae_does_not_bootstrap_through_a_termination():
    reward = torch.tensor([[1.0], [1.0], [1.0]])
    value = torch.full((4, 1), 10.0)
    term = torch.tensor([[False], [True], [False]])
    _, ret = generalized_advantages(reward, value, term, gamma=0.5, lam=1.0)
    assert ret[1, 0] == 1.0  # terminated: no bootstrap from value[2]
    assert ret[0, 0] == 1.0 + 0.5 * 1.0
    assert ret[2, 0] == 1.0 + 0.5 * 10.0


def test_ppo_moves_the_mean_action_to_the_known_optimum():
    """A one-step bandit, r = −(a − 0.6)²: PPO's mean action must go from ≈0 to ≈0.6."""
    torch.manual_seed(0)
    aps = APSModule("acrobot", latent_dim=2, hidden_dim=32, min_action_std=0.0, ppo={"lr": 3e-3})
    opt = aps.configure_optimizers()
    probe = torch.randn(256, 6), torch.zeros(256, 2)
    with torch.no_grad():
        start = float(aps.policy(*probe)[0].mean.mean())
    for _ in range(30):
        obs, z = torch.randn(512, 6), torch.zeros(512, 2)
        with torch.no_grad():
            dist, value = aps.policy(obs, z)
            a = dist.sample()
            reward = -((a.clamp(-1, 1)[:, 0] - 0.6) ** 2)
        batch = {"obs": obs, "latent": z, "action": a, "log_prob": dist.log_prob(a).sum(-1),
                 "advantage": reward - value, "return": reward, "weight": torch.ones(512)}  # fmt: skip
        for _ in range(4):
            for idx in torch.randperm(512).tensor_split(4):
                loss, _ = aps.ppo_loss({k: t[idx] for k, t in batch.items()})
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        mean = float(aps.policy(*probe)[0].mean.mean())
    assert abs(start) < 0.1
    assert abs(mean - 0.6) < 0.1, mean


def test_optimizer_state_survives_a_new_fit():
    aps = APSModule("acrobot", latent_dim=2, hidden_dim=8)
    opt = aps.configure_optimizers()
    aps.policy(torch.zeros(1, 6), torch.zeros(1, 2))[1].sum().backward()
    opt.step()
    state = aps.optimizer_state_dict()
    assert aps.configure_optimizers() is opt and state["state"]
    other = APSModule("acrobot", latent_dim=2, hidden_dim=8)
    other.load_optimizer_state_dict(state)
    restored = other.optimizer_state_dict()["state"]
    assert restored.keys() == state["state"].keys()
    for key, value in state["state"].items():
        assert torch.equal(restored[key]["exp_avg"], value["exp_avg"])


def test_ppo_settings_come_as_one_block_and_an_unknown_one_is_named():
    aps = APSModule(env="acrobot", latent_dim=2, hidden_dim=8, ppo={"ppo_epochs": 3, "lr": 0.01})
    assert (aps.ppo.ppo_epochs, aps.ppo.num_minibatches, aps.ppo.lr) == (3, 8, 0.01)  # APS's 8 minibatches kept
    assert aps.hparams.ppo["ppo_epochs"] == 3  # plain data in the checkpoint's hyperparameters
    assert aps.configure_optimizers().param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match=r"unknown PPOSettings field\(s\) \['ppo_epoch'\]"):
        APSModule(env="acrobot", latent_dim=2, ppo={"ppo_epoch": 3})
