"""The mechanisms that keep GSSM+APS honest: a task latent that carries the task, an ensemble that
knows where it has no data, imagined states that stay physical, rollouts cut where the model is
unsure, training that stops on a held-out slice, and normalisers refitted only where training follows them."""

from __future__ import annotations

import math
import sys

import pytest
import pytorch_lightning as pl
import torch
from cli_runner import ROOT
from test_aps import tiny_source
from test_toy_learning import LinearToyFamily, linear_tasks
from torch.distributions import Normal

import envs
from callbacks import HeldOutEarlyStopping, NormalizerFitting
from datamodules import ContextTargetStream, MultiTaskBuffer, TransitionDataModule
from modules import APSModule, MetaDynamicsModel
from modules.blocks import EnsembleMLP
from modules.methods.gssm_aps.imagination import imagine
from modules.policies.ppo import generalized_advantages

sys.path.insert(0, str(ROOT / "benchmarks"))
from latent_probe import r_squared


def train_toy(model: MetaDynamicsModel, buffer: MultiTaskBuffer, steps: int) -> MetaDynamicsModel:
    model.x_normalizer.fit(buffer.all_xy()[0])
    model.y_normalizer.fit(buffer.all_xy()[1])
    opt = model.configure_optimizers()
    for batch in ContextTargetStream(buffer, torch.arange(buffer.num_tasks), steps, 16, 10, 20, 20, seed=0):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow  # trains a model to convergence: over a minute on 2 cores
def test_the_task_latent_carries_the_task(monkeypatch):
    """On ``Δs = w·a`` tasks the mean of ``q(z_c | C)`` must encode ``w`` linearly and the prediction
    must depend on it: another task's latent (same context for the attention path) is far worse."""
    monkeypatch.setitem(envs.FAMILIES, "toy_linear", LinearToyFamily)
    torch.manual_seed(0)
    train, test = linear_tasks(128, 200, seed=0), linear_tasks(32, 200, seed=1)
    model = MetaDynamicsModel("toy_linear", "gssm", hidden_dim=32, latent_dim=4, num_heads=2, lr=3e-3,
                              ensemble_size=1)  # fmt: skip
    train_toy(model, train, 600)
    ids = torch.arange(32)
    g = torch.Generator().manual_seed(2)
    cx, cy = test.xy(ids, test.sample_index(ids, 20, g))
    tx, ty = test.xy(ids, test.sample_index(ids, 100, g))
    w = (ty[..., 0] * tx[..., 1]).sum(1) / (tx[..., 1] ** 2).sum(1)  # each task's slope, from its data
    with torch.no_grad():
        enc = model.infer_context(cx, cy)
        own = model.predict(tx, enc).mean - tx[..., :1]
        swapped = model.predict(tx, enc, z_c=enc.q_zc.mean.roll(1, 0)).mean - tx[..., :1]
    mse_own, mse_swapped = ((own - ty) ** 2).mean(), ((swapped - ty) ** 2).mean()
    every = torch.arange(len(w))  # in-sample: the fit and its score on all 32 tasks
    assert r_squared(enc.q_zc.mean.double(), w.double(), every, every) > 0.9
    assert mse_swapped > 5 * mse_own, (float(mse_swapped), float(mse_own))


def test_ensemble_members_differ_and_their_disagreement_grows_off_the_data(monkeypatch):
    monkeypatch.setitem(envs.FAMILIES, "toy_linear", LinearToyFamily)
    torch.manual_seed(0)
    heads = EnsembleMLP(3, in_dim=2, hidden=8, out_dim=1)
    out = heads(torch.randn(5, 2))
    assert out.shape == (3, 5, 1) and not torch.allclose(out[0], out[1])

    train = linear_tasks(64, 200, seed=0)  # states ~ N(0, 1), actions in [-1, 1]
    model = MetaDynamicsModel("toy_linear", "gssm", hidden_dim=32, latent_dim=2, num_heads=2, lr=3e-3,
                              prior_weight=0.0, latent_decoder_weight=0.0)  # fmt: skip
    train_toy(model, train, 400)
    ids = torch.arange(8)
    cx, cy = train.xy(ids, train.sample_index(ids, 20, torch.Generator().manual_seed(1)))
    on_data = torch.stack([torch.randn(8, 50), torch.rand(8, 50) * 2 - 1], dim=-1)
    off_data = torch.stack([torch.full((8, 50), 30.0), torch.full((8, 50), 10.0)], dim=-1)  # far off the data
    with torch.no_grad():
        enc = model.infer_context(cx, cy)
        _, u_on = model.predict_with_disagreement(on_data, enc)
        _, u_off = model.predict_with_disagreement(off_data, enc)
    # 27-144x over 5 seeds and 1 or 2 torch threads (at 8σ instead of 30σ: 5-26x, too close to the bound
    # for float-rounding changes); 1x would be no signal
    assert u_off.mean() > 5 * u_on.mean(), (float(u_off.mean()), float(u_on.mean()))
    single = MetaDynamicsModel("toy_linear", hidden_dim=8, latent_dim=2, num_heads=2, ensemble_size=1)
    assert (single.predict_with_disagreement(on_data, single.infer_context(cx, cy))[1] == 0).all()


def test_imagined_rollouts_stay_physical_and_the_penalty_is_the_disagreement():
    for env, pairs, limits in (("acrobot", [(0, 1), (2, 3)], {4: 4 * math.pi, 5: 9 * math.pi}),
                               ("cartpole_swingup", [(2, 3)], {1: 20.0, 4: 10 * math.pi})):  # fmt: skip
        src = tiny_source(env)
        fam = envs.make_family(env)
        with torch.no_grad():  # a wild model: large random weights push states far off the manifold
            for w in src.model.parameters():
                w.add_(2.0 * torch.randn_like(w))
            src.model.y_normalizer.std.mul_(50.0)
        aps = APSModule(env, latent_dim=3, hidden_dim=16, horizon=10, rollouts_per_task=4, context_size=10,
                         context_min=1, context_sets_per_task=2, min_action_std=0.0, latent="sample",
                         uncertainty_penalty=0.5, uncertainty_cut=None)  # fmt: skip
        aps.source = src
        r = aps.imagine_batch()
        imagined = r.obs[1:]  # row 0 holds the (here random, unphysical) start states
        for c, s in pairs:
            torch.testing.assert_close(imagined[..., c] ** 2 + imagined[..., s] ** 2, torch.ones_like(imagined[..., c]))
        for dim, bound in limits.items():
            assert imagined[..., dim].abs().max() <= bound + 1e-4
            assert imagined[..., dim].abs().max() > 0.5 * bound  # the wild model did push them out
        torch.testing.assert_close(r.penalty, 0.5 * r.disagreement * r.alive)
        # an already physical state is left as it is
        real = fam.make_vector_env(fam.train_tasks(2, seed=0), seed=0).reset(seed=0)[0]
        real = torch.as_tensor(real, dtype=torch.float32)
        torch.testing.assert_close(fam.project(real), real)


def test_buffer_parts_split_every_task_into_train_and_held_out_slots():
    buf = MultiTaskBuffer(2, 100, 1, 1, holdout_every=4)
    buf.add(torch.arange(2), torch.zeros(2, 37, 1), torch.zeros(2, 37, 1), torch.zeros(2, 37),
            torch.zeros(2, 37, 1), torch.zeros(2, 37, dtype=torch.bool))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    train = buf.sample_index(torch.arange(2), 5000, g, part="train")
    held = buf.sample_index(torch.arange(2), 5000, g, part="holdout")
    assert set(held.unique().tolist()) == {3, 7, 11, 15, 19, 23, 27, 31, 35}
    assert set(train.unique().tolist()) == set(range(37)) - {3, 7, 11, 15, 19, 23, 27, 31, 35}


def tiny_data(**kwargs) -> TransitionDataModule:
    args = dict(env="acrobot", num_train_tasks=2, random_steps_per_task=60, val_steps_per_task=10,
                tasks_per_batch=2, context_min=2, context_max=8, num_targets=8, val_batches=1,
                holdout_every=5)  # fmt: skip
    return TransitionDataModule(**{**args, **kwargs})


def fit(model: MetaDynamicsModel, data: TransitionDataModule, epochs: int, callbacks: list[pl.Callback],
        validate: bool = False) -> pl.Trainer:  # fmt: skip
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=None if validate else 0,
                         callbacks=[NormalizerFitting(), *callbacks])  # fmt: skip
    trainer.fit(model, data)
    return trainer


def test_model_training_stops_when_the_held_out_error_stops_improving():
    torch.manual_seed(0)
    plain = dict(prior_weight=0.0, latent_decoder_weight=0.0, ensemble_size=1)
    frozen = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2, lr=0.0, **plain)
    stop = HeldOutEarlyStopping(check_every=5, patience=2)
    trainer = fit(frozen, tiny_data(batches_per_epoch=200), epochs=1, callbacks=[stop], validate=True)
    # checks before batches 0 (the baseline), 5 and 10: two without improvement end the stream;
    # the batch already fetched still trains, and the epoch-end validation still runs
    assert 10 <= frozen.global_step <= 12
    assert "model/val/nll" in trainer.callback_metrics and "model/holdout/mse" in trainer.callback_metrics
    learning = MetaDynamicsModel("acrobot", hidden_dim=32, latent_dim=2, num_heads=2, lr=3e-3, **plain)
    fit(learning, tiny_data(batches_per_epoch=40), epochs=1, callbacks=[HeldOutEarlyStopping(5, patience=2)])
    assert learning.global_step > 12  # it improved, so it kept training


class NewDataAfterEpoch1(pl.Callback):
    """Adds very different transitions after the first epoch; records the Δs normaliser's mean that
    each epoch trains with."""

    def __init__(self):
        self.means: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, model, batch, batch_idx):
        if batch_idx == 0:
            self.means.append(model.y_normalizer.mean.clone())

    def on_train_epoch_end(self, trainer, model):
        data = trainer.datamodule
        if trainer.current_epoch == 0:
            obs = data.buffer.obs[:, :60]
            data.buffer.add(torch.arange(2), obs, torch.ones(2, 60, 1), torch.zeros(2, 60), obs * 3 + 1,
                            torch.zeros(2, 60, dtype=torch.bool))  # fmt: skip


def test_normalizers_are_refitted_every_epoch_or_fitted_once():
    for refit in (False, True):
        torch.manual_seed(0)
        data = tiny_data(batches_per_epoch=2)
        data.ensure_initial_data()
        initial = data.buffer.all_xy()[1].mean(0)
        model = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2)
        probe = NewDataAfterEpoch1()
        pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   callbacks=[NormalizerFitting(refit_every_epoch=refit), probe]).fit(model, data)  # fmt: skip
        everything = data.buffer.all_xy()[1].mean(0)
        assert not torch.allclose(initial, everything, atol=1e-3)  # the new data moves the statistics
        torch.testing.assert_close(probe.means[0], initial)  # fitted on the data there is at the start
        torch.testing.assert_close(probe.means[1], everything if refit else initial)


class UnsureModel:
    """A stand-in model that stays put and whose heads disagree more at every step (0.1 per step)."""

    def __init__(self):
        self.calls = 0

    def predict_with_disagreement(self, x, encoding, z_c=None, sample=False, generator=None):
        self.calls += 1
        nxt = x[..., :5].clone()
        return Normal(nxt, torch.full_like(nxt, 1e-6)), torch.full(nxt.shape[:-1], 0.1 * self.calls)


def test_rollouts_are_cut_where_the_heads_disagree_and_bootstrap_there():
    fam = envs.make_family("cartpole_swingup")
    aps = APSModule("cartpole_swingup", latent_dim=2, hidden_dim=16)
    start = torch.zeros(3, 5)
    start[:, 2] = 1.0  # upright, centred: reward 1 per step
    r = imagine(UnsureModel(), aps.policy, fam, start, None, torch.zeros(3, 2), torch.ones(3, 3), horizon=6,
                uncertainty_cut=0.35)  # fmt: skip
    # disagreement 0.1, 0.2, ...: step 3 (0.4) is the first above 0.35 and is cut after it counts
    assert r.truncated.nonzero()[:, 0].unique().tolist() == [3] and not r.terminated.any()
    assert r.alive[:4].eq(1).all() and r.alive[4:].eq(0).all() and r.reward[4:].eq(0).all()
    value = torch.arange(7.0)[:, None].expand(7, 3)  # a recognisable critic
    _, ret = generalized_advantages(r.reward, value, r.terminated, gamma=0.5, lam=1.0, truncated=r.truncated)
    torch.testing.assert_close(ret[3], r.reward[3] + 0.5 * value[4])  # bootstrapped at the cut
    torch.testing.assert_close(ret[2], r.reward[2] + 0.5 * ret[3])  # and nothing beyond it flows back


def test_the_action_std_floor_keeps_exploration_alive():
    from modules.policies.actor_critic import ActorCritic

    ac = ActorCritic(obs_dim=3, latent_dim=1, act_dim=2, min_std=0.2)
    with torch.no_grad():
        ac.log_std.fill_(-5.0)  # where PPO had pushed it
    dist, _ = ac(torch.zeros(4, 3), torch.zeros(4, 1))
    torch.testing.assert_close(dist.stddev, torch.full((4, 2), 0.2))
    assert ActorCritic(3, 1, 2)(torch.zeros(1, 3), torch.zeros(1, 1))[0].stddev.min() > 0.6  # no floor: exp(-0.5)
