"""A discrete head: each grid cell of the next latent is a categorical draw over a codebook of real cells
(``head=categorical``; a VQ world model's token prior, as TECO's or iVideoGPT's, on the k-means codebook of
``codecs/codebook.py``). Its frame-pooled dims are regressed as the mse head's (``pooled="mean"``; the rollout snaps
them) or drawn over a codebook of real pooled parts (``pooled="categorical"``: on the long-memory data that code
changes in most frames, and its draws repainted the frame; README).

A continuous head either averages a cell's possible futures (the mse head: a mean moves less than any real future,
so its snapped rollouts freeze) or draws them with a continuous error that a rollout feeds back (the flow heads:
they drift). A categorical head gives each code its probability: a cell the object may enter in this frame gets
the object's code with that chance, so a draw moves at the data's speed on average, and every draw is a code of a
real frame, so no small error can add up. The cells are drawn independently given the core output, a 3x3 view of
the input grid, the cell's position and ``depth`` residual 3x3 conv blocks over those features (MaskGit-style joint
decoding is left out; measured, the independent draws give an object's cells codes of other colours).

    logits[cell, k] = f(h, input grid)[cell] . e(c_k) + b_k - exp(log_stay) * |c_in(cell) - c_k|^2 / spacing

The last term starts the head near "each cell keeps its code" (video changes little per frame): ``spacing`` is the
codebook's median squared distance to a nearest other code. The codebook is the run's training one
(``model.train_snap=K``: the two-stage latents snapped onto it), given by ``set_codebook`` and saved with the weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssmvid.codecs.codebook import grid_cells, valid_count
from lightning_ssmvid.codecs.conv import latent_grid
from lightning_ssmvid.heads import register_head
from lightning_ssmvid.heads.base import Head
from lightning_ssmvid.utils.errors import UserError


class CodeLogits(nn.Module):
    """Logits of features (N, M, W) over codes (K, C): features . MLP(code) + bias - stay prior on the input code."""

    def __init__(self, codes: int, channels: int, width: int):
        super().__init__()
        self.register_buffer("codes", torch.zeros(codes, channels))
        self.register_buffer("scale", torch.ones(()))  # the codes' RMS: the embedding MLP reads unit-scale values
        self.register_buffer("spacing", torch.ones(()))  # median squared distance to the nearest other code
        self.embed = nn.Sequential(nn.Linear(channels, width), nn.GELU(), nn.Linear(width, width))
        nn.init.zeros_(self.embed[2].weight)  # the features start silent: at first only the stay prior speaks
        nn.init.zeros_(self.embed[2].bias)
        self.bias = nn.Parameter(torch.zeros(codes))
        self.log_stay = nn.Parameter(torch.zeros(()))

    def set_codes(self, codes: Tensor) -> None:
        """codes (K, C): the code values (from a ``CellCodebook``)."""
        with torch.no_grad():
            self.codes.copy_(codes)
            self.scale.copy_(codes.square().mean().sqrt().clamp_min(1e-6))
            distance = torch.cdist(codes, codes).square().fill_diagonal_(float("inf"))
            self.spacing.copy_(distance.min(1).values.median().clamp_min(1e-12))

    def index(self, values: Tensor) -> Tensor:
        """values (N, C) -> (N,) the index of each one's nearest code (one matmul: |c|^2 - 2 v.c, no square roots)."""
        return torch.addmm(self.codes.square().sum(1), values.float(), self.codes.T, alpha=-2).argmin(1)

    def forward(self, features: Tensor, inputs: Tensor) -> Tensor:
        """features (N, M, W), inputs (N, M, C) the values each position holds now -> logits (N, M, K).

        The stay prior -stay |x - c_k|^2 is, up to a constant of each row (which a softmax ignores), the linear
        term 2 stay x.c_k - stay |c_k|^2: one matmul with the features', no (N, M, K) table of distances."""
        stay = self.log_stay.exp() / self.spacing
        weight = torch.cat([self.embed(self.codes / self.scale), 2 * stay * self.codes], 1)  # (K, W + C)
        bias = self.bias - stay * self.codes.square().sum(1)
        rows = torch.cat([features, inputs.to(features)], -1)
        return torch.addmm(bias, rows.flatten(0, -2), weight.T).view(*rows.shape[:-1], -1)


@register_head("categorical")
class CategoricalHead(Head):
    """Core output (..., d_model) and input latent (..., latent_dim) -> the next latent, each grid cell a code of
    ``codes`` (K, channels), and the pooled dims regressed (``pooled="mean"``) or a code of ``pooled_codes``
    (P, global_dim)."""

    stochastic = True
    loss_name = "code_ce"

    def __init__(self, latent_dim: int, d_model: int, codes: int = 1024, pooled_codes: int = 256,
                 frame_size: int = 64, global_dim: int = 0, width: int = 32, loss_frames: int = 32,
                 temperature: float = 1.0, pooled: str = "categorical", depth: int = 0):
        super().__init__(latent_dim, d_model)
        if not valid_count(codes):
            raise UserError(f"head=categorical draws codes of the run's training codebook: set model.train_snap=K "
                             f"(K >= 2 centroids), got codes={codes}")
        if pooled not in ("mean", "categorical"):
            raise UserError(f"head.pooled must be mean or categorical, got {pooled!r}")
        self.pooled = pooled if global_dim else None
        if self.pooled == "categorical" and not valid_count(pooled_codes):
            raise UserError(f"head.pooled=categorical draws the frame-pooled dims from codes too: "
                             f"model.train_snap_pooled must be >= 2, got {pooled_codes}")
        if int(loss_frames) != loss_frames or loss_frames < 0:
            raise UserError(f"head.loss_frames must be an integer >= 0 (0: every frame), got {loss_frames}")
        if int(depth) != depth or depth < 0:
            raise UserError(f"head.depth must be an integer >= 0, got {depth}")
        self.grid, self.channels = latent_grid(frame_size, latent_dim, global_dim)
        self.global_dim, self.width = global_dim, width
        self.loss_frames, self.temperature = int(loss_frames), float(temperature)
        cells = self.grid * self.grid
        self.cell_logits = CodeLogits(int(codes), self.channels, width)
        self.query = nn.Linear(d_model, width * cells)  # where the core expects what, cell by cell
        self.input_view = nn.Conv2d(self.channels, width, 3, padding=1)  # a cell and its neighbours as they are now
        self.position = nn.Parameter(torch.zeros(width, self.grid, self.grid))
        self.mix = nn.Sequential(nn.GELU(), nn.Conv2d(width, width, 1))
        self.blocks = nn.ModuleList(  # residual 3x3 conv blocks: a cell reads what its neighbours' features say
            nn.Sequential(nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 1))
            for _ in range(int(depth)))
        if self.pooled == "mean":  # regressed as the mse head does (z + W h); the rollout snaps it onto its codes
            self.pooled_regressor = nn.Linear(d_model, global_dim)
            nn.init.zeros_(self.pooled_regressor.weight)
            nn.init.zeros_(self.pooled_regressor.bias)
        if self.pooled == "categorical":
            self.pooled_logits = CodeLogits(int(pooled_codes), global_dim, width)
            self.pooled_query = nn.Linear(d_model, width)
            self.pooled_input = nn.Linear(global_dim, width)
            self.pooled_mix = nn.Sequential(nn.GELU(), nn.Linear(width, width))
        self.register_buffer("has_codebook", torch.zeros((), dtype=torch.bool))

    def set_codebook(self, codebook) -> None:
        """Take the codes of ``codebook`` (a ``CellCodebook`` of this head's numbers and shapes)."""
        wanted = [(self.cell_logits.codes.shape, codebook.centroids)]
        if self.pooled == "categorical":
            wanted.append((self.pooled_logits.codes.shape, codebook.pooled))
        for shape, codes in wanted:
            if codes is None or tuple(codes.shape) != tuple(shape):
                got = None if codes is None else tuple(codes.shape)
                raise ValueError(f"head=categorical has {tuple(shape)} codes, the codebook {got}: head.codes and "
                                 f"head.pooled_codes must be model.train_snap and model.train_snap_pooled")
        self.cell_logits.set_codes(codebook.centroids.to(self.cell_logits.codes))
        if self.pooled == "categorical":
            self.pooled_logits.set_codes(codebook.pooled.to(self.pooled_logits.codes))
        self.has_codebook.fill_(True)

    def logits(self, h: Tensor, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """h (N, D), z (N, L) -> logits over the cell codes (N, cells, K) and over the pooled codes (N, P) (None
        unless ``pooled="categorical"``)."""
        if not self.has_codebook:
            raise RuntimeError("head=categorical has no codebook: it is set by two-stage training with "
                               "model.train_snap=K (set_codebook)")
        n, cells = z.shape[0], self.grid * self.grid
        grid = z[:, : self.channels * cells].reshape(n, self.channels, self.grid, self.grid)
        features = (self.query(h).view(n, self.width, self.grid, self.grid) + self.position
                    + self.input_view(grid / self.cell_logits.scale))
        features = features + self.mix(features)
        for block in self.blocks:
            features = features + block(features)
        features = features.flatten(2).transpose(1, 2)  # (N, cells, W)
        cell = self.cell_logits(features, grid.flatten(2).transpose(1, 2))
        if self.pooled != "categorical":
            return cell, None
        pooled_in = z[:, z.shape[1] - self.global_dim:]
        feature = self.pooled_query(h) + self.pooled_input(pooled_in / self.pooled_logits.scale)
        feature = feature + self.pooled_mix(feature)
        pooled = self.pooled_logits(feature[:, None], pooled_in[:, None])[:, 0]
        return cell, pooled

    def _latent(self, cell_codes: Tensor, pooled_codes: Tensor | None) -> Tensor:
        """cell values (N, cells, C) and pooled values (N, G) or None -> latents (N, L) in the codec's layout."""
        parts = [cell_codes.transpose(1, 2).flatten(1)]  # the grid is stored channels first
        if pooled_codes is not None:
            parts.append(pooled_codes)
        return torch.cat(parts, 1)

    def loss(self, h: Tensor, z: Tensor, z_next: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Cross-entropy of the next latent's codes (each cell's, averaged, plus the pooled one's) at ``loss_frames``
        frames of each clip drawn with ``generator`` (all of them when 0 or the clip is shorter)."""
        b, t = h.shape[:2]
        if self.loss_frames and t > self.loss_frames:  # the (cells x K) logits of every frame would not fit
            at = torch.rand(b, t, generator=generator, device=h.device).argsort(1)[:, : self.loss_frames]
            pick = lambda x: torch.gather(x, 1, at[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
            h, z, z_next = pick(h), pick(z), pick(z_next)
        n = h.shape[0] * h.shape[1]
        h, z = h.reshape(n, -1), z.reshape(n, -1)
        cell, pooled = self.logits(h, z)
        z_next = z_next.detach().reshape(n, -1)
        target = self.cell_logits.index(grid_cells(z_next, self.channels, self.grid))
        ce = nn.functional.cross_entropy(cell.flatten(0, 1).float(), target, reduction="none").view(n, -1).mean(1)
        pooled_next = z_next[:, z_next.shape[1] - self.global_dim:]
        if pooled is not None:
            ce = ce + nn.functional.cross_entropy(pooled.float(), self.pooled_logits.index(pooled_next),
                                                  reduction="none")
        if self.pooled == "mean":  # the mse head's loss on those dims, in latent units
            ce = ce + (self._pooled_mean(h, z) - pooled_next).square().mean(1)
        return ce.view(b, -1).mean(1)

    def _pooled_mean(self, h: Tensor, z: Tensor) -> Tensor:
        """h (N, D), z (N, L) -> (N, global_dim) the regressed next pooled dims (``pooled="mean"``)."""
        return z[:, z.shape[1] - self.global_dim:] + self.pooled_regressor(h)

    def mean(self, h: Tensor, z: Tensor) -> Tensor:
        """The expected latent: each cell's (and pooled code's) values weighted by their probabilities."""
        h_flat, z_flat = h.reshape(-1, h.shape[-1]), z.reshape(-1, z.shape[-1])
        cell, pooled = self.logits(h_flat, z_flat)
        expected = lambda logits, codes: logits.softmax(-1) @ codes  # noqa: E731
        cells = expected(cell, self.cell_logits.codes)
        return self._latent(cells, self._pooled_values(h_flat, z_flat, pooled, expected)).reshape(z.shape)

    def sample(self, h: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of every code at ``temperature`` (Gumbel-max with ``generator``; 0: the most likely codes)."""
        h_flat, z_flat = h.reshape(-1, h.shape[-1]), z.reshape(-1, z.shape[-1])
        cell, pooled = self.logits(h_flat, z_flat)
        drawn = lambda logits, codes: codes[self._draw(logits, generator)]  # noqa: E731
        cells = drawn(cell, self.cell_logits.codes)
        return self._latent(cells, self._pooled_values(h_flat, z_flat, pooled, drawn)).reshape(z.shape)

    def _pooled_values(self, h: Tensor, z: Tensor, logits: Tensor | None, pick) -> Tensor | None:
        """The next pooled dims (N, global_dim): ``pick(logits, codes)`` of the pooled codes, or the regressed
        mean (``pooled="mean"``); None for a codec without them."""
        if logits is not None:
            return pick(logits, self.pooled_logits.codes)
        return None if self.pooled is None else self._pooled_mean(h, z)

    def _draw(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        """logits (..., K) -> (...) code indices drawn at ``temperature``."""
        if not self.temperature:
            return logits.argmax(-1)
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
        return (logits.float() / self.temperature + gumbel).argmax(-1)
