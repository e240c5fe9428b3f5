"""Two-stage training: (1) a shared codec, (2) a latent cache, each content-addressed and skipped when present."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_ssmvid.codecs.pretrain import pretrain_codec
from lightning_ssmvid.data.datamodule import VideoDataModule
from lightning_ssmvid.data.latent_cache import build_latent_cache
from lightning_ssmvid.data.video_folder import ClipDataset, RandomClipSampler, collate_clips
from lightning_ssmvid.utils.checkpoints import read_checkpoint
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.files import config_hash, exclusive_lock, write_json_atomic
from lightning_ssmvid.utils.integrity import damaged, record, sha256, summary

log = logging.getLogger(__name__)


def data_fingerprint(datamodule: VideoDataModule) -> dict:
    """The data folder and every used video's (path, size, mtime): an added or replaced video changes it."""
    root = datamodule.dataset_dir
    videos = [v.path for v in datamodule.train_set.videos + datamodule.val_set.videos]
    return {"root": str(root.resolve()), "frame_size": datamodule.frame_size,
            "videos": [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in videos]}


def codec_identity(cfg: DictConfig, datamodule: VideoDataModule) -> dict:
    """Everything the stage-1 codec depends on: its architecture, its training, the data it sees, the seed."""
    training = OmegaConf.to_container(cfg.stages.codec_training, resolve=True)
    if not training.get("latent_noise"):  # the option's off value: codecs trained before it keep their identity
        training.pop("latent_noise", None)
        training.pop("latent_noise_grid_only", None)
    return {
        "codec": OmegaConf.to_container(cfg.codec, resolve=True),
        "training": training,
        "data": config_hash(data_fingerprint(datamodule), length=16),
        "seed": codec_seed(cfg),
    }


def codec_seed(cfg: DictConfig) -> int:
    """The stage-1 seed: ``stages.codec_training.seed`` (fixed, so every core *and seed* of a comparison shares one
    codec and the seeds vary only the core's training), else the run's seed."""
    seed = cfg.stages.codec_training.get("seed")
    return cfg.seed if seed is None else int(seed)


def ensure_codec(cfg: DictConfig, datamodule: VideoDataModule) -> Path:
    """Stage 1: the codec checkpoint, trained unless the same one exists (or the user gave one)."""
    if cfg.stages.codec_checkpoint:
        path = Path(cfg.stages.codec_checkpoint)
        if not path.is_file():
            raise UserError(f"stages.codec_checkpoint={path} does not exist; "
                            "pass a codec.pt written by stage 1, or null")
        return path
    identity = codec_identity(cfg, datamodule)
    path = Path(cfg.stages.cache_root) / "codecs" / config_hash(identity) / "codec.pt"
    if path.is_file() and codec_intact(path):
        log.info("stage 1 skipped: codec %s exists", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "identity.yaml").write_text(OmegaConf.to_yaml(identity))
    settings = cfg.stages.codec_training
    clips = ClipDataset(datamodule.train_set.videos, settings.clip_length, datamodule.frame_size, datamodule.stride)
    sampler = RandomClipSampler(clips, settings.steps * settings.batch_size, seed=codec_seed(cfg))
    loader = torch.utils.data.DataLoader(clips, batch_size=settings.batch_size, sampler=sampler,
                                         num_workers=datamodule.num_workers, collate_fn=collate_clips)

    log.info("stage 1: training the codec (%d steps) -> %s", settings.steps, path)
    pretrain_codec(instantiate(cfg.codec), loader, path, settings.steps, settings.lr,
                   accelerator=cfg.trainer.accelerator, seed=codec_seed(cfg),
                   foreground_weight=settings.get("foreground_weight", 30.0),
                   latent_noise=settings.get("latent_noise", 0.0),
                   latent_noise_grid_only=bool(settings.get("latent_noise_grid_only", False)))
    write_json_atomic(path.parent / "manifest.json", {"files": record(path.parent, [path])})
    return path


def codec_intact(path: Path) -> bool:
    """A stage-1 codec matches the size and sha256 its manifest recorded (one without a manifest, from an older
    version, must at least open); if not, it is removed with a log line and trained again."""
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        problems = damaged(path.parent, json.loads(manifest.read_text()).get("files", {}))
    else:
        try:
            read_checkpoint(path)
            problems = {}
        except UserError as error:
            problems = {path.name: str(error)}
    if problems:
        log.warning("stage-1 codec %s is damaged: %s; training it again", path, summary(problems))
        path.unlink(missing_ok=True)
    return not problems


def load_codec_state(path: Path) -> dict:
    """The codec weights of a ``codec.pt`` (opened without running code); a file without them is named."""
    state = read_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a codec checkpoint (no state_dict); pass a codec.pt written by stage 1")
    return state


def ensure_latent_cache(cfg: DictConfig, datamodule: VideoDataModule, codec_path: Path) -> Path:
    """Stage 2: every train/val video encoded once with the stage-1 codec (keyed by the codec file's hash)."""
    codec = instantiate(cfg.codec)
    codec.load_state_dict(load_codec_state(codec_path))
    dataset_dir = datamodule.dataset_dir
    key = config_hash({"codec_sha256": sha256(codec_path), "data": data_fingerprint(datamodule)})
    cache_dir = Path(cfg.stages.cache_root) / "latents" / key
    videos = [v.path for v in datamodule.train_set.videos + datamodule.val_set.videos]
    build_latent_cache(codec, dataset_dir, videos, cache_dir, datamodule.frame_size,
                       description=f"stage 2: encoding {len(videos)} videos")
    return cache_dir


def stage_lock(root: Path):
    """One process at a time builds stages under ``root`` (parallel experiments, every rank of a SLURM job)."""
    return exclusive_lock(root / ".stages.lock")


def prepare_two_stage(cfg: DictConfig, datamodule: VideoDataModule, model) -> None:
    """Run stages 1 and 2 as needed, load the shared codec into ``model`` and point the data at the latents."""
    steps = cfg.stages.codec_training.steps
    if not cfg.stages.codec_checkpoint and (not isinstance(steps, int) or steps < 1):  # before any data is made
        raise UserError(f"stages.codec_training.steps={steps}: must be an integer >= 1")
    noise = cfg.stages.codec_training.get("latent_noise", 0.0)
    if not cfg.stages.codec_checkpoint and not (isinstance(noise, (int, float)) and 0 <= noise < math.inf):
        raise UserError(f"stages.codec_training.latent_noise={noise}: must be a number >= 0")
    datamodule.prepare_data()
    datamodule.setup("fit")
    with stage_lock(Path(cfg.stages.cache_root)):
        codec_path = ensure_codec(cfg, datamodule)
        cache_dir = ensure_latent_cache(cfg, datamodule, codec_path)
    model.codec.load_state_dict(load_codec_state(codec_path))
    model.codec_source = str(codec_path)
    datamodule.use_latent_cache(cache_dir)
    log.info("two-stage: codec %s, latents %s", codec_path, cache_dir)
    if getattr(model, "train_snap", 0):
        from lightning_ssmvid.generate import run_codebook

        data = OmegaConf.to_container(cfg.data, resolve=True)
        # its rollouts snap onto the codebook it is trained on (and a categorical head draws its codes)
        model.use_train_codebook(run_codebook(Path(cfg.paths.output_dir), model.codec, data, model.train_snap,
                                              model.train_snap_pooled))
        log.info("two-stage: training on latents snapped onto %d cell centroids", model.train_snap)
