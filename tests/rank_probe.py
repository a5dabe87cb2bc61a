"""Test helper callback: after fit, each rank writes fingerprints of what it holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytorch_lightning as pl
import torch


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankProbe(pl.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.streamed_tasks: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.streamed_tasks |= set(batch["task_index"].tolist())

    def on_fit_end(self, trainer, pl_module) -> None:
        loop = next(cb for cb in trainer.callbacks if type(cb).__name__ == "DynaLoop")
        buffer = trainer.datamodule.buffer
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps(
                {
                    "world_size": trainer.world_size,
                    "gssm": fingerprint(pl_module.state_dict()),
                    "aps": fingerprint(loop.aps.state_dict()),
                    "buffer": fingerprint(buffer.state_dict()),
                    "sizes": buffer.size.tolist(),
                    "streamed_tasks": sorted(self.streamed_tasks),
                }
            )
        )
