"""Lightning callbacks of mbmrl."""

from callbacks.dyna_loop import DynaLoop
from callbacks.held_out_early_stopping import HeldOutEarlyStopping
from callbacks.normalizer_fitting import NormalizerFitting
from callbacks.preemption import PreemptionSignal
from callbacks.task_latent_logger import TaskLatentLogger

__all__ = ["DynaLoop", "HeldOutEarlyStopping", "NormalizerFitting", "PreemptionSignal", "TaskLatentLogger"]
