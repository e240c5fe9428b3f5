"""Stage 1 of two-stage training: fit the per-frame autoencoder on frames sampled from the training videos."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_ssmvid.codecs.losses import foreground_weights
from lightning_ssmvid.frames import to_unit

log = logging.getLogger(__name__)


def noised_latents(z: torch.Tensor, latent_noise: float, clean_tail: int = 0) -> torch.Tensor:
    """z (N, L) plus Gaussian noise of per-dim std ``sigma x`` the batch's std of that dim, ``sigma ~ U(0,
    latent_noise)`` per frame: the decoder learns to draw a clean frame from a latent a generator got slightly wrong
    (l-DeTok, "Latent Denoising Makes Good Visual Tokenizers", Yang et al. 2025). Relative to the latent's own
    spread, so the encoder cannot outgrow the noise by scaling its latents up. The last ``clean_tail`` dims (the
    codec's frame-pooled part) stay clean."""
    if not latent_noise:
        return z
    sigma = latent_noise * torch.rand(z.shape[0], 1, device=z.device, dtype=z.dtype)
    noise = sigma * z.detach().std(0, keepdim=True) * torch.randn_like(z)
    if clean_tail:
        noise[:, z.shape[1] - clean_tail :] = 0
    return z + noise


class CodecModule(L.LightningModule):
    """Foreground-weighted reconstruction MSE of every frame of a clip batch (B, T, C, H, W); with
    ``latent_noise`` the decoder reads noised latents (``noised_latents``; with ``latent_noise_grid_only`` the
    frame-pooled dims stay clean)."""

    def __init__(self, codec: nn.Module, lr: float = 2e-3, total_steps: int = 1000, foreground_weight: float = 30.0,
                 latent_noise: float = 0.0, latent_noise_grid_only: bool = False):
        super().__init__()
        if not latent_noise >= 0:
            raise ValueError(f"stages.codec_training.latent_noise must be >= 0, got {latent_noise!r}")
        self.codec, self.lr, self.total_steps, self.foreground_weight = codec, lr, total_steps, foreground_weight
        self.latent_noise = float(latent_noise)
        self.clean_tail = int(getattr(codec, "global_dim", 0)) if latent_noise_grid_only else 0

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = to_unit(batch["frames"]).flatten(0, 1)
        z = noised_latents(self.codec.encode(x), self.latent_noise, self.clean_tail)
        error = (torch.sigmoid(self.codec.decode(z)) - x).square()
        weight = foreground_weights(x, self.foreground_weight)
        loss = (error * weight).mean() / weight.mean()
        mse = error.detach().mean()
        self.log("codec/loss", loss, prog_bar=True)
        self.log("codec/recon_mse", mse)
        self.log("codec/psnr", -10 * torch.log10(mse.clamp_min(1e-10)), prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)
        if self.total_steps < 4:  # too short for a warm-up and a decay (quick checks): a constant rate
            return optimizer
        # at least 2 warm-up steps: OneCycleLR divides by (warm-up steps - 1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=self.total_steps,
                                                       pct_start=max(0.05, 2 / self.total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def pretrain_codec(codec: nn.Module, loader: DataLoader, out_path: Path, steps: int, lr: float,
                   accelerator: str = "cpu", seed: int = 0, foreground_weight: float = 30.0,
                   latent_noise: float = 0.0, latent_noise_grid_only: bool = False) -> dict:
    """Train ``codec`` for ``steps`` batches of clips from ``loader``; save ``{"state_dict", "metrics"}``.

    The file appears atomically, so an interrupted stage leaves nothing that looks finished.
    """
    L.seed_everything(seed, workers=True)
    module = CodecModule(codec, lr=lr, total_steps=steps, foreground_weight=foreground_weight,
                         latent_noise=latent_noise, latent_noise_grid_only=latent_noise_grid_only)
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=CSVLogger(
        out_path.parent, name="codec_log", version=""), callbacks=[RichProgressBar()], enable_checkpointing=False,
        limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=10, gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=loader)
    mse = float(trainer.callback_metrics["codec/recon_mse"])
    metrics = {"recon_mse": mse, "psnr": -10 * math.log10(max(mse, 1e-10)), "steps": trainer.global_step}
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": codec.state_dict(), "metrics": metrics}, tmp)
    tmp.replace(out_path)
    log.info("codec trained: %s -> %s", metrics, out_path)
    return metrics
