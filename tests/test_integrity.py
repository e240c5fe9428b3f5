"""Generated data sets, codecs and latent caches record their files; a missing or damaged one is found and rebuilt."""

import json
import logging

import numpy as np
import pytest
import torch

from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.data.bouncing import BouncingShapes
from lightning_ssmvid.data.latent_cache import MANIFEST, build_latent_cache, cache_path, load_latents
from lightning_ssmvid.data.long_memory import LongMemoryConfig, generate_long_memory, list_clips
from lightning_ssmvid.stages import codec_intact, load_codec_state
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.integrity import damaged, record


def small(**sizes) -> LongMemoryConfig:
    return LongMemoryConfig(frame_size=64, n_frames=200, gap_bins=(8, 24, 48), min_visible=8, reveal_frames=4, **sizes)


def manifest_files(path):
    return json.loads(path.read_text())["files"]


def test_a_truncated_and_a_deleted_clip_of_the_long_memory_set_are_rewritten(tmp_path, caplog):
    dataset = generate_long_memory(tmp_path, small(n_train=3, n_val=1, n_test=0), workers=1, progress=False)
    train = dataset / "train"
    files = manifest_files(train / "manifest.json")
    assert set(files) == {f"clip_0000{i}{ext}" for i in range(3) for ext in (".mp4", ".npz", ".json")}
    clip = list_clips(train)[1]
    clip.write_bytes(clip.read_bytes()[:100])  # truncated
    clip.with_suffix(".npz").unlink()  # another file of the same clip deleted
    with caplog.at_level(logging.WARNING):
        assert generate_long_memory(tmp_path, small(n_train=3, n_val=1, n_test=0), workers=1,
                                    progress=False) == dataset
    assert "2 damaged file(s)" in caplog.text and "clip_00001.mp4 (100 bytes, expected" in caplog.text
    assert "clip_00001.npz (missing)" in caplog.text
    assert damaged(train, manifest_files(train / "manifest.json")) == {}
    assert manifest_files(train / "manifest.json") == files  # rewritten exactly (the generator is deterministic)


def test_a_deleted_bouncing_clip_is_rewritten(tmp_path, caplog):
    generator = BouncingShapes(n_train=2, n_val=1, n_frames=8)
    out = generator(tmp_path)
    files = manifest_files(out / "manifest.json")
    (out / "val" / "clip_00000.mp4").unlink()
    with caplog.at_level(logging.WARNING):
        assert generator(tmp_path) == out
    assert "val/clip_00000.mp4 (missing)" in caplog.text
    assert damaged(out, manifest_files(out / "manifest.json")) == {}
    assert set(manifest_files(out / "manifest.json")) == set(files)


def test_a_truncated_latent_array_is_re_encoded(tmp_path, caplog):
    videos_dir = BouncingShapes(n_train=2, n_val=0, n_frames=8, render_size=16)(tmp_path / "data")
    videos = sorted(videos_dir.rglob("*.mp4"))
    codec = ConvCodec(frame_size=16, latent_dim=8, width=4)
    cache = build_latent_cache(codec, videos_dir, videos, tmp_path / "cache", frame_size=16)
    good = load_latents(cache, videos_dir, videos[0]).copy()
    target = cache_path(cache, videos_dir, videos[0])
    target.write_bytes(target.read_bytes()[:-64])
    with caplog.at_level(logging.WARNING):
        build_latent_cache(codec, videos_dir, videos, cache, frame_size=16)
    assert "latent cache" in caplog.text and "re-encoding them" in caplog.text
    np.testing.assert_array_equal(load_latents(cache, videos_dir, videos[0]), good)
    assert damaged(cache, manifest_files(cache / MANIFEST)) == {}


def test_a_damaged_stage_one_codec_is_trained_again(tmp_path, caplog):
    path = tmp_path / "codec.pt"
    torch.save({"state_dict": ConvCodec(frame_size=16, latent_dim=8, width=4).state_dict()}, path)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": record(tmp_path, [path])}))
    assert codec_intact(path)
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        assert not codec_intact(path)
    assert "is damaged" in caplog.text and "training it again" in caplog.text and not path.exists()


def test_a_codec_checkpoint_that_is_not_one_is_named(tmp_path):
    text = tmp_path / "codec.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(UserError, match=f"{text} is not a readable checkpoint"):
        load_codec_state(text)
    torch.save({"weights": {}}, text)
    with pytest.raises(UserError, match="is not a codec checkpoint"):
        load_codec_state(text)
