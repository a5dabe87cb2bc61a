"""`require_finite_loss`: a NaN/inf loss on any rank stops every rank, with one message.

Under DDP a rank that raised on its own loss would leave the others waiting in the next gradient
all-reduce until the process group's timeout. So each training step gathers every rank's loss and
all ranks raise the same ``FloatingPointError``, naming the ranks that saw it (DESIGN §4.5, §4.6).
The gather is one small collective per step, and none in a single process.

Example:
    >>> import torch
    >>> require_finite_loss(None, torch.tensor(0.5), "PPO loss", "at policy iteration 3")
    >>> require_finite_loss(None, torch.tensor(float("nan")), "PPO loss", "at policy iteration 3",
    ...                     {"kl": torch.tensor(2.0)}, "lower the learning rate")
    Traceback (most recent call last):
    ...
    FloatingPointError: PPO loss is nan at policy iteration 3 (kl 2.0); lower the learning rate
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def require_finite_loss(
    module: pl.LightningModule | None,
    loss: torch.Tensor,
    name: str,
    where: str,
    terms: dict[str, torch.Tensor] | None = None,
    advice: str = "",
) -> None:
    """Raise ``FloatingPointError`` on every rank when the scalar ``loss`` is NaN/inf on any rank.

    ``module``: the LightningModule whose step this is; attached to a multi-rank trainer, every rank
    must call this at the same step (one ``torch.distributed.all_gather``); detached (None, or a module stepped by
    hand on one rank's share of work) the check is this process's alone. The message is ``"{name} is
    {value} {where}"``, then ``on rank r of W`` (``ranks r, s of W``) under several ranks, the scalar
    ``terms`` in brackets, ``; {advice}``: value and terms those of the lowest rank that saw it, so
    every rank raises the same text.
    """
    terms = terms or {}
    values = torch.stack([loss.detach().float(), *(t.detach().float() for t in terms.values())])
    trainer = None if module is None or module._trainer is None else module.trainer
    world = 1 if trainer is None else trainer.world_size
    if world > 1:  # torch's own all_gather: Lightning's goes through a deprecated torch function
        gathered = [torch.empty_like(values) for _ in range(world)]
        torch.distributed.all_gather(gathered, values)
        values = torch.stack(gathered)
    else:
        values = values[None]
    bad = (~torch.isfinite(values[:, 0])).nonzero().flatten().tolist()
    if not bad:
        return
    first = values[bad[0]].tolist()
    ranks = f" on rank{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {world}" if world > 1 else ""
    detail = f" ({', '.join(f'{k} {v}' for k, v in zip(terms, first[1:], strict=True))})" if terms else ""
    raise FloatingPointError(f"{name} is {first[0]} {where}{ranks}{detail}{f'; {advice}' if advice else ''}")
