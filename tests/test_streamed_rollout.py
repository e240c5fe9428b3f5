"""The pipelined rollout (latents drawn in a background thread, decoded in chunks) gives ``VideoModel.rollout``'s
frames, raises what the drawing thread raises, and leaves no thread or thread setting behind."""

from __future__ import annotations

import threading

import pytest
import torch
from hydra.utils import instantiate

from lightning_ssmvid.sampling import apply_sampling
from lightning_ssmvid.streamed_rollout import streamed_rollout
from lightning_ssmvid.utils.config import compose_train_config


def tiny_model(core: str = "mamba2", head: str = "flow"):
    """The smoke experiment's model with ``core`` and ``head`` (random weights: these are checks of plumbing)."""
    torch.manual_seed(0)
    cfg = compose_train_config("experiment=smoke", f"core={core}", f"head={head}", "core.d_model=16",
                               "core.n_layers=1", "codec.latent_dim=16")
    model = instantiate(cfg.model).eval()
    with torch.no_grad():  # the head's zero-initialised output would make every draw equal
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("core", ["mamba", "mamba2", "gru"])
@pytest.mark.parametrize("chunk", [1, 4, 7])
@pytest.mark.parametrize("reencode", [False, True])
def test_streamed_frames_are_the_rollouts(core, chunk, reencode):
    model = tiny_model(core)
    model.rollout_reencode = reencode
    context = torch.rand(2, 3, 3, 32, 32)
    expected = list(model.rollout(context, 10, seed=5))
    got = list(streamed_rollout(model, context, 10, seed=5, decode_chunk=chunk))
    assert len(got) == 10 and got[0].shape == (2, 3, 32, 32)
    torch.testing.assert_close(torch.stack(got), torch.stack(expected), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[3], got[4])  # the rollout moves


def test_an_error_in_the_drawing_thread_reaches_the_caller_and_settings_are_restored(monkeypatch):
    model = tiny_model()
    threads = torch.get_num_threads()

    def broken(*args, **kwargs):
        yield torch.zeros(1, 16)
        raise RuntimeError("the core failed")

    monkeypatch.setattr(model, "rollout_latents", broken)
    with pytest.raises(RuntimeError, match="the core failed"):
        list(streamed_rollout(model, torch.rand(1, 3, 3, 32, 32), 10, decode_chunk=4))
    assert torch.get_num_threads() == threads
    assert not [t for t in threading.enumerate() if t.name == "rollout-latents"]


def test_closing_early_stops_the_drawing_thread():
    model = tiny_model()
    frames = streamed_rollout(model, torch.rand(1, 3, 3, 32, 32), 100_000, decode_chunk=2)
    next(frames)
    frames.close()  # the caller stops (an error while writing, Ctrl-C): the thread must not run on
    assert not [t for t in threading.enumerate() if t.name == "rollout-latents"]


def test_sampling_settings_change_the_draws_and_are_checked():
    model = tiny_model()
    context = torch.rand(1, 3, 3, 32, 32)
    default = model.generate(context, 4, seed=1)
    settings = apply_sampling(model, temperature=0.0, steps=3, rollout_noise=0.1)
    assert settings == {"rollout_noise": 0.1, "reencode": False, "temperature": 0.0, "steps": 3}
    assert not torch.allclose(model.generate(context, 4, seed=1), default)
    assert torch.equal(model.generate(context, 4, seed=1), model.generate(context, 4, seed=2))  # no noise: no seed
    with pytest.raises(ValueError, match="steps=0"):
        apply_sampling(model, steps=0)
    with pytest.raises(ValueError, match="MSEHead has no temperature"):
        apply_sampling(tiny_model(head="mse"), temperature=0.5)
