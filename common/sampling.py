"""Reparameterised Gaussian samples from an explicit ``torch.Generator``.

Training and imagination draw their noise from generators seeded by ``(run seed, step, rank)``
instead of the global generator, whose use by Lightning's own machinery (dataloader seeds,
sanity checks) differs between a fresh and a resumed run; so a resumed run replays exactly.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal


def sample_normal(dist: Normal, generator: torch.Generator | None) -> torch.Tensor:
    """``loc + scale · ε``, ``ε ~ N(0, I)`` from ``generator`` (the global one if None); differentiable.

    ``ε`` is drawn on the generator's device and moved to ``loc``'s, so a CPU generator can seed
    samples of an accelerator-resident distribution.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a = sample_normal(Normal(torch.zeros(3), torch.ones(3)), g)
        >>> b = sample_normal(Normal(torch.zeros(3), torch.ones(3)), torch.Generator().manual_seed(0))
        >>> torch.equal(a, b)
        True
    """
    device = generator.device if generator is not None else dist.loc.device
    eps = torch.randn(dist.loc.shape, generator=generator, device=device, dtype=dist.loc.dtype)
    return dist.loc + dist.scale * eps.to(dist.loc.device)
