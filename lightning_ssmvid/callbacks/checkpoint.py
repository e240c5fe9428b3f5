"""``ModelCheckpoint`` whose ``last.ckpt`` is always the last state.

Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint was written at the same step: once the monitored
loss stops improving, ``last.ckpt`` silently stays at the best epoch, and a resumed run goes back in time.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """The best checkpoints by ``monitor`` (``save_top_k``) and, with ``save_last``, the last one whenever Lightning
    would consider saving (train epoch end or validation end, as it chooses)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skipped: saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
