"""Write an experiment's data set without training: ``python -m lightning_ssmvid.data.prepare experiment=NAME``."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_ssmvid.utils.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    print(f"data ready in {datamodule.dataset_dir}: {len(datamodule.train_set.videos)} train, "
          f"{len(datamodule.val_set.videos)} val videos; skipped {datamodule.skipped or 'none'}")


if __name__ == "__main__":
    main()
