"""Loggers: W&B offline unless the user has credentials or chose a mode."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig


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
SUMMARIES = {"val/loss": "min", "val/latent_mse": "min", "val/flow_mse": "min", "val/residual_loss": "min",
             "val/code_ce": "min", "val/pixel_mse": "min", "val/recon_mse": "min", "val/fvd*": "min",
             "val/psnr*": "max", "val/ssim*": "max", "val/recall*": "max"}


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


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and appends to it under its own header (Lightning's writer deletes it)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``; with ``append=True`` (a resumed run) the folder's ``metrics.csv`` history is kept and
    the new rows are added to it. A run that starts over in a folder with history moves the old file aside to
    ``metrics.<n>.csv`` rather than losing it."""

    def __init__(self, *args, append: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            metrics = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
            if metrics.is_file() and not self.append:
                n = next(i for i in range(1, 10_000) if not metrics.with_name(f"metrics.{i}.csv").exists())
                metrics.rename(metrics.with_name(f"metrics.{n}.csv"))
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def instantiate_loggers(cfg: DictConfig | None, resume_from: dict | None = None) -> list:
    """The loggers of ``cfg.logger``; resuming from checkpoint ``resume_from`` (a loaded dict), the CSV logger appends
    to the folder's history and the W&B logger continues the run whose id the checkpoint recorded."""
    loggers = []
    for node in (cfg or {}).values():
        if node is None or "_target_" not in node:
            continue
        extra = {}
        if resume_from is not None and node["_target_"] == "lightning_ssmvid.utils.loggers.ResumableCSVLogger":
            extra["append"] = True
        run_id = (resume_from or {}).get("wandb_run_id")
        if run_id and node["_target_"] == "lightning_ssmvid.utils.loggers.wandb_logger":
            extra.update(id=run_id, resume="allow")
        loggers.append(instantiate(node, **extra))
    return loggers


def wandb_run_id(loggers: list) -> str | None:
    """The id of the W&B run among ``loggers`` (saved in checkpoints, so a resume continues that run)."""
    ids = (lg.version for lg in loggers if isinstance(lg, WandbLogger))
    return next((i for i in ids if isinstance(i, str) and i), None)  # ranks > 0 hold a dummy experiment


def finish_wandb(loggers: list) -> None:
    """End the W&B run of any ``WandbLogger`` in ``loggers``, so that multirun jobs and sweep agents never merge
    runs."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
