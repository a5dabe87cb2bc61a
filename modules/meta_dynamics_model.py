"""`MetaDynamicsModel`: the GSSM (or an MLSM ablation) as a LightningModule (DESIGN §2).

Objective (paper eq. 6, minimised as its negative, per target transition, in nats):

    loss = −ln p_θ(y_t | x_t, z_t) + β · KL[q(z_t | x_t, C) ‖ q(z_c | C)],  z_t ~ q(z_t | x_t, C)

For ``gssm`` both distributions are conditioned on the context only, exactly as in eq. 6,
so training sees what deployment sees. The target set is *not* added to the context for
``gssm``. The MLSM variants have no ``z_t``; they use the neural-process bound
``−ln p(y_t | x_t, z) + KL[q(z | C ∪ T) ‖ q(z | C)] / N_t`` with ``z ~ q(z | C ∪ T)``.
Inputs ``x = [s, a]`` and targets ``y = s' − s`` are standardised by normalisers that are
saved with the model; NLL and MSE are reported on the normalised ``y``. Validation scores use
latent means (no sampling), so they are deterministic and comparable across variants.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch.distributions import Normal, kl_divergence
from torchmetrics import MeanMetric

from datamodules.seeding import MODEL_STEP, derive_seed
from envs import make_family
from modules.meta_dynamics_net import ContextEncoding, MetaDynamicsNet, Variant
from modules.normalizer import Normalizer
from modules.sampling import sample_normal

# Evaluation scores are torchmetrics whose compute() all-reduces: logged values are already global.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('model/(val|test)")

SPLITS = ("interpolation", "extrapolation")
SCORES = ("nll", "mse", "kl")
LOGVAR_BOUND_PENALTY = 0.01


class MetaDynamicsModel(pl.LightningModule):
    """Meta dynamics model ``p(s' | s, a, C)`` of one task family, trained on context/target batches.

    Args:
        env: task-family name; fixes observation and action sizes and is checked on load.
        variant: ``"gssm"``, ``"mlsm_v0"`` or ``"mlsm_v1"`` (see :mod:`modules.meta_dynamics_net`).
        kl_weight: β on the KL term.
        seed: latent noise of training step ``k`` on rank ``r`` comes from a generator seeded
            with ``(seed, k, r)``, so a resumed run replays the same noise.

    Example:
        >>> model = MetaDynamicsModel(env="acrobot", hidden_dim=32, latent_dim=4)
        >>> enc = model.infer_context(torch.randn(3, 20, 7), torch.randn(3, 20, 6))
        >>> model.predict(torch.randn(3, 5, 7), enc).mean.shape
        torch.Size([3, 5, 6])
    """

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
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        family = make_family(env)
        self.obs_dim, self.act_dim = family.obs_dim, family.act_dim
        self.x_dim = self.obs_dim + self.act_dim
        self.net = MetaDynamicsNet(
            self.x_dim,
            self.obs_dim,
            variant,
            hidden_dim,
            latent_dim,
            message_passing_rounds,
            num_heads,
            decoder_layers,
        )
        self.x_normalizer = Normalizer(self.x_dim)
        self.y_normalizer = Normalizer(self.obs_dim)
        self.eval_scores = torch.nn.ModuleDict(
            {f"{split}_{score}": MeanMetric() for split in ("all", *SPLITS) for score in SCORES}
        )

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
            raise ValueError(
                f"context_x {tuple(context_x.shape)} and context_y {tuple(context_y.shape)} "
                "must be [B, N, ·] with the same B and N"
            )
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
            ``Normal`` over ``s'`` with batch shape ``[B, M, obs]`` in raw units.
        """
        self._check_features("x", x, self.x_dim)
        if z_c is None:
            z_c = encoding.q_zc.mean
        if z_c.ndim == 2:
            z_c = z_c[:, None]
        xn = self.x_normalizer.normalize(x)
        z, _, v = self.net.target_latent(encoding, xn, z_c, sample, generator)
        mean, logvar = self.net.decode(xn, z, v)
        std = (0.5 * logvar).exp() * self.y_normalizer.std
        return Normal(x[..., : self.obs_dim] + self.y_normalizer.denormalize(mean), std, validate_args=False)

    # ---- objective ------------------------------------------------------------------------
    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO of a context/target batch, and its per-target terms ``[B, N_t]``;
        latent noise from ``generator`` (the global one if None)."""
        terms = self._terms(batch, sample=True, generator=generator)
        beta = self.hparams.kl_weight
        bound_penalty = LOGVAR_BOUND_PENALTY * (self.net.max_logvar.sum() - self.net.min_logvar.sum())
        loss = terms["nll"].mean() + beta * terms["kl"].mean() + bound_penalty
        return loss, terms

    def eval_score(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-task NLL, MSE and KL ``[B]`` with latent means (deterministic)."""
        return {k: v.mean(-1) for k, v in self._terms(batch, sample=False).items()}

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
        if self.net.variant == "gssm":
            z_c = (sample_normal(q_zc, generator) if sample else q_zc.mean)[:, None]
            z, q_zt, v = self.net.target_latent(enc, tx, z_c, sample, generator)
            kl = kl_divergence(q_zt, Normal(q_zc.loc[:, None], q_zc.scale[:, None])).sum(-1)
        else:
            full_mask = torch.cat([mask, torch.ones_like(mask[:, :n_targets])], dim=1)
            posterior = self.net.encode(torch.cat([cx, tx], 1), torch.cat([cy, ty], 1), full_mask).q_zc
            z_c = (sample_normal(posterior, generator) if sample else posterior.mean)[:, None]
            z, _, v = self.net.target_latent(enc, tx, z_c, sample, generator)
            kl = (kl_divergence(posterior, q_zc).sum(-1) / n_targets)[:, None].expand(-1, n_targets)
        mean, logvar = self.net.decode(tx, z, v)
        sq = (ty - mean) ** 2
        nll = 0.5 * (sq * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(-1)
        return {"nll": nll, "mse": sq.mean(-1), "kl": kl}

    # ---- Lightning hooks ------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(MODEL_STEP, self.hparams.seed, self.global_step, self.global_rank))
        loss, terms = self.loss(batch, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"model loss is {loss.item()} at step {self.global_step} "
                f"(nll {terms['nll'].mean().item()}, kl {terms['kl'].mean().item()}); "
                "check the data for NaN/inf or lower the learning rate"
            )
        n = batch["target_x"].shape[0]
        self.log("model/train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name in SCORES:
            self.log(f"model/train/{name}", terms[name].mean(), batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update_eval_scores(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_scores("model/val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update_eval_scores(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval_scores("model/test")

    def _update_eval_scores(self, batch: dict[str, torch.Tensor]) -> None:
        scores = self.eval_score(batch)
        extrapolation = batch["extrapolation"]
        for name, value in scores.items():
            self.eval_scores[f"all_{name}"].update(value)
            self.eval_scores[f"interpolation_{name}"].update(value[~extrapolation])
            self.eval_scores[f"extrapolation_{name}"].update(value[extrapolation])

    def _log_eval_scores(self, prefix: str) -> None:
        """Log ``{prefix}/{score}`` and ``{prefix}_{split}/{score}``.

        Runs on every rank: ``MeanMetric.compute()`` all-reduces, so all ranks log the global value.
        """
        for key, metric in self.eval_scores.items():
            split, name = key.split("_", 1)
            if metric.weight > 0 or torch.distributed.is_initialized():
                tag = prefix if split == "all" else f"{prefix}_{split}"
                self.log(f"{tag}/{name}", metric.compute(), prog_bar=key == "all_nll")
            metric.reset()

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        env = getattr(datamodule, "hparams", {}).get("env") if datamodule is not None else None
        if env is not None and env != self.hparams.env:
            raise ValueError(
                f"model.env={self.hparams.env!r} (from the config, or from the checkpoint given as "
                f"--ckpt_path) but data.env={env!r}: model, data and checkpoint must be of the same env"
            )

    def on_train_epoch_start(self) -> None:
        self.refit_normalizers()

    def on_validation_epoch_start(self) -> None:
        if not self.x_normalizer.fitted:
            self.refit_normalizers()

    def refit_normalizers(self) -> None:
        """Refit the normalisers on every training transition the datamodule holds.

        Every rank holds every task's buffer, so all ranks compute identical statistics.
        """
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "model_training_data"):
            raise RuntimeError("MetaDynamicsModel needs a TransitionDataModule to fit its normalisers")
        x, y = datamodule.model_training_data()
        self.x_normalizer.fit(x.to(self.device))
        self.y_normalizer.fit(y.to(self.device))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

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
            raise ValueError(
                f"{name} has feature size {t.shape[-1]} (shape {tuple(t.shape)}); expected {expected} "
                f"for env {self.hparams.env!r} (obs {self.obs_dim}, action {self.act_dim})"
            )
