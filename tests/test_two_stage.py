"""Two-stage training: shared codec, latent cache reuse and invalidation, generation without the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from lightning_ssmvid.model import load_model
from lightning_ssmvid.train import train
from lightning_ssmvid.utils.errors import UserError
from tests.helpers import LONG_MEMORY_TINY

TWO_STAGE = [*LONG_MEMORY_TINY, "stages=two_stage", "stages.codec_training.steps=4",
             "stages.codec_training.batch_size=2", "trainer.max_epochs=1"]


def run(compose_cfg, tmp_path: Path, out: str, *overrides: str) -> tuple[Path, dict]:
    cfg = compose_cfg(*TWO_STAGE, *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / out)
        cfg.stages.cache_root = str(tmp_path / "cache")
    train(cfg)
    return tmp_path / out, json.loads((tmp_path / out / "summary.json").read_text())


def files_with_mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_stages_chain_are_reused_and_invalidated(compose_cfg, tmp_path):
    run_dir, summary = run(compose_cfg, tmp_path, "first")
    cache = tmp_path / "cache"
    codecs = list((cache / "codecs").glob("*/codec.pt"))
    latent_dirs = list((cache / "latents").iterdir())
    assert len(codecs) == 1 and len(latent_dirs) == 1
    assert (latent_dirs[0] / "manifest.json").is_file()
    assert summary["codec_source"] == str(codecs[0]) and summary["status"] == "finished"
    assert "val/latent_mse" in summary["final"] and summary["train/frames_per_s"] > 0

    before = files_with_mtimes(cache)
    run(compose_cfg, tmp_path, "second")  # same codec and data: nothing is rebuilt
    after = files_with_mtimes(cache)
    assert {k: v for k, v in after.items() if k in before} == before

    run(compose_cfg, tmp_path, "third", "codec.width=8")  # another codec: a new codec and a new latent cache
    assert len(list((cache / "codecs").glob("*/codec.pt"))) == 2
    assert len(list((cache / "latents").iterdir())) == 2

    # the core saw latents of exactly the stage-1 codec, and the checkpoint carries that codec
    model = load_model(str(run_dir / "checkpoints" / "last.ckpt"))
    stage1 = torch.load(codecs[0], weights_only=True)["state_dict"]
    for key, value in stage1.items():
        torch.testing.assert_close(model.codec.state_dict()[key], value)

    shutil.rmtree(cache)  # a two-stage checkpoint generates without the cache
    frames = model.generate(torch.randint(0, 256, (1, 4, 3, 32, 32), dtype=torch.uint8), n_frames=5)
    assert frames.shape == (1, 5, 3, 32, 32) and torch.isfinite(frames).all()


def test_train_snap_trains_on_latents_snapped_onto_the_runs_codebook(compose_cfg, tmp_path, monkeypatch):
    """``model.train_snap=K`` fits K centroids of the stage-1 codec's cells into the run folder; the head learns from
    latents whose cells and pooled dims are centroids (inputs and targets); the checkpoint carries the codebook, and
    its rollouts snap onto it."""
    from lightning_ssmvid.codecs.codebook import CellCodebook
    from lightning_ssmvid.generate import load_checkpoint
    from lightning_ssmvid.heads.mse import MSEHead

    seen, loss = [], MSEHead.loss
    monkeypatch.setattr(MSEHead, "loss", lambda self, h, z, z_next, generator=None: (
        seen.append((z.detach().clone(), z_next.detach().clone())) or loss(self, h, z, z_next, generator)))
    run_dir, summary = run(compose_cfg, tmp_path, "snapped", "codec.latent_dim=24", "codec.global_dim=8",
                           "model.train_snap=8", "model.train_snap_pooled=3")
    path = run_dir / "codebooks" / "cells_k8_pooled3.npz"
    assert path.is_file() and summary["status"] == "finished"
    model = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    book = CellCodebook.load(path, model.codec)
    cells, pooled = {tuple(c.tolist()) for c in book.centroids}, {tuple(p.tolist()) for p in book.pooled}
    assert seen
    for latents in (t for pair in seen for t in pair):
        assert {tuple(c.tolist()) for c in book.cells(latents)} <= cells
        assert {tuple(p.tolist()) for p in latents.reshape(-1, 24)[:, -8:]} <= pooled
    torch.testing.assert_close(model.rollout_snap.centroids, book.centroids)
    path.unlink()  # the codebook travels in the checkpoint: nothing is refitted without the run folder's copy
    model = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert not path.exists()
    torch.testing.assert_close(model.rollout_snap.centroids, book.centroids)
    torch.testing.assert_close(model.rollout_snap.pooled, book.pooled)
    edited = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    edited["train_snap_codebook"]["cells"] = torch.zeros(8, 5)  # not this codec's cells: one error, not a crash
    torch.save(edited, tmp_path / "edited.ckpt")
    with pytest.raises(UserError, match="does not fit this codec"):
        load_model(str(tmp_path / "edited.ckpt"))
    with torch.no_grad():
        z = model.codec.encode(torch.rand(1, 4, 3, 32, 32))
        z_hat, state = model.predict_latents(z)
        generated = list(model.rollout_latents(z_hat[:, -1], state, 4))
        torch.testing.assert_close(z_hat, model.predict_latents(book(z))[0])  # real frames are read snapped too
    assert all({tuple(c.tolist()) for c in book.cells(z)} <= cells for z in generated)


def test_a_categorical_head_learns_the_runs_codebook_and_draws_only_its_codes(compose_cfg, tmp_path):
    from lightning_ssmvid.generate import load_checkpoint

    run_dir, summary = run(compose_cfg, tmp_path, "categorical", "codec.latent_dim=24", "codec.global_dim=8",
                           "head=categorical", "head.width=4", "head.loss_frames=3", "model.train_snap=8",
                           "model.train_snap_pooled=3")
    assert summary["status"] == "finished" and "val/code_ce" in summary["final"]
    model = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    book = model.rollout_snap
    torch.testing.assert_close(model.head.cell_logits.codes, book.centroids)
    assert model.head.pooled == "mean" and book.pooled is not None  # regressed pooled dims, snapped by the rollout
    context = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    frames = model.generate(context, 5, seed=3)
    torch.testing.assert_close(frames, model.generate(context, 5, seed=3), rtol=0, atol=0)
    with torch.no_grad():
        z_hat, state = model.predict_latents(model.codec.encode(context.float() / 255))
        for z in model.rollout_latents(z_hat[:, -1], state, 4, generator=torch.Generator().manual_seed(0)):
            torch.testing.assert_close(book(z), z, rtol=0, atol=0)  # every draw is a code: snapping moves nothing


def test_user_given_codec_checkpoint_skips_stage_one(compose_cfg, tmp_path):
    run(compose_cfg, tmp_path, "first")
    codec = next((tmp_path / "cache" / "codecs").glob("*/codec.pt"))
    moved = tmp_path / "my_codec.pt"
    shutil.copy(codec, moved)
    shutil.rmtree(tmp_path / "cache" / "codecs")
    _, summary = run(compose_cfg, tmp_path, "second", f"stages.codec_checkpoint={moved}")
    assert summary["codec_source"] == str(moved)
    assert not (tmp_path / "cache" / "codecs").exists()


def test_latent_noise_off_keeps_the_codec_identity_and_on_changes_it(compose_cfg, monkeypatch):
    """Codecs trained before ``latent_noise`` existed are still found; a noised codec is a different codec."""
    import lightning_ssmvid.stages as stages
    from lightning_ssmvid.utils.files import config_hash

    monkeypatch.setattr(stages, "data_fingerprint", lambda datamodule: {"videos": []})

    def identity(*overrides):
        cfg = compose_cfg(*TWO_STAGE, *overrides)
        return config_hash(stages.codec_identity(cfg, None))

    off = identity()
    cfg = compose_cfg(*TWO_STAGE)
    with open_dict(cfg):
        del cfg.stages.codec_training["latent_noise"]  # a config from before the options
        del cfg.stages.codec_training["latent_noise_grid_only"]
    assert config_hash(stages.codec_identity(cfg, None)) == off
    assert identity("stages.codec_training.latent_noise=0.3") != off
    assert identity("stages.codec_training.latent_noise_grid_only=true") == off  # no noise: the flag means nothing
    assert identity("stages.codec_training.latent_noise=0.3", "stages.codec_training.latent_noise_grid_only=true") \
        != identity("stages.codec_training.latent_noise=0.3")


def test_a_bad_latent_noise_is_a_one_line_error_before_any_data(compose_cfg, tmp_path):
    import pytest

    from lightning_ssmvid.utils.errors import UserError

    with pytest.raises(UserError, match="latent_noise=-0.1: must be a number >= 0"):
        run(compose_cfg, tmp_path, "bad", "stages.codec_training.latent_noise=-0.1")
    assert not (tmp_path / "cache" / "codecs").exists()
