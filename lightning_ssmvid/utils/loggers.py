"""Loggers: W&B offline unless the user has credentials or chose a mode."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    """An API key in ``WANDB_API_KEY``, or a netrc entry (``wandb login``) for the W&B server in use."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    if wandb_server_host() in hosts:
        return True
    # with a chosen server (WANDB_BASE_URL) only its own entry counts
    return "WANDB_BASE_URL" not in os.environ and any("wandb" in host for host in hosts)


def wandb_server_host() -> str | None:
    """The host of the W&B server ``wandb login`` writes credentials for (``WANDB_BASE_URL`` or wandb's default)."""
    base_url = os.environ.get("WANDB_BASE_URL")
    if base_url is None:
        import wandb

        base_url = wandb.Settings().base_url
    return urlparse(base_url).hostname


def wandb_mode() -> str:
    """``WANDB_MODE`` when set, else ``online`` with credentials and ``offline`` without."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")


WANDB_PROJECT = "lightning_ssmvid"  # the default project (conf/logger/wandb.yaml), of sweeps and dashboards too

# W&B run summaries keep the best value of these (the last value is in the history and in summary.json)
SUMMARIES = {"val/loss": "min", "val/latent_mse": "min", "val/flow_mse": "min", "val/pixel_mse": "min", "val/recon_mse": "min",
             "val/fvd*": "min", "val/psnr*": "max", "val/ssim*": "max", "val/recall*": "max"}


def wandb_logger(save_dir: str, **kwargs) -> WandbLogger:
    """A ``WandbLogger`` in the mode ``wandb_mode()`` picks; kwargs go to ``WandbLogger``/``wandb.init``."""
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    mode = wandb_mode()
    logger = WandbLogger(save_dir=save_dir, offline=mode == "offline", mode=mode, **kwargs)
    experiment = logger.experiment  # a dummy on ranks > 0
    if hasattr(experiment, "define_metric"):
        for pattern, summary in SUMMARIES.items():
            experiment.define_metric(pattern, summary=summary)
    return logger


def finish_wandb(loggers: list) -> None:
    """End the W&B run of any ``WandbLogger`` in ``loggers``, so that multirun jobs and sweep agents never merge runs."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()
