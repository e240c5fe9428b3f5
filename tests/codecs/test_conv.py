"""The shared codec: shapes, a frame-pooled global part that is position-free, and clear errors for bad sizes."""

import pytest
import torch

from lightning_ssmvid.codecs.conv import ConvCodec


@pytest.mark.parametrize("global_dim", [0, 16])
def test_encode_decode_shapes(global_dim):
    codec = ConvCodec(frame_size=32, latent_dim=32 + global_dim, width=8, global_dim=global_dim)
    frames = torch.rand(2, 5, 3, 32, 32)
    z = codec.encode(frames)
    assert z.shape == (2, 5, 32 + global_dim)
    assert codec.decode(z).shape == (2, 5, 3, 32, 32)


def test_global_part_ignores_where_an_object_is_and_reaches_every_cell():
    torch.manual_seed(0)
    codec = ConvCodec(frame_size=64, latent_dim=80, width=8, global_dim=16).eval()
    a, b = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    a[:, 0, 24:32, 24:32] = 1.0  # the same red square in two places a grid cell (8 px) apart, away from the borders
    b[:, 0, 32:40, 32:40] = 1.0
    with torch.no_grad():
        za, zb = codec.encode(a), codec.encode(b)
    torch.testing.assert_close(za[:, 64:], zb[:, 64:])  # max-pooled: where is gone
    assert not torch.allclose(za[:, :64], zb[:, :64])  # the grid knows where
    z = za.clone()
    z[:, 64:] += 1.0  # the global part is broadcast to every cell: it changes the whole decoded frame
    with torch.no_grad():
        changed = (codec.decode(z) - codec.decode(za)).abs().amax(dim=1)[0]
    assert (changed > 0).float().mean() > 0.9


def test_sizes_that_do_not_fit_the_grid_are_rejected():
    with pytest.raises(ValueError, match="multiple of"):
        ConvCodec(frame_size=32, latent_dim=40, global_dim=16)  # 24 grid dims do not fill a 4 x 4 grid
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvCodec(frame_size=30, latent_dim=64)


def test_codec_schedule_works_for_short_trainings():
    """OneCycleLR divided by zero when its warm-up was one step (stages.codec_training.steps=20)."""
    from lightning_ssmvid.codecs.pretrain import CodecModule

    for steps in (1, 2, 3, 4, 20, 1500):
        module = CodecModule(ConvCodec(frame_size=16, latent_dim=8, width=4), total_steps=steps)
        optimizers = module.configure_optimizers()
        if steps < 4:  # a constant rate
            assert isinstance(optimizers, torch.optim.Optimizer)
            continue
        schedule = optimizers["lr_scheduler"]["scheduler"]
        for _ in range(steps):
            schedule.optimizer.step()
            schedule.step()


def test_latent_noise_is_off_at_zero_and_relative_to_the_latents_spread():
    from lightning_ssmvid.codecs.pretrain import noised_latents

    z = torch.randn(64, 10) * torch.linspace(0.1, 10, 10)
    assert noised_latents(z, 0.0) is z
    torch.manual_seed(0)
    small = noised_latents(z, 0.5) - z
    torch.manual_seed(0)
    large = noised_latents(100 * z, 0.5) - 100 * z  # scaling the latents up does not outgrow the noise
    torch.testing.assert_close(large, 100 * small, rtol=1e-4, atol=1e-4)
    per_dim = small.std(0) / z.std(0)  # every dim is noised in proportion to its own spread
    assert per_dim.max() / per_dim.min() < 2



def test_stage_one_decodes_noised_latents_only_when_asked():
    from lightning_ssmvid.codecs.pretrain import CodecModule

    batch = {"frames": (torch.rand(2, 3, 3, 16, 16) * 255).to(torch.uint8)}
    losses = {}
    for noise in (0.0, 0.5):
        torch.manual_seed(0)
        module = CodecModule(ConvCodec(frame_size=16, latent_dim=16, width=8), latent_noise=noise)
        module.log = lambda *args, **kwargs: None  # no trainer here
        losses[noise] = [float(module.training_step(batch, 0)) for _ in range(2)]
    assert losses[0.0][0] == losses[0.0][1]  # clean latents: the same loss twice
    assert losses[0.5][0] != losses[0.5][1] and losses[0.5][0] != losses[0.0][0]  # a fresh draw of noise each step
    with pytest.raises(ValueError, match="latent_noise must be >= 0"):
        CodecModule(ConvCodec(frame_size=16, latent_dim=16, width=8), latent_noise=-1.0)


def test_grid_only_latent_noise_leaves_the_frame_pooled_dims_clean():
    from lightning_ssmvid.codecs.pretrain import noised_latents

    z = torch.randn(32, 12)
    noised = noised_latents(z, 0.5, clean_tail=4)
    torch.testing.assert_close(noised[:, 8:], z[:, 8:])
    assert (noised[:, :8] != z[:, :8]).float().mean() > 0.9
