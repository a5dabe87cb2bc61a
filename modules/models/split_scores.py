"""`SplitScores`: per-task scores of the held-out test tasks, averaged overall and per split."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

SPLITS = ("interpolation", "extrapolation")


class SplitScores(nn.Module):
    """Running means of per-task scores over an epoch, overall and for each test split.

    Args:
        names: the scores, e.g. ``("nll", "mse", "kl")``.

    Example:
        >>> scores = SplitScores(("mse",))
        >>> scores.update({"mse": torch.tensor([1.0, 3.0])}, extrapolation=torch.tensor([False, True]))
        >>> {key: float(metric.compute()) for key, metric in scores.means.items()}
        {'all_mse': 2.0, 'interpolation_mse': 1.0, 'extrapolation_mse': 3.0}
    """

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.means = nn.ModuleDict({f"{split}_{name}": MeanMetric() for split in ("all", *SPLITS) for name in names})

    def update(self, scores: dict[str, torch.Tensor], extrapolation: torch.Tensor) -> None:
        """Add per-task ``scores`` ``{name: [B]}`` of tasks whose split ``extrapolation [B]`` (bool) gives."""
        for name, value in scores.items():
            self.means[f"all_{name}"].update(value)
            self.means[f"interpolation_{name}"].update(value[~extrapolation])
            self.means[f"extrapolation_{name}"].update(value[extrapolation])

    def log(self, module: pl.LightningModule, prefix: str) -> None:
        """``module.log`` ``{prefix}/{name}`` and ``{prefix}_{split}/{name}``, then start over.

        Runs on every rank: ``MeanMetric.compute()`` all-reduces, so all ranks log the global value.
        """
        for key, metric in self.means.items():
            split, name = key.split("_", 1)
            if metric.weight > 0 or torch.distributed.is_initialized():
                tag = prefix if split == "all" else f"{prefix}_{split}"
                module.log(f"{tag}/{name}", metric.compute(), prog_bar=key == "all_nll")
            metric.reset()
