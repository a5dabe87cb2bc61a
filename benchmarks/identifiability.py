"""How much of each physics parameter a context reveals at all: ``R²_max`` of a supervised set
encoder (DESIGN §9, identifiability), the yardstick of the task latent's linear probe.

A deep set — an MLP on each standardised transition ``[s, a, Δs]``, the mean over the context, an
MLP to the standardised parameters — is trained by least squares on contexts of many tasks
(collected as the probe's are) and scored, ``1 − SSE/SST`` per parameter, on the probe's held-out
contexts. It is an estimate from below: a better regressor could reveal more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SetRegressor(nn.Module):
    """``(x [T, n, X], y [T, n, Y], mask [T, n]) → [T, P]``: a masked mean of per-transition features.

    Example:
        >>> reg = SetRegressor(in_dim=5, out_dim=2, hidden_dim=8)
        >>> reg(torch.zeros(3, 4, 5), torch.ones(3, 4, dtype=torch.bool)).shape
        torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 128):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                 nn.Linear(hidden_dim, hidden_dim))  # fmt: skip
        self.rho = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                 nn.Linear(hidden_dim, out_dim))  # fmt: skip

    def forward(self, transitions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.float().unsqueeze(-1)
        pooled = (self.phi(transitions) * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.rho(pooled)


def fit_set_regressor(transitions: torch.Tensor, params: torch.Tensor, steps: int = 3000, seed: int = 0,
                      hidden_dim: int = 128) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """Fit on ``transitions [T, n, D]`` → ``params [T, P]``; the last tenth of the tasks is held out
    and the weights of its lowest error kept (early stopping). Random context subsets of at least
    half the size augment the data. Returns the fitted map from raw full contexts ``[T', n', D]`` to
    raw parameters ``[T', P]``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = transitions.flatten(0, 1).mean(0), transitions.flatten(0, 1).std(0).clamp_min(1e-6)
    p_mean, p_std = params.mean(0), params.std(0).clamp_min(1e-6)
    x, y = (transitions - mean) / std, (params - p_mean) / p_std
    t, n = x.shape[:2]
    val = torch.arange(t) >= t - max(t // 10, 1)
    reg = SetRegressor(x.shape[-1], y.shape[-1], hidden_dim)
    opt = torch.optim.Adam(reg.parameters(), lr=1e-3)
    full = torch.ones(int(val.sum()), n, dtype=torch.bool)
    best, best_state = float("inf"), None
    for step in range(steps):
        rows = (~val).nonzero().squeeze(1)[torch.randint(int((~val).sum()), (256,), generator=g)]
        sizes = torch.randint(n // 2, n + 1, (len(rows), 1), generator=g)
        mask = torch.rand(len(rows), n, generator=g).argsort(1) < sizes
        loss = ((reg(x[rows], mask) - y[rows]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 99:
            with torch.no_grad():
                err = float(((reg(x[val], full) - y[val]) ** 2).mean())
            if err < best:
                best, best_state = err, {k: v.clone() for k, v in reg.state_dict().items()}
    reg.load_state_dict(best_state)
    reg.eval()

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mask = torch.ones(inputs.shape[:2], dtype=torch.bool)
            return reg((inputs - mean) / std, mask) * p_std + p_mean

    return predict


def r2_max(train_transitions: torch.Tensor, train_params: torch.Tensor, test_transitions: torch.Tensor,
           test_params: torch.Tensor, names: list[str], seed: int = 0, steps: int = 3000,
           hidden_dim: int = 128) -> dict[str, float]:  # fmt: skip
    """``{parameter: R²}`` on the test contexts of a :class:`SetRegressor` fitted on the training ones."""
    pred = fit_set_regressor(train_transitions, train_params, steps, seed, hidden_dim)(test_transitions).double()
    p = test_params.double()
    sse = ((pred - p) ** 2).sum(0)
    sst = ((p - p.mean(0)) ** 2).sum(0)
    return {name: float(1 - sse[j] / sst[j]) for j, name in enumerate(names)}
