"""RunSummary: the run folder's ``summary.json`` of final and best metrics, rewritten after every validation."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lightning_ssmvid.frames import clip_shape
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.utils.config import code_commit
from lightning_ssmvid.utils.files import write_json_atomic
from lightning_ssmvid.utils.memory import peak_rss_mb


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if math.isnan(value) else float(value)
    return None


class RunSummary(L.Callback):
    """Writes ``summary.json``: run identity, parameter counts, ``final`` and ``best`` ``val/...`` metrics, throughput.

    ``best`` keeps each metric's best value over validations (direction from ``metrics.keys``).
    """

    def __init__(self, path: str, name: str = "", extra: dict | None = None):
        self.path = Path(path)
        self.name, self.extra = name, extra or {}
        self.final: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.train_frames = 0
        self.train_seconds = 0.0
        self._batch_start = 0.0
        self._fit_start = time.perf_counter()
        self.code_commit = code_commit()

    def state_dict(self) -> dict:
        return {"final": self.final, "best": self.best, "train_frames": self.train_frames,
                "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        batch_size, length = clip_shape(batch)
        self.train_frames += batch_size * length

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Throughput (frames/s per process, averaged over processes) and peak memory (the largest process) to the
        loggers, so the dashboards can compare cores on them; every rank logs both (they are collectives)."""
        frames_per_s = self.train_frames / self.train_seconds if self.train_seconds else 0.0
        pl_module.log(keys.TRAIN_FRAMES_PER_S, frames_per_s, sync_dist=True)
        pl_module.log(keys.PEAK_RSS_MB, peak_rss_mb(), sync_dist=True, reduce_fx="max")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            number = _number(value)
            if not key.startswith("val/") or number is None:
                continue
            self.final[key] = number
            self.best[key] = keys.best_of(key, self.best.get(key, number), number)
        self.write(trainer, pl_module, status="running")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, status="finished")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.write(trainer, pl_module, status=f"failed: {type(exception).__name__}: {exception}")

    @rank_zero_only
    def write(self, trainer, pl_module, status: str) -> None:
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        summary = {
            "name": self.name,
            "status": status,
            "code_commit": self.code_commit,
            **self.extra,
            "params": {"core": count(pl_module.core), "codec": count(pl_module.codec), "total": count(pl_module)},
            "final": self.final,
            "best": self.best,
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": time.perf_counter() - self._fit_start,
            "written_at": time.time(),
            keys.TRAIN_FRAMES_PER_S: self.train_frames / self.train_seconds if self.train_seconds else None,
            keys.PEAK_RSS_MB: peak_rss_mb(),
            "skipped_nonfinite_steps": pl_module.skipped_nonfinite,
            "codec_source": pl_module.codec_source,
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
        }
        write_json_atomic(self.path, summary)
