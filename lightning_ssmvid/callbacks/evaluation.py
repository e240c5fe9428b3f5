"""The evaluation callback: rollouts (``rollouts``) and, on long-memory data, the memory probes (``memory_probes``) at
the end of validation or test, logged under ``val/`` or ``test/``, with sample videos and ``curves.json``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L

from lightning_ssmvid.callbacks.media import log_to_wandb, write_samples
from lightning_ssmvid.memory_probes import MemoryEvaluator
from lightning_ssmvid.metrics.half_life import horizon_summary, memory_half_lives
from lightning_ssmvid.model import VideoModel
from lightning_ssmvid.rollouts import evaluate_clips
from lightning_ssmvid.utils.files import write_json_atomic


class RolloutEvaluation(L.Callback):
    """At the end of validation (every ``every_n_epochs`` and always at the last epoch), evaluate rollouts on the
    first ``n_clips`` validation videos and, on long-memory data (``gap_bins``), the memory probes on
    ``memory_clips`` validation videos (null: all) with the state read-out fitted on ``memory_fit_clips`` training
    videos (null: all); the same on the test videos at the end of ``trainer.test``; logs ``val/...`` (``test/...``)
    scalars, W&B curves and real|generated sample videos, and writes
    ``curves.json`` in the run folder."""

    def __init__(self, n_clips: int = 4, context: int = 16, horizon: int = 64, every_n_epochs: int = 1,
                 gap_bins: Sequence[int] | None = (), fvd_detector_path: str | None = None,
                 fvd_detector_sha256: str | None = None, fvd_frames: int = 16, max_events_per_clip: int = 8,
                 n_samples: int = 2, fps: float = 24, output_dir: str | None = None,
                 memory_clips: int | None = None, memory_fit_clips: int | None = None, palette_size: int = 8):
        self.n_clips, self.every_n_epochs, self.n_samples, self.fps = n_clips, every_n_epochs, n_samples, fps
        self.memory_clips, self.memory_fit_clips, self.palette_size = memory_clips, memory_fit_clips, palette_size
        self.output_dir = Path(output_dir) if output_dir else None
        self.evaluator_kwargs = dict(context=context, horizon=horizon, gap_bins=tuple(gap_bins or ()),
                                     fvd_detector_path=fvd_detector_path, fvd_detector_sha256=fvd_detector_sha256,
                                     fvd_frames=fvd_frames, max_events_per_clip=max_events_per_clip)

    def _due(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or self.n_clips <= 0:
            return False
        if trainer.state.fn == "validate":  # make evaluate: always
            return True
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        last_step = 0 < trainer.max_steps <= trainer.global_step
        return bool(last_epoch or last_step or trainer.fast_dev_run
                    or (trainer.current_epoch + 1) % self.every_n_epochs == 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: VideoModel) -> None:
        if self._due(trainer):
            self.evaluate(trainer, pl_module, trainer.datamodule.val_set, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: VideoModel) -> None:
        if self.n_clips > 0:
            self.evaluate(trainer, pl_module, trainer.datamodule.test_set, "test")

    def evaluate(self, trainer: L.Trainer, pl_module: VideoModel, dataset, prefix: str) -> None:
        """Rollouts and memory probes on ``dataset`` (the validation or test clips), logged as ``prefix/...``."""
        datamodule = trainer.datamodule
        kwargs, n_clips = dict(self.evaluator_kwargs, prefix=prefix), self.n_clips
        if trainer.fast_dev_run:  # a wiring check: one clip, one event
            kwargs["max_events_per_clip"], n_clips = 1, 1
        videos = [entry.path for entry in dataset.videos][:n_clips]
        evaluator = evaluate_clips(pl_module, videos, datamodule.frame_size, trainer.global_rank,
                                   trainer.world_size, self.n_samples, datamodule.stride, **kwargs)
        scalars, curves = evaluator.compute()
        if self.evaluator_kwargs["gap_bins"]:
            memory = self.memory_probes(trainer, pl_module, dataset, fast=bool(trainer.fast_dev_run))
            scalars.update(memory.compute(prefix))
            curves["codec_ceiling_per_colour"] = memory.codec_per_colour
        lives = memory_half_lives(pl_module.core)
        if lives is not None:
            scalars.update(horizon_summary(lives, prefix))
            curves["memory_halflife"] = sorted(lives.tolist())
        for key, value in scalars.items():
            if math.isfinite(value):
                pl_module.log(key, value, sync_dist=True)  # equal on every rank (synced metrics): their mean is exact
        if trainer.is_global_zero:
            out = self.output_dir or Path(trainer.default_root_dir)
            videos = write_samples(evaluator.samples, out / "samples" / f"epoch{trainer.current_epoch:03d}", self.fps,
                                   self.evaluator_kwargs["context"])
            log_to_wandb(trainer, scalars, curves, videos, self.fps, lives)
            write_json_atomic(out / "curves.json", {"epoch": trainer.current_epoch, "scalars": scalars, **curves})

    def memory_probes(self, trainer: L.Trainer, pl_module: VideoModel, scored, fast: bool = False) -> MemoryEvaluator:
        """The memory probes (``memory_probes``) over this rank's share of the ``scored`` clips (validation or test),
        the state read-out fitted on the training clips."""
        datamodule, rank, world = trainer.datamodule, trainer.global_rank, trainer.world_size
        limit = lambda videos, n: videos[: (1 if fast else n)]  # noqa: E731  (None: all)
        memory = MemoryEvaluator(self.evaluator_kwargs["gap_bins"], self.palette_size,
                                 pl_module.core.d_model).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        for dataset, n, fit in ((datamodule.train_set, self.memory_fit_clips, True),
                                (scored, self.memory_clips, False)):
            videos = limit([entry.path for entry in dataset.videos], n)[rank::world]
            memory.update(pl_module, videos, datamodule.frame_size, dataset.latents, fit=fit)
        pl_module.train(was_training)
        return memory
