"""`APSModule`: Amortized Policy Search — PPO on imagined rollouts of the meta dynamics model (DESIGN §3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch.distributions import Normal

from common.checkpoints import load_checkpoint
from common.sampling import sample_normal
from common.seeding import IMAGINATION, derive_seed
from common.validation import INTEGER_1, NUMBER, SEED, Range, check_settings, weight
from datamodules.task_buffers import MultiTaskBuffer
from envs import make_family
from modules.methods.gssm_aps.imagination import imagine
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.policies.actor_critic import ActorCritic
from modules.policies.ppo import PPOLearner, PPOSettings, Rollouts

DEFAULT_PPO = PPOSettings(ppo_epochs=8, num_minibatches=8)  # imagination is cheap: many updates (DESIGN §3.4)


@dataclass
class ImaginationSource:
    """What APS imagines from. Deliberately not an ``nn.Module`` attribute of APS: the dynamics
    model is frozen here, and registering it would give DDP unused parameters.

    Attributes:
        model: the meta dynamics model (used under ``no_grad``).
        buffer: real transitions of every training task (start states and contexts).
        task_ids: ``[T]`` the training tasks this rank imagines.
        params: ``[num_tasks, P]`` physics parameters of every training task (for rewards).
    """

    model: MetaDynamicsModel
    buffer: MultiTaskBuffer
    task_ids: torch.Tensor
    params: torch.Tensor


class APSModule(PPOLearner):
    """One policy ``π(a | s, z_c)`` for all tasks, trained by PPO with GAE on imagined rollouts.

    Each training *epoch* is one PPO iteration (CleanRL order): ``on_train_epoch_start`` draws,
    for each of this rank's training tasks, ``rollouts_per_task`` start states from the real buffer
    and ``context_sets_per_task`` random context subsets (sizes uniform in ``[context_min,
    context_size]``), encodes each subset once, takes ``z_c`` per rollout — the mean of
    ``q(z_c | C)`` (``latent="mean"``, what the policy reads at meta-test) or a sample of it
    (``"sample"``, posterior sampling); the rollouts of a task are split evenly over its subsets —
    and imagines ``horizon`` steps of all tasks × rollouts as one batch (:func:`imagination.imagine`,
    with mean or sampled next states, ``next_state``, the reward penalised by ``uncertainty_penalty`` ×
    the model heads' disagreement, and rollouts cut where it exceeds ``uncertainty_cut``); ``training_step`` then runs
    ``ppo.ppo_epochs × ppo.num_minibatches`` clipped-PPO updates (paper eq. 11, :class:`PPOLearner`).
    The running input normaliser of the policy is updated from the start states and latents before
    each imagination, so sampling and updates share it.

    Args:
        env: task family; latent_dim: size of ``z_c`` (the dynamics model's); context_size: the largest
            context drawn (in the Dyna loop the data's ``context_max``, the one context size of training).
        context_sets_per_task: context subsets encoded per task and iteration; must divide
            ``rollouts_per_task``. Encoding a set costs ~16× an imagined step of one rollout at the
            acrobot sizes, so one set per rollout would dominate imagination; the latent is still
            sampled per rollout.
        init_log_std: initial log standard deviation of the actor's Gaussian.
        min_action_std: floor of the actor's standard deviation (0: none). With an entropy bonus
            instead, the std grew without bound on one acrobot seed once the advantages flattened
            (entropy 0.2 → 2.1 over 10 iterations) and the policy decayed to near random.
        uncertainty_penalty: weight of the heads' disagreement subtracted from each imagined reward
            (0: no penalty); uncertainty_cut: the disagreement at which a rollout ends (None: no cut).
        context_min: smallest context drawn; at meta-test the policy acts on ``metatest_context``
            transitions, so drawing near that size trains what is deployed.
        ppo: :class:`modules.policies.ppo.PPOSettings` (or a dict of some of its fields), shared with the
            model-free learners.
        dynamics_checkpoint: standalone use: a model-only (or Dyna) checkpoint whose dynamics
            model and buffers are loaded and frozen.

    Example:
        >>> aps = APSModule(env="acrobot", latent_dim=4, hidden_dim=16)
        >>> aps.policy(torch.zeros(2, 6), torch.zeros(2, 4))[1].shape
        torch.Size([2])
    """

    NON_FINITE_STATES_ADVICE: ClassVar[str] = ("the dynamics model is unstable here: shorten the horizon or train "
                                               "the model longer first")
    RANGES: ClassVar[dict[str, Any]] = {
        "latent_dim": INTEGER_1, "hidden_dim": INTEGER_1, "init_log_std": NUMBER,
        "min_action_std": Range(low=0, special={0: "no floor"}), "horizon": INTEGER_1, "rollouts_per_task": INTEGER_1,
        "context_size": INTEGER_1, "context_min": INTEGER_1, "context_sets_per_task": INTEGER_1,
        "uncertainty_penalty": weight("no penalty"), "uncertainty_cut": Range(low=0, open_low=True, none="no cut"),
        "ppo": PPOSettings, "seed": SEED,
    }  # fmt: skip

    def __init__(
        self,
        env: str = "acrobot",
        latent_dim: int = 8,
        context_size: int = 50,
        hidden_dim: int = 64,
        init_log_std: float = -0.5,
        min_action_std: float = 0.2,
        horizon: int = 50,
        rollouts_per_task: int = 64,
        context_min: int = 25,
        context_sets_per_task: int = 8,
        latent: str = "mean",
        next_state: str = "mean",
        uncertainty_penalty: float = 0.0,
        uncertainty_cut: float | None = 1.0,
        ppo: PPOSettings = DEFAULT_PPO,
        seed: int = 0,
        dynamics_checkpoint: str | None = None,
    ):
        # this call's own arguments, saved explicitly: built by LightningCLI inside the Dyna loop's config,
        # save_hyperparameters() would take the main model's (Lightning 2.6's CLI instantiator context)
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_settings(APSModule, hparams)
        settings = PPOSettings.of(ppo, DEFAULT_PPO)
        hparams["ppo"] = asdict(settings)  # plain data: checkpoints load with weights_only
        super().__init__(settings)
        for name, value in (("latent", latent), ("next_state", next_state)):
            if value not in ("mean", "sample"):
                raise ValueError(f"{name}={value!r}; expected 'mean' or 'sample'")
        if not 1 <= context_min <= context_size:
            raise ValueError(f"context_min={context_min} must lie in [1, context_size={context_size}]")
        if context_sets_per_task < 1 or rollouts_per_task % context_sets_per_task:
            raise ValueError(
                f"context_sets_per_task={context_sets_per_task} must be ≥ 1 and divide "
                f"rollouts_per_task={rollouts_per_task}"
            )
        self.family = make_family(env)
        self.source: ImaginationSource | None = None
        if dynamics_checkpoint is not None:
            latent_dim = self._checkpoint(dynamics_checkpoint, env)["hyper_parameters"]["latent_dim"]
            hparams["latent_dim"] = latent_dim
        self.save_hyperparameters(hparams)
        self.policy = ActorCritic(
            self.family.obs_dim, latent_dim, self.family.act_dim, hidden_dim, init_log_std, min_action_std
        )

    def setup(self, stage: str) -> None:
        # built here, not in __init__: a LightningModule constructed while LightningCLI
        # instantiates this one would inherit this one's hyperparameters (Lightning 2.6)
        if self.source is None and self.hparams.dynamics_checkpoint is not None:
            self.source = self.source_from_checkpoint(self.hparams.dynamics_checkpoint, self.hparams.env)

    def on_fit_start(self) -> None:
        if self.source is not None:
            self.source.model.to(self.device).eval()

    # ---- imagination ----------------------------------------------------------------------
    def imagine_batch(self) -> Rollouts:
        """Imagined rollouts of this rank's tasks with the current policy (see the class docstring)."""
        if self.source is None:
            raise RuntimeError("APSModule has nothing to imagine from: set `source` or give dynamics_checkpoint")
        hp, src = self.hparams, self.source
        device = self.device
        rank = self.trainer.global_rank if self._trainer is not None else 0
        g = torch.Generator().manual_seed(derive_seed(IMAGINATION, hp.seed, self.iterations, rank))
        per_set = hp.rollouts_per_task // hp.context_sets_per_task
        sets = src.task_ids.repeat_interleave(hp.context_sets_per_task)  # [E] task of each context set
        tasks = sets.repeat_interleave(per_set)  # [B] task of each rollout
        ctx_index = src.buffer.sample_index(sets, hp.context_size, g)
        cx, cy = src.buffer.xy(sets, ctx_index)
        ctx_size = torch.randint(hp.context_min, hp.context_size + 1, (len(sets),), generator=g)
        mask = torch.arange(hp.context_size)[None] < ctx_size[:, None]
        start = src.buffer.obs[tasks, src.buffer.sample_index(tasks, 1, g)[:, 0]]
        model = src.model
        with torch.no_grad():
            encoding = model.infer_context(cx.to(device), cy.to(device), mask.to(device))
            q_zc = encoding.q_zc
            q_zc = Normal(q_zc.loc.repeat_interleave(per_set, 0), q_zc.scale.repeat_interleave(per_set, 0))
            latent = q_zc.mean if hp.latent == "mean" else sample_normal(q_zc, g)  # one z_c per rollout
        start = start.to(device)
        self.policy.input_normalizer.update(torch.cat([start, latent], dim=-1), self._sum_over_ranks)
        noise = torch.Generator(device=device).manual_seed(derive_seed(IMAGINATION, hp.seed, self.iterations, rank, 1))
        params = src.params[tasks].to(device)
        return imagine(model, self.policy, self.family, start, encoding, latent, params, hp.horizon, noise, per_set,
                       sample_next=hp.next_state == "sample", uncertainty_penalty=hp.uncertainty_penalty,
                       uncertainty_cut=hp.uncertainty_cut)  # fmt: skip

    collect_rollouts = imagine_batch

    @property
    def samples_per_iteration(self) -> int:
        return self.hparams.horizon * len(self.source.task_ids) * self.hparams.rollouts_per_task

    def log_rollouts(self, r: Rollouts) -> None:
        n = r.reward.shape[1]
        steps = r.alive.sum()
        raw = r.reward + r.penalty  # the family's reward, before the uncertainty penalty
        self.log("policy/imagined_return_over_horizon", raw.sum(0).mean(), batch_size=n, sync_dist=True)
        self.log("policy/imagined_reward_per_step", raw.sum() / steps, batch_size=n, sync_dist=True)
        self.log("policy/model_disagreement", (r.disagreement * r.alive).sum() / steps, batch_size=n, sync_dist=True)
        self.log("policy/uncertainty_penalty_per_step", r.penalty.sum() / steps, batch_size=n, sync_dist=True)
        self.log("policy/imagined_steps_per_rollout", r.alive.sum(0).mean(), batch_size=n, sync_dist=True)

    # ---- standalone use on a frozen model checkpoint -------------------------------------
    @staticmethod
    def _checkpoint(path: str, env: str) -> dict[str, Any]:
        ckpt = load_checkpoint(path)
        saved_env = ckpt.get("hyper_parameters", {}).get("env")
        if saved_env != env or "TransitionDataModule" not in ckpt:
            raise ValueError(
                f"dynamics checkpoint {path!r} is for env {saved_env!r}, not {env!r}, or holds no "
                "TransitionDataModule state; expected a checkpoint of the model-only or Dyna job of this env"
            )
        return ckpt

    @classmethod
    def source_from_checkpoint(cls, path: str, env: str) -> ImaginationSource:
        from datamodules.transition_datamodule import TransitionDataModule

        ckpt = cls._checkpoint(path, env)
        init_args = lambda key: {k: v for k, v in ckpt[key].items() if not k.startswith("_")}  # noqa: E731
        model = MetaDynamicsModel(**init_args("hyper_parameters"))
        model.load_state_dict(ckpt["state_dict"])
        data = TransitionDataModule(**init_args("datamodule_hyper_parameters"))
        data.load_state_dict(ckpt["TransitionDataModule"])
        params = data.family.params_tensor(data.train_tasks)
        return ImaginationSource(model.eval(), data.buffer, torch.arange(len(data.train_tasks)), params)
