"""`EmbeddedDynamics`: M-DPILCO's dynamics — an ensemble MLP that reads a per-task latent embedding."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal

from common.sampling import sample_normal
from modules.blocks import EnsembleMLP, Normalizer


def kl_to_standard_normal(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(log_std)²) ‖ N(0, I))`` summed over the last dimension: ``[..., E]`` → ``[...]``."""
    return 0.5 * (torch.exp(2 * log_std) + mean**2 - 1 - 2 * log_std).sum(-1)


class EmbeddedDynamics(nn.Module):
    """``Δs = f_k([s, a], h)``: ``K`` MLPs (:class:`modules.blocks.EnsembleMLP`) on normalised
    ``[s, a]`` and a task embedding ``h``, predicting the normalised ``s' − s`` with a learned Gaussian
    noise std per state dimension (Deep PILCO's BNN with an ensemble in place of dropout masks: a particle
    keeps one member through a rollout, as a Deep PILCO particle keeps its mask). Every training task
    ``j`` has a variational posterior ``q(h_j) = N(μ_j, σ_j²)`` under the prior ``N(0, I)``, learned with
    the model (:meth:`loss`: the negative ELBO per transition); a new task's ``q(h)`` is fitted to its
    transitions by gradient steps on the ELBO with the weights fixed (:meth:`infer`; Sæmundsson et al.,
    UAI 2018).

    Shapes: ``x [..., O + A]`` raw ``[s, a]``, ``y [..., O]`` raw ``s' − s``, ``h [..., E]``; the
    member-wise methods take a leading ``[K]`` (member ``k`` on its own rows).

    Example:
        >>> model = EmbeddedDynamics(obs_dim=2, act_dim=1, num_tasks=3, embedding_dim=2, members=2, hidden_dim=8)
        >>> model.delta_each(torch.zeros(2, 5, 3), torch.zeros(2, 5, 2)).shape
        torch.Size([2, 5, 2])
        >>> mask = torch.ones(4, 6, dtype=torch.bool)
        >>> model.infer(torch.randn(4, 6, 3), torch.randn(4, 6, 2), mask, steps=3).mean.shape
        torch.Size([4, 2])
    """

    def __init__(self, obs_dim: int, act_dim: int, num_tasks: int, embedding_dim: int = 4, members: int = 4,
                 hidden_dim: int = 200, layers: int = 2, min_log_noise: float = -7.0):  # fmt: skip
        super().__init__()
        if embedding_dim < 1 or num_tasks < 1:
            raise ValueError(f"EmbeddedDynamics: embedding_dim={embedding_dim}, num_tasks={num_tasks}; expected >= 1")
        self.obs_dim, self.act_dim, self.embedding_dim = obs_dim, act_dim, embedding_dim
        self.net = EnsembleMLP(members, obs_dim + act_dim + embedding_dim, hidden_dim, obs_dim, layers)
        self.log_noise = nn.Parameter(torch.zeros(obs_dim))  # in normalised target units
        self.min_log_noise = min_log_noise
        self.task_mean = nn.Parameter(torch.zeros(num_tasks, embedding_dim))
        self.task_log_std = nn.Parameter(torch.full((num_tasks, embedding_dim), math.log(0.1)))
        self.x_normalizer = Normalizer(obs_dim + act_dim)
        self.y_normalizer = Normalizer(obs_dim)

    @property
    def members(self) -> int:
        return self.net.members

    def task_posterior(self, tasks: torch.Tensor) -> Normal:
        """``q(h_j)`` of training tasks ``tasks [...]`` → a Normal ``[..., E]``."""
        return Normal(self.task_mean[tasks], self.task_log_std[tasks].exp())

    def _inputs(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.x_normalizer.normalize(x), h], -1)

    def delta_each(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Raw predicted ``s' − s`` ``[K, N, O]`` of member ``k`` on its rows ``x [K, N, O + A]``, ``h [K, N, E]``."""
        return self.y_normalizer.denormalize(self.net.each(self._inputs(x, h)))

    def _log_likelihood(self, mean: torch.Tensor, y_norm: torch.Tensor) -> torch.Tensor:
        """Gaussian log density of normalised targets under normalised predictions ``mean``, summed over state dims."""
        log_noise = self.log_noise.clamp_min(self.min_log_noise)
        z = (y_norm - mean) / log_noise.exp()
        return (-0.5 * z**2 - log_noise - 0.5 * math.log(2 * math.pi)).sum(-1)

    def loss(self, x: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor, kl_tasks: torch.Tensor,
             sizes: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """The negative ELBO per transition of a minibatch whose rows draw a task uniformly from
        ``kl_tasks``, then one of its transitions; member ``k`` on its own rows.

        Args:
            x: ``[K, B, O + A]``; y: ``[K, B, O]``; tasks: ``[K, B]`` each row's training task.
            kl_tasks: ``[J]`` the tasks the rows are drawn from (this rank's); sizes: ``[J]`` how many
                transitions each has.
        Returns:
            ``loss`` (``nll + kl``), ``nll`` (per transition, mean over members), ``kl``
            (``mean_j KL_j / n_j``: each task's ELBO per transition, as the rows weight them) and
            ``mse`` (normalised, of the members' means).
        """
        h = sample_normal(self.task_posterior(tasks), generator)
        mean = self.net.each(self._inputs(x, h))
        y_norm = self.y_normalizer.normalize(y)
        nll = -self._log_likelihood(mean, y_norm).mean()
        kl = (kl_to_standard_normal(self.task_mean[kl_tasks], self.task_log_std[kl_tasks]) / sizes.clamp_min(1)).mean()
        mse = ((y_norm - mean) ** 2).mean()
        return {"loss": nll + kl, "nll": nll, "kl": kl, "mse": mse.detach()}

    def infer(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, steps: int = 50, lr: float = 0.1,
              generator: torch.Generator | None = None) -> Normal:  # fmt: skip
        """``q(h) = N(μ, σ²)`` of ``T`` new tasks from their transitions ``x [T, N, O + A]``, ``y [T, N, O]``
        (those where ``mask [T, N]``): ``steps`` Adam steps on the negative ELBO ``−Σ_n E_q[log p(y_n | x_n, h)]
        + KL(q ‖ N(0, I))`` (the likelihood averaged over members, one reparameterised sample a step),
        from the prior; the weights are fixed. A task without transitions keeps the prior."""
        t, n = x.shape[:2] if x.ndim == 3 else (None, None)
        expected = {"x": (t, n, self.obs_dim + self.act_dim), "y": (t, n, self.obs_dim), "mask": (t, n)}
        for name, tensor in (("x", x), ("y", y), ("mask", mask)):
            if t is None or tuple(tensor.shape) != expected[name]:
                raise ValueError(f"EmbeddedDynamics.infer: context {name} of shape {tuple(tensor.shape)}; expected "
                                 f"{expected[name]} (tasks, transitions{', features' if name != 'mask' else ''})")
        if steps == 0 or n == 0 or not mask.any():
            prior = torch.zeros(t, self.embedding_dim, device=x.device)
            return Normal(prior, torch.ones_like(prior))
        with torch.inference_mode(False), torch.enable_grad():  # also inside the meta-test's no_grad and `test`
            mean = torch.zeros(t, self.embedding_dim, device=x.device, requires_grad=True)
            log_std = torch.zeros(t, self.embedding_dim, device=x.device, requires_grad=True)
            optimizer = torch.optim.Adam([mean, log_std], lr=lr)
            x_norm, y_norm = self.x_normalizer.normalize(x), self.y_normalizer.normalize(y)  # once, not every step
            weight = mask.to(x.dtype)
            for _ in range(steps):
                h = sample_normal(Normal(mean, log_std.exp()), generator)  # [T, E]
                inputs = torch.cat([x_norm, h[:, None].expand(-1, n, -1)], -1)
                log_lik = self._log_likelihood(self.net(inputs), y_norm).mean(0)  # [T, N]
                elbo = (log_lik * weight).sum(1) - kl_to_standard_normal(mean, log_std)
                grads = torch.autograd.grad(-elbo.sum(), [mean, log_std])  # the model's .grad stays untouched
                mean.grad, log_std.grad = grads
                optimizer.step()
        return Normal(mean.detach(), log_std.detach().exp())
