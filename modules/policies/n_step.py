"""`n_step_return`: the discounted sum of the next ``n`` rewards of batched trajectories, cut at an episode's end."""

from __future__ import annotations

import torch


def n_step_return(reward: torch.Tensor, done: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ_{k<m} γ^k r_k`` over the first ``m ≤ n`` steps of time-major ``reward [n, B]``, where ``m`` stops
    after the first step whose ``done [n, B]`` is set (a termination or a time-limit cut: later steps belong to
    the next episode). Returns ``(return [B], m [B])``: an ``n``-step target bootstraps ``γ^m`` times the value of
    the state step ``m − 1`` reached (unless that step terminated).

    Example:
        >>> r, m = n_step_return(torch.ones(3, 2), torch.tensor([[False, True], [False, False], [False, False]]), 0.5)
        >>> r.tolist(), m.tolist()
        ([1.75, 1.0], [3, 1])
    """
    running = torch.cumprod((~done[:-1]).to(reward.dtype), dim=0)
    alive = torch.cat([torch.ones_like(reward[:1]), running])  # [n, B]: step k is in step 0's episode
    discount = gamma ** torch.arange(len(reward), dtype=reward.dtype, device=reward.device)
    return (alive * discount[:, None] * reward).sum(0), alive.sum(0).long()
