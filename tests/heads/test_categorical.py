"""The categorical head: each cell a draw over the codebook's codes, so a cell the object may enter gets it with that
chance (where a mean gives every such cell a faint copy), and every draw is a code of the codebook."""

import pytest
import torch
from hydra.utils import instantiate

from lightning_ssmvid.codecs.codebook import CellCodebook
from lightning_ssmvid.heads import build_head
from lightning_ssmvid.utils.errors import UserError

D = 10


def head_on_a_4x4_grid(**options):
    """One channel a cell on a 4x4 grid (frame_size 32), two codes: empty (0) and object (1)."""
    torch.manual_seed(0)
    head = build_head("categorical", latent_dim=16, d_model=D, codes=2, frame_size=32, width=16, **options)
    head.set_codebook(CellCodebook(torch.tensor([[0.0], [1.0]]), 4))
    return head


def object_frames(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames with one object in an inner column, the next frames: the object one cell left or right, 50/50),
    both (n, 16); the grid's 16 cells in row-major order."""
    row, column = torch.randint(0, 4, (n,), generator=generator), torch.randint(1, 3, (n,), generator=generator)
    step = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    now, after = torch.zeros(n, 16), torch.zeros(n, 16)
    now[torch.arange(n), row * 4 + column] = 1.0
    after[torch.arange(n), row * 4 + column + step] = 1.0
    return now, after


def test_it_draws_where_the_object_may_go_at_its_chance_and_every_draw_is_a_code():
    head = head_on_a_4x4_grid().train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        now, after = object_frames(64, generator)
        loss = head.loss(torch.zeros(64, 1, D), now[:, None], after[:, None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    now = torch.zeros(2000, 16)
    now[:, 5] = 1.0  # the object in row 1, column 1: next in cell 4 or cell 6
    with torch.no_grad():
        drawn = head.sample(torch.zeros(2000, D), now, torch.Generator().manual_seed(1))
        mean = head.mean(torch.zeros(2000, D), now)
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}  # codes, never a blend
    assert 0.4 < drawn[:, 4].mean() < 0.6 and 0.4 < drawn[:, 6].mean() < 0.6  # each way about half the time
    assert drawn[:, 5].mean() < 0.05 and drawn[:, [0, 1, 2, 3, 7, 8, 15]].mean() < 0.02  # it left; nothing else
    assert (mean[:, [4, 6]] - 0.5).abs().max() < 0.1  # the mean: a half-object in both cells, a frame no one saw
    again = head.sample(torch.zeros(2000, D), now, torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn, again, rtol=0, atol=0)
    head.temperature = 0.0  # the most likely codes: deterministic whatever the generator
    torch.testing.assert_close(head.sample(torch.zeros(4, D), now[:4], torch.Generator().manual_seed(2)),
                               head.sample(torch.zeros(4, D), now[:4], torch.Generator().manual_seed(3)))


def test_untrained_it_keeps_each_cells_code():
    """The stay prior: before any training the most likely next code of a cell is the code it holds."""
    torch.manual_seed(0)
    head = build_head("categorical", latent_dim=528, d_model=D, codes=64, pooled_codes=8, frame_size=64,
                      global_dim=16, temperature=0.0)
    book = CellCodebook(torch.randn(64, 8), 8, 16, torch.randn(8, 16))
    head.set_codebook(book)
    z = book(torch.randn(6, 528))
    torch.testing.assert_close(head.sample(torch.randn(6, D), z), z, rtol=0, atol=0)


def test_it_composes_on_the_long_memory_protocol_and_refuses_what_it_cannot_draw(compose_cfg):
    cfg = compose_cfg("experiment=mamba2_short", "head=categorical", "model.train_snap=64", "model.train_snap_pooled=8")
    regressed = instantiate(cfg.head)(latent_dim=cfg.codec.latent_dim, d_model=cfg.core.d_model)
    assert regressed.pooled == "mean" and not hasattr(regressed, "pooled_logits")  # the default: pooled dims regressed
    cfg = compose_cfg("experiment=mamba2_short", "head=categorical", "model.train_snap=64", "model.train_snap_pooled=8",
                      "head.pooled=categorical")
    head = instantiate(cfg.head)(latent_dim=cfg.codec.latent_dim, d_model=cfg.core.d_model)
    assert (head.grid, head.channels, head.global_dim) == (8, 8, 16)
    assert tuple(head.cell_logits.codes.shape) == (64, 8) and tuple(head.pooled_logits.codes.shape) == (8, 16)
    h, z = torch.randn(2, 3, cfg.core.d_model), torch.randn(2, 3, cfg.codec.latent_dim)
    with pytest.raises(RuntimeError, match="has no codebook"):
        head.sample(h, z)
    with pytest.raises(ValueError, match="head.codes and head.pooled_codes must be model.train_snap"):
        head.set_codebook(CellCodebook(torch.randn(32, 8), 8, 16, torch.randn(8, 16)))
    with pytest.raises(ValueError, match="head.codes and head.pooled_codes"):
        head.set_codebook(CellCodebook(torch.randn(64, 8), 8, 16, None))  # pooled dims left unsnapped
    head.set_codebook(CellCodebook(torch.randn(64, 8), 8, 16, torch.randn(8, 16)))
    assert head.sample(h, z, torch.Generator().manual_seed(0)).shape == z.shape
    cfg = compose_cfg("experiment=mamba2_short", "head=categorical")  # model.train_snap=0: no codebook to draw from
    with pytest.raises(UserError, match="set model.train_snap=K"):
        instantiate(cfg.head)(latent_dim=cfg.codec.latent_dim, d_model=cfg.core.d_model)
    with pytest.raises(UserError, match="model.train_snap_pooled must be >= 2"):
        build_head("categorical", latent_dim=528, d_model=D, codes=8, pooled_codes=0, global_dim=16)
    with pytest.raises(UserError, match="head.depth must be an integer >= 0"):
        build_head("categorical", latent_dim=528, d_model=D, codes=8, global_dim=16, depth=-1)
    with pytest.raises(UserError, match="head.pooled must be mean or categorical"):
        build_head("categorical", latent_dim=528, d_model=D, codes=8, global_dim=16, pooled="drawn")
    with pytest.raises(UserError, match="head.loss_frames must be"):
        build_head("categorical", latent_dim=528, d_model=D, codes=8, global_dim=16, loss_frames=-1)


def test_regressed_pooled_dims_are_the_mse_heads_mean_and_cells_are_still_drawn():
    """``pooled="mean"``: the frame-pooled dims are ``z + W h`` (the same in every draw and in the mean), trained
    with their squared error beside the cells' cross-entropy; the grid cells are still codes."""
    torch.manual_seed(0)
    head = build_head("categorical", latent_dim=24, d_model=D, codes=4, frame_size=32, global_dim=8, width=4,
                      pooled="mean")
    book = CellCodebook(torch.randn(4, 1), 4, 8, None)
    head.set_codebook(book)
    h, z = torch.randn(5, 3, D), torch.randn(5, 3, 24)
    with torch.no_grad():
        head.pooled_regressor.weight.normal_()
    first, second = (head.sample(h, z, torch.Generator().manual_seed(s)) for s in (0, 1))
    expected = z[..., -8:] + head.pooled_regressor(h)
    torch.testing.assert_close(first[..., -8:], expected)
    torch.testing.assert_close(second[..., -8:], expected)
    torch.testing.assert_close(head.mean(h, z)[..., -8:], expected)
    assert {tuple(c.tolist()) for c in book.cells(first)} <= {tuple(c.tolist()) for c in book.centroids}
    loss = head.loss(h, z, z.roll(1, 0))
    loss.sum().backward()
    assert head.pooled_regressor.weight.grad.abs().sum() > 0
