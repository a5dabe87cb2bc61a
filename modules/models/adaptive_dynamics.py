"""`AdaptiveDynamics`: L2A's (GrBAL's) dynamics MLP, meta-trained with MAML to adapt from recent transitions."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from modules.blocks import Normalizer, mlp

Params = dict[str, torch.Tensor]


class AdaptiveDynamics(nn.Module):
    """A deterministic MLP ``Δs = f_θ([s, a])`` on normalised inputs and targets whose weights are adapted
    per environment by ``inner_steps`` SGD steps (step size ``inner_lr``) on the MSE of its last
    ``M`` real transitions (Nagabandi et al., ICLR 2019). :meth:`adapt` returns the adapted weights
    of ``B`` environments at once (``torch.func``: one ``vmap`` over environments of ``grad`` of the
    recent-transition loss), differentiably in ``θ``, so the MAML outer loss
    (:meth:`meta_loss`: the next ``K`` transitions under the adapted weights) trains ``θ`` to be
    adaptable.

    Shapes: ``x [B, N, O + A]`` raw ``[s, a]``, ``y [B, N, O]`` raw ``s' − s``, ``mask [B, N]`` (which of
    the ``N`` recent transitions exist; none: the weights stay ``θ``); adapted weights carry a leading
    ``[B]``.

    Example:
        >>> model = AdaptiveDynamics(obs_dim=2, act_dim=1, hidden_dim=16)
        >>> weights = model.adapt(torch.randn(3, 5, 3), torch.randn(3, 5, 2), torch.ones(3, 5, dtype=torch.bool))
        >>> model.predict(weights, torch.randn(3, 7, 3)).shape
        torch.Size([3, 7, 2])
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 128, layers: int = 2, inner_lr: float = 0.01,
                 inner_steps: int = 1):  # fmt: skip
        super().__init__()
        if inner_steps < 0 or not inner_lr >= 0:
            raise ValueError(f"inner_steps={inner_steps}, inner_lr={inner_lr}: expected non-negative values")
        self.net = mlp(obs_dim + act_dim, hidden_dim, obs_dim, layers)
        self.x_normalizer = Normalizer(obs_dim + act_dim)
        self.y_normalizer = Normalizer(obs_dim)
        self.inner_lr, self.inner_steps = inner_lr, inner_steps

    def weights(self) -> Params:
        """``θ``, the meta-learned initial weights."""
        return dict(self.net.named_parameters())

    def _loss(self, weights: Params, xn: torch.Tensor, yn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked MSE of one environment's normalised transitions ``[N, ·]``."""
        error = ((functional_call(self.net, weights, (xn,)) - yn) ** 2).mean(-1)
        return (error * mask).sum() / mask.sum().clamp_min(1.0)

    def adapt(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> Params:
        """The weights of each of ``B`` environments after the inner steps on its transitions."""
        xn, yn = self.x_normalizer.normalize(x), self.y_normalizer.normalize(y)
        theta = self.weights()

        def inner(xb: torch.Tensor, yb: torch.Tensor, mb: torch.Tensor) -> Params:
            w = theta
            for _ in range(self.inner_steps):
                g = grad(self._loss)(w, xb, yb, mb.float())
                w = {k: w[k] - self.inner_lr * g[k] for k in w}
            return w

        return vmap(inner)(xn, yn, mask)

    def predict(self, weights: Params, x: torch.Tensor) -> torch.Tensor:
        """Raw ``Δs [B, R, O]`` of rows ``x [B, R, O + A]`` under each environment's ``weights``."""
        return self.y_normalizer.denormalize(self._predict_normalized(weights, self.x_normalizer.normalize(x)))

    def _predict_normalized(self, weights: Params, xn: torch.Tensor) -> torch.Tensor:
        """Normalised ``Δs [B, R, O]`` of normalised rows ``xn [B, R, O + A]``, row ``b`` with ``weights[b]``."""
        return vmap(lambda w, xb: functional_call(self.net, w, (xb,)))(weights, xn)

    def meta_loss(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                  query_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """MAML's outer loss: the normalised MSE on ``query [B, K, ·]`` after adapting on ``support
        [B, M, ·]``, and (for reference, no gradient) the same before adapting."""
        weights = self.adapt(support_x, support_y, torch.ones(support_x.shape[:2], dtype=torch.bool,
                                                              device=support_x.device))  # fmt: skip
        qn = self.y_normalizer.normalize(query_y)
        adapted = self._predict_normalized(weights, self.x_normalizer.normalize(query_x))
        with torch.no_grad():
            unadapted = ((self.net(self.x_normalizer.normalize(query_x)) - qn) ** 2).mean()
        return ((adapted - qn) ** 2).mean(), unadapted
