"""Train a video model: ``python -m lightning_ssmvid.train experiment=NAME key=value ...``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_ssmvid.stages import prepare_two_stage
from lightning_ssmvid.utils.config import CONFIG_DIR, instantiate_list

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Build data, model, callbacks, loggers and trainer from ``cfg``, fit, and return the final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    if cfg.stages.mode == "two_stage":
        prepare_two_stage(cfg, datamodule, model)
    elif cfg.stages.mode != "joint":
        raise ValueError(f"stages.mode must be 'joint' or 'two_stage', got {cfg.stages.mode!r}")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                wandb.finish()  # so that multirun jobs and sweep agents never merge runs
    if datamodule.skipped:
        log.warning("videos skipped while loading: %s", datamodule.skipped)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    log.info("finished; outputs in %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
