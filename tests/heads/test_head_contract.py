"""The head interface contract, for every registered head, and the flow head's reason to exist: it draws from a
multimodal next-frame distribution where the regressor can only give the mean."""

import pytest
import torch
from hydra.utils import instantiate

from lightning_ssmvid.codecs.codebook import CellCodebook
from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.cores import build_core
from lightning_ssmvid.heads import available_heads, build_head
from lightning_ssmvid.model import VideoModel

HEADS = available_heads()
LATENT, D = 6, 10


def make(name: str, **kwargs):
    torch.manual_seed(0)
    options = {"flow": {"width": 32, "depth": 2}, "residual": {"width": 32, "depth": 2},
               "flow_grid": {"width": 8, "depth": 1, "frame_size": 16, "global_dim": 2},  # a 2x2 grid
               "categorical": {"width": 8, "codes": 4, "pooled_codes": 3, "frame_size": 16, "global_dim": 2}
               }.get(name, {})
    head = build_head(name, latent_dim=LATENT, d_model=D, **{**options, **kwargs})
    if hasattr(head, "set_codebook"):  # a discrete head draws codes of a codebook (the run's, in training)
        head.set_codebook(CellCodebook(torch.randn(4, 1), 2, 2, torch.randn(3, 2)))
    return head


def randomise(head: torch.nn.Module) -> None:
    for module in head.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.3)


def test_every_head_is_listed_and_unknown_names_are_refused():
    assert {"mse", "flow", "flow_grid", "residual", "categorical"} <= set(HEADS)
    with pytest.raises(ValueError, match="valid heads: categorical, flow, flow_grid, mse, residual"):
        build_head("diffusion", latent_dim=LATENT, d_model=D)


@pytest.mark.parametrize("name", HEADS)
def test_loss_is_per_clip_finite_and_trains_head_and_condition(name):
    head = make(name).train()
    h = torch.randn(3, 5, D, requires_grad=True)
    z, z_next = torch.randn(3, 5, LATENT), torch.randn(3, 5, LATENT)
    loss = head.loss(h, z, z_next)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    randomise(head)  # heads start as "no change" (zero output layers): with weights, the condition gets gradients
    head.loss(h, z, z_next).sum().backward()
    assert h.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEADS)
def test_sample_shapes_and_seeded_determinism(name):
    head = make(name).eval()
    h, z = torch.randn(4, 7, D), torch.randn(4, 7, LATENT)
    draw = lambda seed: head.sample(h, z, torch.Generator().manual_seed(seed))  # noqa: E731
    assert draw(0).shape == z.shape and head.mean(h, z).shape == z.shape
    torch.testing.assert_close(draw(3), draw(3), rtol=0, atol=0)
    assert head.sample(h[:, 0], z[:, 0]).shape == (4, LATENT)  # one frame (step mode)
    if head.stochastic:
        randomise(head)  # an untrained flow head ignores its noise (zero output layer)
        assert not torch.allclose(draw(0), draw(1))
    else:
        torch.testing.assert_close(draw(0), head.mean(h, z), rtol=0, atol=0)


def fit_bimodal(name: str, steps: int = 400, target: str = "change", **flow_options) -> torch.nn.Module:
    """Train a head where the next latent is z + 1 or z - 1 (``target="frame"``: +1 or -1, whatever z) with equal
    chance, whatever the condition."""
    options = {"width": 64, "depth": 2, "steps": 16, "target": target, **flow_options} if name == "flow" else {}
    head = make(name, **options).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        h, z = torch.randn(16, 4, D, generator=generator), torch.randn(16, 4, LATENT, generator=generator)
        sign = torch.randint(0, 2, (16, 4, 1), generator=generator) * 2.0 - 1.0
        loss = head.loss(h, z, sign.expand_as(z) if target == "frame" else z + sign).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def test_flow_head_draws_both_modes_where_the_regressor_gives_their_mean():
    h, z = torch.randn(512, D), torch.zeros(512, LATENT)
    regressor, flow = fit_bimodal("mse"), fit_bimodal("flow")
    with torch.no_grad():
        regressed = regressor.sample(h, z)
        drawn, mean = flow.sample(h, z, torch.Generator().manual_seed(0)), flow.mean(h, z)
    assert regressed.abs().mean() < 0.2  # the mean of +1 and -1: a frame no one saw
    assert (drawn.abs() - 1).abs().mean() < 0.25  # draws sit on the modes...
    share_positive = (drawn > 0).float().mean()
    assert 0.3 < share_positive < 0.7  # ...both of them
    assert mean.abs().mean() < 0.3  # and its mean estimate is their mean


@pytest.mark.parametrize("target", ["change", "frame"])
def test_a_copy_skip_head_starts_as_copy_last_and_still_learns_both_modes(target):
    """x-prediction from the input's copy: untrained, every draw is the frame it read, at any temperature; trained
    on z +- 1 it draws both modes, as the velocity-predicting head does."""
    head = make("flow", target=target, copy_skip=True).train()
    z = torch.randn(6, 3, LATENT) * 2 + 1
    head.loss(torch.randn(6, 3, D), z, z + torch.randn_like(z))  # the running centre and scale move off 0 and 1
    head.eval()
    with torch.no_grad():
        for temperature in (1.0, 3.0):
            head.temperature = temperature
            drawn = head.sample(torch.randn(6, 3, D), z, torch.Generator().manual_seed(0))
            torch.testing.assert_close(drawn, z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(head.mean(torch.randn(6, 3, D), z), z, rtol=1e-5, atol=1e-5)
    flow = fit_bimodal("flow", target=target, copy_skip=True)
    h, z = torch.randn(512, D), torch.zeros(512, LATENT)
    with torch.no_grad():
        drawn = flow.sample(h, z, torch.Generator().manual_seed(0))
    assert (drawn.abs() - 1).abs().mean() < 0.25 and 0.3 < (drawn > 0).float().mean() < 0.7


def test_flow_head_frame_target_draws_the_frame_whatever_the_input_latent():
    """With ``target="frame"`` the head draws z_next itself: the input latent it is given does not move the draw."""
    flow = fit_bimodal("flow", target="frame")
    h = torch.randn(512, D)
    with torch.no_grad():
        draws = [flow.sample(h, z, torch.Generator().manual_seed(0)) for z in (torch.zeros(512, LATENT),
                                                                             torch.full((512, LATENT), 5.0))]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert (draws[0].abs() - 1).abs().mean() < 0.25 and 0.3 < (draws[0] > 0).float().mean() < 0.7
    assert set(flow.state_dict()) - set(make("flow").state_dict()) == {"center"}  # change heads keep their keys
    with pytest.raises(ValueError, match="head.target must be one of"):
        make("flow", target="delta")


def test_flow_head_conditioned_on_the_input_latent_copies_what_the_core_output_does_not_carry():
    """The next frame is the input latent (a static scene) and the core output is noise: only a head that reads z
    (``condition_on_input``) can redraw the frame; without it every draw is the frames' mean whatever z is."""
    def fit(on_input: bool, input_skip: bool = False) -> torch.nn.Module:
        head = make("flow", width=64, depth=2, steps=8, target="frame", condition_on_input=on_input,
                    input_skip=input_skip).train()
        optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            h, z = torch.randn(16, 4, D, generator=generator), torch.randn(16, 4, LATENT, generator=generator)
            loss = head.loss(h, z, z).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return head.eval()

    reader, skipper, blind_head = fit(True), fit(True, input_skip=True), fit(False)
    h, z = torch.randn(256, D), torch.randn(256, LATENT)
    with torch.no_grad():
        copied = reader.sample(h, z, torch.Generator().manual_seed(0))
        skipped = skipper.sample(h, z, torch.Generator().manual_seed(0))
        blind = blind_head.sample(h, z, torch.Generator().manual_seed(0))
    assert (copied - z).square().mean() < 0.1  # z has unit variance: the draw is z
    assert (skipped - z).square().mean() < 0.1  # the input's direct path into the MLP copies it too
    assert (blind - z).square().mean() > 0.8  # a draw independent of z: at least z's variance away
    assert set(make("flow", condition_on_input=True).state_dict()) - set(make("flow").state_dict()) == {
        "input_condition.weight", "input_condition.bias", "input_center", "input_scale"}
    assert set(skipper.state_dict()) - set(reader.state_dict()) == {"input_skip.weight"}
    with pytest.raises(ValueError, match="head.input_skip=true needs"):
        make("flow", input_skip=True)


def test_a_blown_up_input_latent_cannot_blow_up_the_heads_condition():
    """Fed back its own exploding latents, an input-conditioned head's condition saturates: the feedback is cut."""
    head = make("flow", width=16, depth=1, steps=2, target="frame", condition_on_input=True).eval()
    for weight in head.parameters():  # as trained, not zero-initialised (AdaLN starts at zero modulation)
        torch.nn.init.normal_(weight, std=0.5)
    h, z = torch.randn(4, D), torch.randn(4, LATENT)
    with torch.no_grad():
        near, blown, inf = (head.step_modulations(h, z * k) for k in (1e4, 1e8, float("inf")))
        small = head.step_modulations(h, z * 1e-3)
    for a, b, c in zip(near, blown, inf):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(near, small))  # within range, z still moves the condition
    with pytest.raises(ValueError, match="head.input_clip must be > 0"):
        make("flow", condition_on_input=True, input_clip=0)
    head.train().loss(h[:, None], z[:, None], z[:, None])
    before = {k: v.clone() for k, v in head.state_dict().items() if k.startswith(("input_", "center", "scale"))}
    head.loss(h[:, None], z[:, None] * float("nan"), z[:, None])  # a diverged batch (its loss is skipped)
    assert all(torch.equal(before[k], head.state_dict()[k]) for k in before)  # the running statistics stay finite


HEAD_OPTIONS = {"mse": {}, "flow": {"width": 16, "depth": 1, "steps": 2},
                "flow-frame": {"width": 16, "depth": 1, "steps": 2, "target": "frame"},
                "flow-input": {"width": 16, "depth": 1, "steps": 2, "target": "frame", "condition_on_input": True},
                "flow-copy": {"width": 16, "depth": 1, "steps": 2, "target": "frame", "condition_on_input": True,
                              "copy_skip": True},
                "flow-skip": {"width": 16, "depth": 1, "steps": 2, "target": "frame", "condition_on_input": True,
                              "input_skip": True},
                "flow_grid": {"width": 8, "depth": 1, "steps": 2, "target": "frame", "frame_size": 16},
                "residual": {"width": 16, "depth": 1, "steps": 2},
                "categorical": {"width": 4, "depth": 1, "codes": 5, "frame_size": 16, "loss_frames": 2}}


@pytest.mark.parametrize("head", sorted(HEAD_OPTIONS))
@pytest.mark.parametrize("core", ["gru", "mamba2", "transformer"])
def test_every_core_trains_and_generates_with_every_head(core, head):
    assert set(HEADS) <= set(HEAD_OPTIONS)  # a new head is listed here
    torch.manual_seed(0)
    options = HEAD_OPTIONS[head]
    head = head.split("-")[0]
    model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core(core, d_model=12, n_layers=2),
                       optimizer=torch.optim.SGD, head=lambda **dims: build_head(head, **dims, **options),
                       context_noise=0.3)
    if hasattr(model.head, "set_codebook"):
        model.head.set_codebook(CellCodebook(torch.randn(5, model.codec.latent_channels), model.codec.grid))
    frames = torch.randint(0, 256, (2, 6, 3, 16, 16), dtype=torch.uint8)
    out, _ = model.train().losses({"frames": frames})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.head.loss_name in out
    model.eval()
    first, again = model.generate(frames[:, :3], 4, seed=5), model.generate(frames[:, :3], 4, seed=5)
    assert first.shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@pytest.mark.parametrize("head, kind", [(None, "flow"), ("head=flow", "flow"), ("head=mse", "mse")])
def test_smoke_draws_the_frame_by_default_and_takes_any_other_head(compose_cfg, head, kind):
    """smoke's frame target is its head config (head=flow_frame), so `head=mse` replaces it whole."""
    cfg = compose_cfg("experiment=smoke", *([head] if head else []))
    built = instantiate(cfg.head)(latent_dim=LATENT, d_model=D)
    assert cfg.head.name == kind and getattr(built, "target", None) == ("frame" if head is None else
                                                                        "change" if kind == "flow" else None)


def test_the_grid_head_reads_its_input_grid_and_learns_to_move_it_one_cell():
    """On a 4x4 grid whose next frame is the input shifted one cell right (a moving object), the conv denoiser
    redraws the shifted frame from the input grid it reads; a head blind to its input (the core output is noise
    here) cannot. (The flat MLP head with ``condition_on_input`` learns this small shift too: 0.03.)"""
    def fit(name: str, **options) -> torch.nn.Module:
        torch.manual_seed(0)  # the core output h is noise: only the input grid says where the object goes
        head = build_head(name, latent_dim=16 + 2, d_model=D, steps=8, target="frame", **options).train()
        optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            h, z = torch.randn(32, 2, D, generator=generator), torch.randn(32, 2, 18, generator=generator)
            loss = head.loss(h, z, shift(z)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return head.eval()

    def shift(z: torch.Tensor) -> torch.Tensor:  # the 4x4 grid one cell right; the 2 global dims kept
        grid = z[..., :16].reshape(*z.shape[:-1], 4, 4).roll(1, dims=-1)
        return torch.cat([grid.flatten(-2), z[..., 16:]], -1)

    grid_head = fit("flow_grid", width=16, depth=1, frame_size=32, global_dim=2)
    h, z = torch.randn(256, D), torch.randn(256, 18)
    with torch.no_grad():
        drawn = grid_head.sample(h, z, torch.Generator().manual_seed(0))
        kept = grid_head.sample(h, torch.zeros_like(z), torch.Generator().manual_seed(0))
    assert (drawn - shift(z))[:, :16].square().mean() < 0.1  # z has unit variance: 1 is a draw that ignores it
    assert (kept - shift(z))[:, :16].square().mean() > 0.8  # the same noise, the input hidden: not the frame


def test_the_grid_head_composes_on_the_long_memory_protocol_and_refuses_what_it_cannot_read(compose_cfg):
    cfg = compose_cfg("experiment=mamba2_short", "head=flow_grid")
    head = instantiate(cfg.head)(latent_dim=cfg.codec.latent_dim, d_model=cfg.core.d_model)
    assert (head.grid_size, head.grid_channels, head.global_dim, head.target) == (8, 8, 16, "frame")  # latent_dim 528
    h, z = torch.randn(2, 3, cfg.core.d_model), torch.randn(2, 3, cfg.codec.latent_dim)
    assert head.sample(h, z, torch.Generator().manual_seed(0)).shape == z.shape
    with pytest.raises(ValueError, match="positive multiple of"):
        build_head("flow_grid", latent_dim=21, d_model=D, frame_size=16)  # 21 values do not fill a 2x2 grid evenly
    with pytest.raises(ValueError, match="positive multiple of"):
        build_head("flow_grid", latent_dim=8, d_model=D, frame_size=16, global_dim=8)  # no grid left
    with pytest.raises(ValueError, match="always reads the input latent"):
        build_head("flow_grid", latent_dim=8, d_model=D, frame_size=16, condition_on_input=False)
    with pytest.raises(ValueError, match="no head.input_skip"):
        build_head("flow_grid", latent_dim=8, d_model=D, frame_size=16, input_skip=True)


def test_the_residual_head_draws_the_spread_its_mean_averages_away_and_is_the_mse_head_without_its_flow():
    """The next latent is c + 1 or c - 1 with c = W h a known function of the condition: the regressor part learns
    the mean c, the flow draws the +-1 about it (both modes), and with flow_weight=0 a draw is the mean itself."""
    torch.manual_seed(0)
    w = torch.randn(D, LATENT) * 0.5
    head = make("residual", width=64, depth=2, steps=16).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(500):
        h, z = torch.randn(16, 4, D, generator=generator), torch.randn(16, 4, LATENT, generator=generator)
        sign = torch.randint(0, 2, (16, 4, 1), generator=generator) * 2.0 - 1.0
        loss = head.loss(h, z, z + h @ w + sign).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    h, z = torch.randn(512, D), torch.randn(512, LATENT)
    with torch.no_grad():
        mean, drawn = head.mean(h, z), head.sample(h, z, torch.Generator().manual_seed(0))
    centre = z + h @ w
    assert (mean - centre).abs().mean() < 0.2  # the mean of the two modes, as the mse head gives
    offset = drawn - centre
    assert (offset.abs() - 1).abs().mean() < 0.3 and 0.3 < (offset > 0).float().mean() < 0.7  # draws on both modes
    idle = make("residual", flow_weight=0.0).eval()
    randomise(idle)
    h, z = torch.randn(4, 3, D), torch.randn(4, 3, LATENT)
    torch.testing.assert_close(idle.sample(h, z, torch.Generator().manual_seed(1)), idle.mean(h, z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="head.target must be change"):
        make("residual", target="frame")
    with pytest.raises(ValueError, match="head.flow_weight must be >= 0"):
        make("residual", flow_weight=-1.0)


def test_the_residual_head_composes_on_the_long_memory_protocol(compose_cfg):
    cfg = compose_cfg("experiment=mamba2_short", "head=residual")
    head = instantiate(cfg.head)(latent_dim=cfg.codec.latent_dim, d_model=cfg.core.d_model)
    assert (type(head).__name__, head.target, head.width, head.flow_weight) == ("ResidualFlowHead", "change", 128, 1.0)
