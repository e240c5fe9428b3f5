"""VideoModel: generation consistency, carried stream state, and non-finite losses."""

from __future__ import annotations

import pytest
import torch

from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.cores import available_cores, build_core
from lightning_ssmvid.heads import build_head
from lightning_ssmvid.model import VideoModel


def make_model(core: str = "gru", max_nonfinite_steps: int = 3) -> VideoModel:
    torch.manual_seed(0)
    model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core(core, d_model=12, n_layers=2),
                       optimizer=torch.optim.SGD, max_nonfinite_steps=max_nonfinite_steps)
    torch.nn.init.normal_(model.head.proj.weight, std=0.1)  # a zero head would hide errors in the rollout
    return model.eval()


def test_generate_matches_teacher_forced_parallel_pass():
    model = make_model()
    context = torch.randint(0, 256, (2, 5, 3, 16, 16), dtype=torch.uint8)
    generated = model.generate(context, n_frames=6)
    assert generated.shape == (2, 6, 3, 16, 16)
    assert 0 <= generated.min() and generated.max() <= 1
    # feeding back the predicted latents in parallel must reproduce every generated frame
    with torch.no_grad():
        z = model.codec.encode(context.float() / 255)
        for _ in range(6):
            z_hat, _ = model.predict_latents(z)
            z = torch.cat([z[:, :5], z_hat[:, 4:]], dim=1)
        frames = torch.sigmoid(model.codec.decode(z_hat[:, 4:]))
    torch.testing.assert_close(frames, generated, rtol=1e-4, atol=1e-5)


def test_rollout_yields_frames_one_at_a_time():
    model = make_model()
    frames = model.rollout(torch.rand(1, 3, 3, 16, 16), n_frames=4)
    assert next(frames).shape == (1, 3, 16, 16)
    assert len(list(frames)) == 3


def test_stream_segments_carry_state_like_one_pass():
    model = make_model()
    frames = torch.randint(0, 256, (2, 12, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        _, full_state = model.predict_latents(model.codec.encode(frames.float() / 255))
        model.training_step({"frames": frames[:, :7], "reset": torch.tensor([True, True])}, 0)
        model.training_step({"frames": frames[:, 7:], "reset": torch.tensor([False, False])}, 1)
    for key, value in full_state.items():
        torch.testing.assert_close(model.stream_state[key], value, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # a reset slot starts again from the initial state
        model.training_step({"frames": frames[:, 7:], "reset": torch.tensor([True, False])}, 2)
        _, fresh = model.predict_latents(model.codec.encode(frames[:1, 7:].float() / 255))
    for key, value in fresh.items():
        torch.testing.assert_close(model.stream_state[key][:1], value, rtol=1e-5, atol=1e-6)


def test_nonfinite_loss_is_skipped_then_stops_with_a_clear_error():
    model = make_model(max_nonfinite_steps=3)
    model.log = lambda *args, **kwargs: None  # no trainer attached
    bad = {"frames": torch.full((1, 4, 3, 16, 16), float("nan"))}
    for step in range(2):  # a zero loss on the parameters: every DDP rank still runs its backward
        skipped = model.training_step(bad, step)
        assert skipped.item() == 0 and skipped.requires_grad
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.training_step(bad, 2)
    good = {"frames": torch.rand(1, 4, 3, 16, 16)}
    assert torch.isfinite(model.training_step(good, 3))
    assert model.nonfinite_in_a_row == 0 and model.skipped_nonfinite == 3


def test_growing_state_restarts_when_all_slots_reset_and_refuses_a_partial_reset():
    model = make_model(core="transformer")
    frames = torch.randint(0, 256, (2, 6, 3, 16, 16), dtype=torch.uint8)
    both, one, none = torch.tensor([True, True]), torch.tensor([True, False]), torch.tensor([False, False])
    with torch.no_grad():
        model.training_step({"frames": frames, "reset": both}, 0)
        model.training_step({"frames": frames, "reset": none}, 1)  # the cache grows across segments
        assert model.stream_state["0.k"].shape[-2] == 12
        model.training_step({"frames": frames, "reset": both}, 2)  # a new video in every slot: a fresh cache
        _, fresh = model.predict_latents(model.codec.encode(frames.float() / 255))
        for key, value in fresh.items():
            torch.testing.assert_close(model.stream_state[key], value)
        with pytest.raises(ValueError, match="cannot restart single batch slots"):
            model.training_step({"frames": frames, "reset": one}, 3)


def test_a_nan_validation_loss_is_reported_not_dropped(monkeypatch):
    """A diverged validation batch makes the epoch's means NaN (torchmetrics' default would drop it, and a partly
    diverged run would look better)."""
    model = make_model()
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    frames = torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8)
    model.validation_step({"frames": frames}, 0)
    with torch.no_grad():
        model.head.proj.bias.fill_(float("nan"))
    model.validation_step({"frames": frames}, 1)
    assert torch.isnan(model.val_means["loss"].compute()) and torch.isnan(model.val_psnr_next.compute())


def test_weight_decay_spares_ssm_dynamics_norms_and_biases():
    """Decay would pull every core's decay rates toward one value: only matrices of projections decay."""
    for core in ("mamba", "mamba2", "s4d", "ssm", "lstm"):
        model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core(core, d_model=16, n_layers=1),
                           optimizer=torch.optim.AdamW, cue_weight=0.5)
        decay, no_decay = (group["params"] for group in model.parameter_groups())
        assert {id(p) for p in decay}.isdisjoint(id(p) for p in no_decay)
        assert len(decay) + len(no_decay) == len([p for p in model.parameters() if p.requires_grad])
        names = {id(p): n for n, p in model.named_parameters()}
        spared = {names[id(p)].split(".")[-1] for p in no_decay}
        decayed = {names[id(p)].split(".")[-1] for p in decay}
        assert "bias" in spared and not spared & {"weight_ih_l0", "weight_hh_l0"}
        assert {"A_log", "dt_bias", "log_A_real", "A_imag", "log_dt", "D", "A"} & decayed == set(), core
        assert "weight" in decayed  # projections still decay
        optimizer = model.configure_optimizers()
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_cue_head_loss_uses_labels_and_ignores_unlabelled_frames():
    torch.manual_seed(0)
    model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                       optimizer=torch.optim.SGD, cue_weight=0.5, cue_classes=4)
    latents = torch.randn(2, 6, 8)
    labels = torch.tensor([[1, 1, 1, 2, 2, 2], [-1, -1, 3, 3, 3, 3]])
    out, _ = model.losses({"latents": latents, "cue": labels})
    assert float(out["loss"]) == pytest.approx(float(0.1 * out["latent_mse"] + 0.5 * out["cue_ce"]), rel=1e-6)
    h, _ = model.core(model.in_proj(latents))
    logits = model.cue_head(h)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[0], labels[0]) + ce(logits[1, 2:], labels[1, 2:])) / 2  # per clip, then over clips
    torch.testing.assert_close(out["cue_ce"], expected)
    changed = labels.clone()
    changed[1, :2] = 0  # unlabelled frames: their (arbitrary) values do not matter once -1
    assert model.losses({"latents": latents, "cue": labels})[0]["cue_ce"] == out["cue_ce"]
    assert model.losses({"latents": latents, "cue": changed})[0]["cue_ce"] != out["cue_ce"]
    plain = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                       optimizer=torch.optim.SGD)
    assert plain.cue_head is None and "cue_ce" not in plain.losses({"latents": latents, "cue": labels})[0]


def test_predictions_at_chosen_frames_equal_the_full_pass():
    model = make_model()
    z = model.codec.encode(torch.rand(2, 9, 3, 16, 16))
    at = torch.tensor([[0, 4, 8], [3, 3, 7]])
    with torch.no_grad():
        full, h, _ = model.predict_with_features(z)
        some, h_some, _ = model.predict_with_features(z, at=at)
    torch.testing.assert_close(some, torch.stack([full[b, at[b]] for b in range(2)]))
    torch.testing.assert_close(h_some, h)


def test_own_inputs_replace_a_share_of_frames_with_the_models_one_step_predictions():
    model = make_model()
    model.own_input_rate = 0.5
    z = torch.randn(3, 40, 8)
    mixed, marked = model.with_own_inputs(z, 0.0, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = model.predict_latents(z)[0][:, :-1]  # the mse head's prediction of frames 1..T-1
    assert torch.equal(mixed[:, 0], z[:, 0])
    is_real = (mixed[:, 1:] == z[:, 1:]).all(-1)
    is_own = torch.isclose(mixed[:, 1:], own, rtol=1e-5, atol=1e-6).all(-1)
    assert (is_real | is_own).all() and 0.3 < is_own.float().mean() < 0.7
    assert marked[:, 0].eq(0).all() and torch.equal(marked[:, 1:].bool(), ~is_real)  # which inputs are own draws
    batch = {"latents": z}
    model.train()
    trained = model.losses(batch, generator=torch.Generator().manual_seed(0))[0]["loss"]
    model.own_input_rate = 0.0
    plain = model.losses(batch, generator=torch.Generator().manual_seed(0))[0]["loss"]
    assert trained.requires_grad and not torch.isclose(trained, plain)
    with pytest.raises(Exception, match="own_input_rate=1.0"):
        VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                   optimizer=torch.optim.SGD, own_input_rate=1.0)


def test_own_inputs_start_at_their_epoch(monkeypatch):
    model = make_model().train()
    model.own_input_rate, model.own_input_from_epoch = 0.5, 2
    batch = {"latents": torch.randn(2, 12, 8)}
    loss_at = {}
    for epoch in (0, 1, 2, 3):
        monkeypatch.setattr(VideoModel, "current_epoch", property(lambda self, e=epoch: e))
        loss_at[epoch] = model.losses(batch, generator=torch.Generator().manual_seed(0))[0]["loss"].detach()
    model.own_input_rate = 0.0
    forced = model.losses(batch, generator=torch.Generator().manual_seed(0))[0]["loss"].detach()
    assert torch.equal(loss_at[0], forced) and torch.equal(loss_at[1], forced)  # teacher-forced epochs
    assert not torch.isclose(loss_at[2], forced) and torch.equal(loss_at[2], loss_at[3])
    with pytest.raises(Exception, match="own_input_from_epoch=-1"):
        VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                   optimizer=torch.optim.SGD, own_input_rate=0.5, own_input_from_epoch=-1)


def test_the_own_input_flag_marks_exactly_the_own_draws_in_training_and_every_generated_frame():
    torch.manual_seed(0)
    model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                       optimizer=torch.optim.SGD, own_input_rate=0.5, own_input_flag=True).train()
    torch.nn.init.normal_(model.head.proj.weight, std=0.1)
    assert model.own_embed.abs().sum() == 0  # a no-op at init: the flagged model starts as the unflagged one
    with torch.no_grad():
        model.own_embed.normal_()
    z = torch.randn(2, 12, 8)
    seen = []
    real_core = model.core.forward
    model.core.forward = lambda u, state=None: (seen.append(u.detach()), real_core(u, state))[1]
    model.losses({"latents": z}, generator=torch.Generator().manual_seed(0))
    first, second = seen  # the no-grad pass reads real frames; the training pass, the mixed ones
    mixed, marked = model.with_own_inputs(z, 0.0, None, torch.Generator().manual_seed(0))  # the same draws and picks
    torch.testing.assert_close(first, model.in_proj(z))
    torch.testing.assert_close(second, model.in_proj(mixed) + marked[..., None] * model.own_embed)
    model.eval()  # generation: the context is real (no flag), every fed-back frame is own (flagged)
    context = torch.rand(1, 3, 3, 16, 16)
    flagged = torch.stack(list(model.rollout(context, n_frames=3)), 1)
    with torch.no_grad():
        model.own_embed.zero_()
    unflagged = torch.stack(list(model.rollout(context, n_frames=3)), 1)
    torch.testing.assert_close(flagged[:, 0], unflagged[:, 0])  # the first frame follows the real context only
    assert not torch.allclose(flagged[:, 1:], unflagged[:, 1:])
    with pytest.raises(Exception, match="own_input_flag=true"):
        VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                   optimizer=torch.optim.SGD, own_input_flag=True)


def test_the_self_rollout_loss_feeds_the_models_own_predictions_and_keeps_the_teacher_forced_loss():
    model = make_model().train()
    z = torch.randn(2, 10, 8)
    plain, plain_state = model.losses({"latents": z})
    model.rollout_loss_steps = 3
    out, state = model.losses({"latents": z})
    torch.testing.assert_close(out["latent_mse"], plain["latent_mse"])  # the pass in two parts is the same pass
    torch.testing.assert_close(state, plain_state)
    # by hand, in parallel mode: frames 0..5 real, then 3 own predictions, each from the frames before it
    with torch.no_grad():
        seq = z[:, :6]
        for _ in range(4):
            seq = torch.cat([z[:, :6], model.predict_latents(seq)[0][:, 5:]], dim=1)
        errors = (seq[:, 7:] - z[:, 7:]).square().mean(-1).mean(1)  # predictions of frames 7..9 from own inputs
    torch.testing.assert_close(out["rollout_latent_mse"], errors.mean())
    assert torch.isclose(out["loss"], model.latent_weight * (plain["latent_mse"] + out["rollout_latent_mse"]))
    out["rollout_latent_mse"].backward()  # the chain is differentiable through the fed-back predictions
    assert model.head.proj.weight.grad.abs().sum() > 0
    model.eval()
    assert "rollout_latent_mse" not in model.losses({"latents": z})[0]  # a training loss only


@pytest.mark.parametrize("core", available_cores())
def test_the_self_rollout_loss_trains_the_core_in_step_mode(core):
    model = make_model(core).train()
    model.rollout_loss_steps = 2
    frames = torch.rand(2, 6, 3, 16, 16)
    out, _ = model.losses({"frames": frames})
    assert {"rollout_latent_mse", "rollout_pixel_mse"} <= set(out) and torch.isfinite(out["loss"])
    out["rollout_latent_mse"].backward()
    grads = [p.grad for p in model.core.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_clips_too_short_for_the_self_rollout_loss_train_without_it(caplog):
    model = make_model().train()
    model.rollout_loss_steps = 4
    with caplog.at_level("WARNING"):
        out, _ = model.losses({"latents": torch.randn(2, 5, 8)})
    assert "rollout_latent_mse" not in out and "too short for model.rollout_loss_steps=4" in caplog.text
    with pytest.raises(Exception, match="rollout_loss_steps=-1"):
        VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                   optimizer=torch.optim.SGD, rollout_loss_steps=-1)


def test_the_self_rollout_leaves_a_stochastic_heads_running_statistics_to_the_real_frames():
    model = make_model()
    model.head = build_head("flow", latent_dim=8, d_model=12, width=8, depth=1, steps=2).train()
    model.train()
    z = torch.randn(2, 8, 8)
    model.losses({"latents": z}, generator=torch.Generator().manual_seed(0))
    plain = model.head.scale.clone()
    model.head.scale_seen.fill_(False)
    model.rollout_loss_steps = 3
    out, _ = model.losses({"latents": z}, generator=torch.Generator().manual_seed(0))
    assert "rollout_flow_mse" in out and torch.isfinite(out["loss"])
    torch.testing.assert_close(model.head.scale, plain)


def test_symmetric_foreground_weighting_changes_the_pixel_losses_and_needs_a_weight():
    model = make_model().train()
    frames = torch.zeros(2, 6, 3, 16, 16, dtype=torch.uint8)
    frames[:, :, :, 4:8, 4:8] = 230  # a still square on black
    model.foreground_weight = 30.0
    one_sided = model.losses({"frames": frames})[0]["loss"]
    model.foreground_symmetric = True
    symmetric = model.losses({"frames": frames})[0]["loss"]
    assert torch.isfinite(symmetric) and not torch.isclose(symmetric, one_sided)
    with pytest.raises(Exception, match="foreground_symmetric"):
        VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=12, n_layers=1),
                   optimizer=torch.optim.SGD, foreground_symmetric=True)
