"""Train a video model: ``python -m lightning_ssmvid.train experiment=NAME key=value ...``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from lightning_ssmvid.stages import prepare_two_stage
from lightning_ssmvid.utils.checkpoints import read_checkpoint
from lightning_ssmvid.utils.config import CONFIG_DIR, instantiate_list
from lightning_ssmvid.utils.errors import UserError, user_errors
from lightning_ssmvid.utils.loggers import finish_wandb, instantiate_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Build data, model, callbacks, loggers and trainer from ``cfg``, fit, and return the final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # DDP's other processes run this too
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    if model.train_snap and cfg.stages.mode != "two_stage":
        raise UserError(f"model.train_snap={model.train_snap} snaps the two-stage latents: it needs stages=two_stage")
    if cfg.stages.mode == "two_stage":
        prepare_two_stage(cfg, datamodule, model)
    elif cfg.stages.mode != "joint":
        raise ValueError(f"stages.mode must be 'joint' or 'two_stage', got {cfg.stages.mode!r}")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_list(cfg.get("callbacks"))
    ckpt_path, resume_from = checkpoint_to_resume(cfg)
    # resuming: metrics.csv gets the new rows and W&B continues the checkpoint's run (offline too)
    loggers = instantiate_loggers(cfg.get("logger"), resume_from=resume_from)
    try:
        for logger in loggers:  # the resolved config as the run's hyper-parameters (W&B groups and filters by them)
            logger.log_hyperparams(model.run_config)
        trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers or False)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path,
                    weights_only=True)  # a checkpoint is a pickle: never run code from one
    finally:
        finish_wandb(loggers)
    if datamodule.skipped:
        log.warning("videos skipped while loading: %s", datamodule.skipped)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    log.info("finished; outputs in %s", output_dir)
    return metrics


# keys a resumed run may change (where it writes, how long it trains) without being another run
RESUMABLE_CHANGES = ("paths", "trainer", "ckpt_path", "auto_resume", "callbacks", "logger")


def checkpoint_to_resume(cfg: DictConfig) -> tuple[str | None, dict | None]:
    """The checkpoint this run resumes from (``ckpt_path``, else ``own_last_checkpoint``) and its contents, read
    once (the loggers need its W&B run id before the trainer loads it)."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path, read_checkpoint(cfg.ckpt_path)
    own = own_last_checkpoint(cfg)
    return (str(own[0]), own[1]) if own else (None, None)


def own_last_checkpoint(cfg: DictConfig) -> tuple[Path, dict] | None:
    """With ``auto_resume``: the run folder's ``checkpoints/last.ckpt`` (and its contents) if it exists and was
    written by this same run config (what a requeued SLURM job finds); a different run's checkpoint there is an
    error, not a resume."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not cfg.get("auto_resume") or not last.is_file():
        return None
    checkpoint = read_checkpoint(last)
    saved = checkpoint.get("run_config") or {}
    ours = OmegaConf.to_container(cfg, resolve=True)
    differ = sorted(k for k in set(saved) | set(ours) if k not in RESUMABLE_CHANGES and saved.get(k) != ours.get(k))
    if differ:
        raise ValueError(f"{last} belongs to a run with other settings ({', '.join(differ)} differ); not resuming it. "
                         "Use another run folder (hydra.run.dir=...), or auto_resume=false to start over here.")
    log.info("resuming from %s (this run folder's own last checkpoint)", last)
    return last, checkpoint


def build_trainer(cfg: DictConfig, **kwargs) -> L.Trainer:
    """``cfg.trainer`` instantiated; asking for devices this machine lacks is an error that says what to do."""
    try:
        return instantiate(cfg.trainer, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        if re.search(r"device|gpu|cuda|mps|tpu|accelerator|backend", str(cause), re.IGNORECASE):
            raise MisconfigurationException(
                f"{cause}\nHint: trainer.accelerator={cfg.trainer.accelerator} trainer.devices={cfg.trainer.devices} "
                "asks for more devices than this machine has. Lower trainer.devices, or run DDP on CPU processes "
                "with trainer.accelerator=cpu (gloo), e.g. trainer=ddp trainer.accelerator=cpu trainer.devices=2."
            ) from cause
        raise


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return ``cfg.optimized_metric`` (what Hydra's Optuna sweeper maximises or minimises), if set."""
    with user_errors():  # a user's mistake: one line, exit status 2
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged: {', '.join(sorted(metrics))}")
    return metrics[name]


if __name__ == "__main__":
    main()
