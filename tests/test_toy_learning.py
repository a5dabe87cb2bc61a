"""A real learning test: on 1-D linear systems ``Δs = w·a`` (``w`` differs per task) the model
must predict a *new* task from its context far better than any context-free predictor."""

from __future__ import annotations

import pytest
import torch

import envs
from datamodules import ContextTargetStream, MultiTaskBuffer
from envs.family import TaskFamily
from modules import MetaDynamicsModel
from modules.models.meta_dynamics_net import VARIANTS


class LinearToyFamily(TaskFamily):
    """Only the sizes matter to the model; no env is stepped in this test."""

    name = "toy_linear"
    param_names = ("w",)
    obs_dim = 1
    act_dim = 1

    def test_tasks(self):
        return []

    def reward(self, obs, action, next_obs, params):
        return torch.zeros(obs.shape[:-1])

    def terminated(self, next_obs, params):
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool)


def linear_tasks(num_tasks: int, steps: int, seed: int) -> MultiTaskBuffer:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(num_tasks, 1, 1, generator=g) * 4 - 2
    obs = torch.randn(num_tasks, steps, 1, generator=g)
    act = torch.rand(num_tasks, steps, 1, generator=g) * 2 - 1
    nxt = obs + w * act + 0.01 * torch.randn(num_tasks, steps, 1, generator=g)
    buf = MultiTaskBuffer(num_tasks, steps, 1, 1)
    buf.add(
        torch.arange(num_tasks),
        obs,
        act,
        torch.zeros(num_tasks, steps),
        nxt,
        torch.zeros(num_tasks, steps, dtype=torch.bool),
    )
    return buf


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_learns_a_new_task_from_its_context(variant, monkeypatch):
    monkeypatch.setitem(envs.FAMILIES, "toy_linear", LinearToyFamily)
    torch.manual_seed(0)
    train, test = linear_tasks(128, 200, seed=0), linear_tasks(32, 200, seed=1)
    model = MetaDynamicsModel("toy_linear", variant, hidden_dim=32, latent_dim=4, num_heads=2, lr=3e-3,
                              prior_weight=0.0, latent_decoder_weight=0.0, ensemble_size=1)  # fmt: skip
    model.x_normalizer.fit(train.all_xy()[0])
    model.y_normalizer.fit(train.all_xy()[1])
    stream = ContextTargetStream(train, torch.arange(128), 400, 16, 3, 20, 20, seed=0)
    opt = model.configure_optimizers()
    for batch in stream:
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    ids = torch.arange(32)
    g = torch.Generator().manual_seed(2)
    cx, cy = test.xy(ids, test.sample_index(ids, 20, g))
    tx, ty = test.xy(ids, test.sample_index(ids, 100, g))
    model.eval()
    with torch.no_grad():
        pred = model.predict(tx, model.infer_context(cx, cy)).mean - tx[..., :1]
        wrong = model.predict(tx, model.infer_context(cx.roll(1, 0), cy.roll(1, 0))).mean - tx[..., :1]
    mse = ((pred - ty) ** 2).mean()
    mse_wrong_context = ((wrong - ty) ** 2).mean()
    # best context-free predictor: one least-squares slope for all tasks
    x_all, y_all = test.all_xy()
    coef = torch.linalg.lstsq(x_all, y_all).solution
    baseline = ((x_all @ coef - y_all) ** 2).mean()
    assert mse < 0.1 * baseline, (variant, float(mse), float(baseline))
    assert mse_wrong_context > 5 * mse, (variant, float(mse_wrong_context), float(mse))
