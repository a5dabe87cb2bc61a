"""`DynaProgress`: where the Dyna loop stands, what its checkpoint holds, and how a resume goes on (DESIGN §4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.preemption import PreemptionSignal, save_last
from common.clock import synchronized_clock
from common.rng_state import restore_rng_state, rng_state
from common.validation import require_bounded_epochs
from datamodules.collection import Transitions
from modules.methods.gssm_aps.aps import APSModule


class DynaProgress:
    """The Dyna loop's place in the run. Its :meth:`state_dict` (with the APS weights, optimizer and
    the torch RNG states) is part of every Lightning checkpoint, so ``fit --ckpt_path`` continues
    where the run stopped: a checkpoint written at a safe point mid-iteration (after the policy
    phase) resumes with the phases left, from the RNG state saved there.

    Attributes:
        iteration: Dyna iterations begun (counted at the end of the model's epoch).
        real_transitions: real training transitions so far (iteration 0: the random-action data).
        completed: the last completed phase of the current iteration: ``"model"``, ``"policy"``
            or ``"iteration"``; running: the phase in progress (for error messages).
        metrics: the current iteration's scalars, logged at its end.
        seconds_total: wall time of the iterations so far, resumes included.
        latest_metatest: ``(iteration, interpolation, extrapolation)`` reward per step of this
            process's last meta-test (a split with no task selected: None).

    Example:
        >>> progress = DynaProgress()
        >>> progress.start_model_phase(buffered=120); progress.end_model_phase()
        >>> with progress.phase("collect", clock="collect"):
        ...     pass
        >>> progress.iteration, progress.completed, sorted(progress.metrics)
        (1, 'model', ['time/collect_seconds', 'time/model_seconds'])
    """

    def __init__(self) -> None:
        self.iteration, self.real_transitions = 0, 0
        self.completed, self.running = "iteration", "model"
        self.metrics: dict[str, float] = {}
        self.seconds_total = 0.0
        self.latest_metatest: tuple[int, float | None, float | None] | None = None
        self.save_pending = False  # a resumed iteration finished in on_fit_start, not yet in last.ckpt
        self._rng: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # to restore on a resume
        self._model_start = 0.0

    # ---- checkpoint ---------------------------------------------------------------------------
    def state_dict(self, aps: APSModule) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "real_transitions": self.real_transitions,
            "aps": aps.state_dict(),
            "aps_hparams": dict(aps.hparams),  # plain data: test-time methods rebuild the policy from it
            "aps_optimizer": aps.optimizer_state_dict(),
            "aps_iterations": aps.iterations,
            "completed": self.completed,
            "seconds_total": self.seconds_total,
            "metrics": dict(self.metrics),
            **dict(zip(("torch_rng", "cuda_rng"), rng_state(), strict=True)),
        }

    def load_state_dict(self, state: dict[str, Any], aps: APSModule) -> None:
        self.iteration, self.real_transitions = state["iteration"], state["real_transitions"]
        aps.load_state_dict(state["aps"])
        aps.load_optimizer_state_dict(state["aps_optimizer"])
        aps.iterations = state["aps_iterations"]
        self.completed, self.metrics = state["completed"], dict(state["metrics"])
        self.seconds_total = state["seconds_total"]
        self._rng = (state["torch_rng"], state["cuda_rng"])

    # ---- resume -------------------------------------------------------------------------------
    def resume(self, trainer: pl.Trainer, finish_iteration: Callable[[], None]) -> None:
        """At the start of a fit from a checkpoint (every rank; nothing otherwise): drop history lines
        from beyond it (rank 0) and, if it was written mid-iteration, ``finish_iteration`` from its RNG
        state; that iteration's ``last.ckpt`` follows in :meth:`save_resumed_iteration`."""
        if self._rng is None:
            return
        if trainer.is_global_zero:
            trim_history(Path(trainer.log_dir or trainer.default_root_dir), self.real_transitions)
        if self.completed != "iteration":
            self.restore_rng()
            finish_iteration()
            self._rng, self.save_pending = rng_state(), True  # saved once Lightning has restored the optimizers

    def restore_rng(self) -> None:
        """The global RNG state the uninterrupted run would have now (once; a no-op after)."""
        if self._rng is not None:
            restore_rng_state(*self._rng)
            self._rng = None

    def save_resumed_iteration(self, trainer: pl.Trainer) -> None:
        """``last.ckpt`` of the iteration :meth:`resume` finished, with its RNG state (every rank; once)."""
        if self.save_pending:
            self.restore_rng()
            self.save_pending = False
            save_last(trainer)

    # ---- the iteration ------------------------------------------------------------------------
    def start_model_phase(self, buffered: int) -> None:
        """The model's epoch begins; ``buffered``: the transitions in the buffers (the first time: iteration 0's)."""
        if self.real_transitions == 0:
            self.real_transitions = buffered
        self.running, self._model_start = "model", synchronized_clock()

    def end_model_phase(self) -> None:
        self.iteration += 1
        self.completed = "model"
        self.metrics = {"time/model_seconds": synchronized_clock() - self._model_start}

    @contextmanager
    def phase(self, name: str, clock: str) -> Iterator[None]:
        """Run a phase as ``running``; its wall time goes to ``time/{clock}_seconds``."""
        self.running, start = name, synchronized_clock()
        yield
        self.metrics[f"time/{clock}_seconds"] = synchronized_clock() - start

    def record_collection(self, data: Transitions, returns: torch.Tensor) -> None:
        """The collected transitions ``[K, S, ·]`` (the same on every rank) and this rank's episode returns."""
        self.real_transitions += data.reward.numel()
        if len(returns):  # episodes finished on this rank (those cut by the step budget are not)
            self.metrics["real/episode_return"] = float(returns.mean())
        self.metrics["real/reward_per_step"] = float(data.reward.mean())
        self.metrics["real/transitions"] = float(self.real_transitions)
        self.metrics["dyna/iteration"] = float(self.iteration)

    def record_metatest(self, scalars: dict[str, float]) -> None:
        """A meta-test's scalars (rank 0's; empty on the other ranks)."""
        self.metrics.update(scalars)
        if scalars:
            self.latest_metatest = (self.iteration, scalars.get("metatest/interpolation/reward_per_step"),
                                    scalars.get("metatest/extrapolation/reward_per_step"))  # fmt: skip

    def end_iteration(self) -> dict[str, float]:
        """Close the iteration: its total times; returns its scalars and starts the next one's."""
        self.metrics["time/iteration_seconds"] = sum(v for k, v in self.metrics.items() if k.endswith("_seconds"))
        self.seconds_total += self.metrics["time/iteration_seconds"]
        self.metrics["time/total_seconds"] = self.seconds_total
        self.completed = "iteration"
        metrics, self.metrics = self.metrics, {}
        return metrics


def check_trainer_for_dyna(trainer: pl.Trainer) -> None:
    """The main trainer a Dyna loop can run in: a bounded number of iterations (``max_epochs``), and no
    :class:`PreemptionSignal` of its own (the loop handles SIGTERM/SIGUSR1 at its phase boundaries)."""
    require_bounded_epochs(trainer.max_epochs)
    if any(isinstance(c, PreemptionSignal) for c in trainer.callbacks):
        raise ValueError("callbacks.PreemptionSignal is in trainer.callbacks, but DynaLoop handles SIGTERM/SIGUSR1 "
                         "itself (at its phase boundaries); remove it from the config")  # fmt: skip


def refuse_non_finite_weights(model: dict[str, torch.Tensor], aps: dict[str, torch.Tensor]) -> None:
    """Raise before a checkpoint with non-finite floating-point weights (of the ``model`` or of ``aps``,
    state dicts) is written over a good one.

    Example:
        >>> refuse_non_finite_weights({"w": torch.tensor([1.0, float("nan")]), "steps": torch.tensor(3)}, {})
        Traceback (most recent call last):
        ...
        FloatingPointError: non-finite weights in w; no checkpoint was written
    """
    weights = {**model, **{f"aps.{k}": v for k, v in aps.items()}}
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"non-finite weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                                 "no checkpoint was written")  # fmt: skip


def trim_history(log_dir: Path, real_transitions: int) -> None:
    """Drop ``metatest_history.jsonl`` lines an interrupted run wrote after the checkpoint that is
    being resumed (more real transitions than it holds), so the appended curve has no duplicates."""
    path = log_dir / "metatest_history.jsonl"
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(ln for ln in lines if json.loads(ln)["real_transitions"] <= real_transitions))
