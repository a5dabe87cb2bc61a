"""`MetaDynamicsModel`: the GSSM (or an MLSM ablation) as a LightningModule (DESIGN §2).

Objective (paper eq. 6, minimised as its negative, per target transition, in nats):

    loss = −ln p_θ(y_t | x_t, z_t) + β · KL[q(z_t | x_t, C) ‖ q(z_c | C)]
           + λ_0 · KL[q(z_c | C) ‖ N(0, I)] + λ_c · (−ln p_θ(y_t | x_t, z = E[z_c]))

with ``z_t ~ q(z_t | x_t, C)`` and ``q(z_t)`` built around the *mean* of ``q(z_c | C)``; ``λ_0``
(``prior_weight``, per task) fixes the latent's scale and ``λ_c`` (``latent_decoder_weight``) makes
the task live in ``z_c``, not only in the attention path (why: DESIGN §2.8). Both are conditioned on
the context only, as in eq. 6 (the target set is *not* added to the context for ``gssm``).
The MLSM variants have no ``z_t``; they use the neural-process bound
``−ln p(y_t | x_t, z) + KL[q(z | C ∪ T) ‖ q(z | C)] / N_t`` with ``z ~ q(z | C ∪ T)``.

The decoder has ``ensemble_size`` heads, each trained on its NLL; the reported MSE is the heads' mean's,
and :meth:`predict_with_disagreement` gives their spread, the model's own error estimate (DESIGN §3).

Inputs ``x = [s, a]`` and targets ``y = s' − s`` are standardised by normalisers saved with the model
(NLL and MSE on the normalised ``y``). The model is given its data: :meth:`fit_normalizers` the
training transitions (from :class:`callbacks.NormalizerFitting`), :meth:`holdout_score` the held-out
batches (:class:`callbacks.HeldOutEarlyStopping` ends the epoch when it stops improving, DESIGN §2.9).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.distributions import Normal, kl_divergence

from common.epoch_means import EpochMeans
from common.finite_loss import require_finite_loss
from common.sampling import sample_normal
from common.seeding import MODEL_STEP, derive_seed
from common.validation import INTEGER_1, SEED, Range, check_settings, weight
from envs import make_family
from modules.blocks import Normalizer
from modules.models.meta_dynamics_net import ContextEncoding, MetaDynamicsNet, Variant
from modules.models.split_scores import SplitScores

SCORES = ("nll", "mse", "kl")
LOGVAR_BOUND_PENALTY = 0.01


class MetaDynamicsModel(pl.LightningModule):
    """Meta dynamics model ``p(s' | s, a, C)`` of one task family, trained on context/target batches.

    Args:
        env: task-family name; fixes observation and action sizes and is checked on load.
        variant: ``"gssm"``, ``"mlsm_v0"`` or ``"mlsm_v1"`` (see :mod:`modules.models.meta_dynamics_net`).
        kl_weight: β on the KL term; prior_weight: λ_0 on ``KL[q(z_c | C) ‖ N(0, I)]`` (gssm);
        latent_decoder_weight: λ_c on the NLL of targets decoded from ``E[z_c]`` alone (gssm); a weight 0: no term.
        lr, weight_decay: AdamW's; lr 0 leaves the weights as they are, weight_decay 0 is no decay.
        ensemble_size: decoder heads; their disagreement is the model's uncertainty.
        seed: the latent noise of step ``k`` on rank ``r`` is seeded by ``(seed, k, r)``: a resume replays it.

    Example:
        >>> model = MetaDynamicsModel(env="acrobot", hidden_dim=32, latent_dim=4)
        >>> enc = model.infer_context(torch.randn(3, 20, 7), torch.randn(3, 20, 6))
        >>> model.predict(torch.randn(3, 5, 7), enc).mean.shape
        torch.Size([3, 5, 6])
    """

    RANGES: ClassVar[dict[str, Range]] = {"hidden_dim": INTEGER_1, "latent_dim": INTEGER_1, "num_heads": INTEGER_1,
        "message_passing_rounds": INTEGER_1, "decoder_layers": INTEGER_1, "ensemble_size": INTEGER_1, "seed": SEED,
        "kl_weight": weight("no KL term"), "prior_weight": weight("no prior term"),
        "latent_decoder_weight": weight("no decoding from z_c alone"), "weight_decay": weight("no weight decay"),
        "lr": weight("the weights stay as they are")}  # fmt: skip

    def __init__(
        self,
        env: str = "acrobot",
        variant: Variant = "gssm",
        hidden_dim: int = 128,
        latent_dim: int = 8,
        message_passing_rounds: int = 2,
        num_heads: int = 4,
        decoder_layers: int = 2,
        kl_weight: float = 1.0,
        prior_weight: float = 0.01,
        latent_decoder_weight: float = 1.0,
        ensemble_size: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ):
        check_settings(MetaDynamicsModel, locals())
        super().__init__()
        self.save_hyperparameters()
        family = make_family(env)
        self.obs_dim, self.act_dim = family.obs_dim, family.act_dim
        self.x_dim = self.obs_dim + self.act_dim
        self.net = MetaDynamicsNet(self.x_dim, self.obs_dim, variant, hidden_dim, latent_dim, message_passing_rounds,
                                   num_heads, decoder_layers, ensemble_size)  # fmt: skip
        self.x_normalizer = Normalizer(self.x_dim)
        self.y_normalizer = Normalizer(self.obs_dim)
        self.eval_scores = SplitScores(SCORES)  # the held-out test tasks' scores (validation, test)
        self._train_terms = EpochMeans()  # the loss terms, logged as epoch means

    # ---- public API for the policy side ---------------------------------------------------
    def infer_context(
        self, context_x: torch.Tensor, context_y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> ContextEncoding:
        """Encode raw context transitions of each task; ``.q_zc`` is ``q(z_c | C)``.

        Args:
            context_x: ``[B, N, obs+act]`` raw ``[s, a]``; context_y: ``[B, N, obs]`` raw ``s' − s``.
            mask: ``[B, N]`` bool, True for real points (None = all real).
        """
        self._check_features("context_x", context_x, self.x_dim)
        self._check_features("context_y", context_y, self.obs_dim)
        if context_x.shape[:-1] != context_y.shape[:-1] or context_x.ndim != 3:
            raise ValueError(f"context_x {tuple(context_x.shape)} and context_y {tuple(context_y.shape)} "
                             "must be [B, N, ·] with the same B and N")  # fmt: skip
        if mask is None:
            mask = torch.ones(context_x.shape[:2], dtype=torch.bool, device=context_x.device)
        return self.net.encode(self.x_normalizer.normalize(context_x), self.y_normalizer.normalize(context_y), mask)

    def predict(
        self,
        x: torch.Tensor,
        encoding: ContextEncoding,
        z_c: torch.Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Normal:
        """Next-state distribution for raw ``x = [s, a]`` ``[B, M, obs+act]`` of each task.

        Args:
            encoding: from :meth:`infer_context` on the same ``B`` tasks.
            z_c: context latent per query ``[B, M, Z]`` or per task ``[B, Z]``
                (posterior sampling); None uses the mean of ``q(z_c | C)``.
            sample: sample the target latent ``z_t`` (gssm, from ``generator``) instead of its mean.

        Returns:
            ``Normal`` over ``s'`` with batch shape ``[B, M, obs]`` in raw units: the heads' mean,
            with the variance of the heads' mixture.
        """
        return self.predict_with_disagreement(x, encoding, z_c, sample, generator)[0]

    def predict_with_disagreement(
        self,
        x: torch.Tensor,
        encoding: ContextEncoding,
        z_c: torch.Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Normal, torch.Tensor]:
        """:meth:`predict` and the heads' disagreement ``[B, M]``: the norm over state dimensions of
        the standard deviation across heads of their mean ``Δs``, in normalised units (0 with one head)."""
        self._check_features("x", x, self.x_dim)
        if z_c is None:
            z_c = encoding.q_zc.mean
        if z_c.ndim == 2:
            z_c = z_c[:, None]
        xn = self.x_normalizer.normalize(x)
        z, _, v = self.net.target_latent(encoding, xn, z_c, sample, generator)
        head_mean, logvar = self.net.decode(xn, z, v)  # [K, B, M, obs]
        mean = head_mean.mean(0)
        spread = (head_mean - mean).square().mean(0)  # the heads' variance; 25× faster than .var(0) on CPU
        var = logvar.exp().mean(0) + spread
        std = var.sqrt() * self.y_normalizer.std
        dist = Normal(x[..., : self.obs_dim] + self.y_normalizer.denormalize(mean), std, validate_args=False)
        return dist, spread.sum(-1).sqrt()

    # ---- objective ------------------------------------------------------------------------
    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO of a context/target batch, and its per-target terms ``[B, N_t]``;
        latent noise from ``generator`` (the global one if None)."""
        terms = self._terms(batch, sample=True, generator=generator)
        hp = self.hparams
        bound_penalty = LOGVAR_BOUND_PENALTY * (self.net.max_logvar.sum() - self.net.min_logvar.sum())
        loss = terms["nll"].mean() + hp.kl_weight * terms["kl"].mean() + bound_penalty
        if "prior_kl" in terms:
            loss = loss + hp.prior_weight * terms["prior_kl"].mean()
        if "latent_nll" in terms:
            loss = loss + hp.latent_decoder_weight * terms["latent_nll"].mean()
        return loss, terms

    def eval_score(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-task NLL, MSE and KL ``[B]`` with latent means (deterministic)."""
        terms = self._terms(batch, sample=False)
        return {k: terms[k].mean(-1) for k in SCORES}

    def _terms(
        self, batch: dict[str, torch.Tensor], sample: bool, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        cx = self.x_normalizer.normalize(batch["context_x"])
        cy = self.y_normalizer.normalize(batch["context_y"])
        tx = self.x_normalizer.normalize(batch["target_x"])
        ty = self.y_normalizer.normalize(batch["target_y"])
        mask = batch["context_mask"]
        n_targets = tx.shape[1]
        enc = self.net.encode(cx, cy, mask)
        q_zc = enc.q_zc
        extra = {}
        if self.net.variant == "gssm":
            z_c = q_zc.mean[:, None]  # q(z_t) around the mean of q(z_c) (DESIGN §2.8)
            z, q_zt, v = self.net.target_latent(enc, tx, z_c, sample, generator)
            kl = kl_divergence(q_zt, Normal(q_zc.loc[:, None], q_zc.scale[:, None])).sum(-1)
            if sample and self.hparams.prior_weight > 0:
                prior = Normal(torch.zeros_like(q_zc.loc), torch.ones_like(q_zc.scale))
                extra["prior_kl"] = kl_divergence(q_zc, prior).sum(-1)[:, None].expand(-1, n_targets)
            if sample and self.hparams.latent_decoder_weight > 0:
                latent_mean, latent_logvar = self.net.decode(tx, z_c.expand_as(z), v)
                extra["latent_nll"] = _gaussian_nll(ty, latent_mean, latent_logvar).mean(0)
        else:
            full_mask = torch.cat([mask, torch.ones_like(mask[:, :n_targets])], dim=1)
            posterior = self.net.encode(torch.cat([cx, tx], 1), torch.cat([cy, ty], 1), full_mask).q_zc
            z_c = (sample_normal(posterior, generator) if sample else posterior.mean)[:, None]
            z, _, v = self.net.target_latent(enc, tx, z_c, sample, generator)
            kl = (kl_divergence(posterior, q_zc).sum(-1) / n_targets)[:, None].expand(-1, n_targets)
        mean, logvar = self.net.decode(tx, z, v)  # [K, B, N_t, Y]
        nll = _gaussian_nll(ty, mean, logvar).mean(0)
        mse = ((ty - mean.mean(0)) ** 2).mean(-1)
        return {"nll": nll, "mse": mse, "kl": kl, **extra}

    # ---- Lightning hooks ------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(MODEL_STEP, self.hparams.seed, self.global_step, self.global_rank))
        loss, terms = self.loss(batch, generator)
        require_finite_loss(self, loss, "model loss", f"at step {self.global_step}",
                            {"nll": terms["nll"].mean(), "kl": terms["kl"].mean()},
                            "check the data for NaN/inf or lower the learning rate")  # fmt: skip
        self.log("model/train/loss", loss, prog_bar=True, batch_size=batch["target_x"].shape[0], sync_dist=True)
        self._train_terms.add({name: value.mean() for name, value in terms.items()})
        return loss

    @torch.no_grad()
    def holdout_score(self, batches: list[dict[str, torch.Tensor]]) -> float:
        """Mean normalised one-step MSE (latent means, heads' mean) over context/target ``batches``
        whose targets the model never trained on (the datamodule's held-out slice)."""
        was_training = self.training
        self.eval()
        try:
            on_device = [{k: v.to(self.device) for k, v in batch.items()} for batch in batches]
            scores = [self._terms(batch, sample=False)["mse"].mean() for batch in on_device]
        finally:
            self.train(was_training)
        return float(torch.stack(scores).mean())

    def on_train_epoch_end(self) -> None:
        """Log the epoch's mean loss terms once (logging five terms a step took a sixth of the
        model phase on 2 CPU cores), averaged over ranks."""
        self._train_terms.log(self, "model/train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """The held-out test tasks' scores, overall and per split (the same batches for ``test``)."""
        self.eval_scores.update(self.eval_score(batch), batch["extrapolation"])

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self.eval_scores.log(self, "model/val")

    def on_test_epoch_end(self) -> None:
        self.eval_scores.log(self, "model/test")

    def on_train_epoch_start(self) -> None:
        """Refuse to train or validate before the normalisers are fitted (or loaded)."""
        if not self.x_normalizer.fitted:
            raise RuntimeError("MetaDynamicsModel's normalisers are not fitted: give the Trainer a "
                               "callbacks.NormalizerFitting, or call fit_normalizers(x, y) before training")

    on_validation_epoch_start = on_train_epoch_start

    def fit_normalizers(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Fit the normalisers on raw training transitions ``x = [s, a]`` ``[N, obs+act]`` and
        ``y = s' − s`` ``[N, obs]``."""
        self.x_normalizer.fit(x.to(self.device))
        self.y_normalizer.fit(y.to(self.device))

    def configure_optimizers(self):
        # fused: one kernel for all 68 tensors, 0.9 instead of 3.1 ms a step on 2 CPU cores
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                 fused=True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        for key in ("env", "variant"):
            if key in saved and saved[key] != self.hparams[key]:
                raise ValueError(
                    f"checkpoint was trained with {key}={saved[key]!r} but this model has "
                    f"{key}={self.hparams[key]!r}; use a config for {saved[key]!r} or a matching checkpoint"
                )

    def _check_features(self, name: str, t: torch.Tensor, expected: int) -> None:
        if t.shape[-1] != expected:
            raise ValueError(f"{name} has feature size {t.shape[-1]} (shape {tuple(t.shape)}); expected {expected} "
                             f"for env {self.hparams.env!r} (obs {self.obs_dim}, action {self.act_dim})")  # fmt: skip


def _gaussian_nll(y: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``−ln N(y | mean, exp(logvar))`` summed over the last dimension (broadcast over heads)."""
    return 0.5 * ((y - mean) ** 2 * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(-1)
