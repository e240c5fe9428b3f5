"""Snapping a generated latent onto a codebook of real latent cells (a post-hoc vector quantiser for rollouts).

A continuous latent drifts off the codec's manifold as a rollout feeds back its own small errors. Discrete-token
world models (VQ latents with a categorical head) cannot drift that way: an error below half a codebook spacing is
erased at every step. ``CellCodebook`` gives a trained continuous model the same property at inference: k-means
centroids of the grid cells of real frames' latents (each cell's ``latent_channels`` numbers), and every generated
latent's cells replaced by their nearest centroid before the frame is shown and fed back, and its frame-pooled dims
(``codec.global_dim``) by the nearest of a second set of centroids. Fitted on training clips only; stored as a plain
``.npz`` of arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_ssmvid.utils.files import atomic_path


def nearest(points: Tensor, centroids: Tensor, chunk: int = 16384) -> tuple[Tensor, Tensor]:
    """points (N, C), centroids (K, C) -> (distance, index) of each point's nearest centroid, both (N,); chunked so
    that the (N, K) distance matrix is never held whole."""
    parts = [torch.cdist(p, centroids).min(1) for p in points.split(chunk)]
    return torch.cat([d for d, _ in parts]), torch.cat([i for _, i in parts])


def kmeans(points: Tensor, k: int, iters: int = 25, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding: points (N, C) -> centroids (k, C). An empty cluster is re-seeded at
    the point farthest from its centroid, so all ``k`` centroids stay in use."""
    points = points.float()
    if points.shape[0] < k:
        raise ValueError(f"k={k} centroids need at least as many points, got {points.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randint(points.shape[0], (1,), generator=generator)]
    closest = ((points - centroids) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: each new centroid drawn in proportion to the squared distance
        pick = torch.multinomial(closest + 1e-12, 1, generator=generator)
        centroids = torch.cat([centroids, points[pick]])
        closest = torch.minimum(closest, ((points - points[pick]) ** 2).sum(1))
    for _ in range(iters):
        distance, assign = nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        if len(empty):
            centroids[empty] = points[distance.topk(len(empty)).indices]
    return centroids


def valid_count(value: float, zero_ok: bool = False) -> bool:
    """Whether ``value`` is a number of centroids: an integer >= 2 (or 0, none, where ``zero_ok``)."""
    return int(value) == value and (value >= 2 or (zero_ok and value == 0))


def grid_cells(latents: Tensor, channels: int, grid: int) -> Tensor:
    """(..., latent_dim) -> (N, channels): every grid cell of every latent, the grid stored channels first."""
    flat = latents.reshape(-1, latents.shape[-1])[:, : channels * grid * grid]
    return flat.reshape(-1, channels, grid * grid).transpose(1, 2).reshape(-1, channels)


class CellCodebook:
    """Snap each grid cell of a codec latent (..., latent_dim) to its nearest of ``centroids`` (K, latent_channels),
    and, with ``pooled`` (P, global_dim), its frame-pooled dims to their nearest row of ``pooled``.

    The codec's latent is its grid flattened channels first, (latent_channels, grid, grid), then ``global_dim``
    frame-pooled dims (``codecs/conv.py``), which are broadcast to every cell when decoding: left as drawn, their
    drift repaints the whole frame (the occluder first), so they are snapped too unless ``pooled`` is None."""

    def __init__(self, centroids: Tensor, grid: int, global_dim: int = 0, pooled: Tensor | None = None):
        self.centroids, self.grid, self.global_dim = centroids.float(), int(grid), int(global_dim)
        self.pooled = pooled.float() if pooled is not None else None
        self.channels = self.centroids.shape[1]

    def cells(self, latents: Tensor) -> Tensor:
        """(..., latent_dim) -> (N, latent_channels): every grid cell of every latent."""
        return grid_cells(latents, self.channels, self.grid)

    def __call__(self, latents: Tensor) -> Tensor:
        """(..., latent_dim) -> the same shape, each grid cell (and the pooled part) the nearest centroid."""
        flat = latents.reshape(-1, latents.shape[-1])
        n_grid = self.channels * self.grid * self.grid
        cells = self.cells(flat)
        centroids = self.centroids.to(cells)
        snapped = centroids[nearest(cells, centroids)[1]]
        grid = snapped.reshape(flat.shape[0], self.grid * self.grid, self.channels).transpose(1, 2)
        rest = flat[:, n_grid:]
        if self.pooled is not None and rest.shape[1]:
            pooled = self.pooled.to(rest)
            rest = pooled[nearest(rest, pooled)[1]]
        return torch.cat([grid.reshape(flat.shape[0], n_grid), rest], 1).reshape(latents.shape)

    @classmethod
    def fit(cls, codec, frames: Iterable[Tensor], k: int, k_pooled: int = 0, seed: int = 0,
            max_cells: int = 200_000) -> CellCodebook:
        """k-means over the grid cells of ``codec.encode(frames)`` for each (N, C, H, W) batch in [0, 1] of
        ``frames`` (at most ``max_cells`` cells, drawn uniformly with ``seed``), and with ``k_pooled`` > 0 over
        their frame-pooled parts, if the codec has any (at most one centroid per frame: more would be the frames)."""
        if codec.global_dim >= codec.latent_dim or not hasattr(codec, "latent_channels"):
            raise ValueError("snapping needs a codec with a latent grid (codecs/conv.py)")
        with torch.no_grad():
            latents = torch.cat([codec.encode(batch).float().cpu() for batch in frames])  # k-means on the CPU generator
        cells = grid_cells(latents, codec.latent_channels, codec.grid)
        generator = torch.Generator().manual_seed(seed)
        if cells.shape[0] > max_cells:
            cells = cells[torch.randperm(cells.shape[0], generator=generator)[:max_cells]]
        parts = latents[:, latents.shape[1] - codec.global_dim:]
        pooled = kmeans(parts, min(k_pooled, len(parts)), seed=seed) if k_pooled and codec.global_dim else None
        return cls(kmeans(cells, k, seed=seed), codec.grid, codec.global_dim, pooled)

    def save(self, path: str | Path) -> None:
        """A plain float32 ``.npz`` of the centroids (``cells``, and ``pooled`` if any; loaded without pickle)."""
        arrays = {"cells": self.centroids.numpy().astype(np.float32)}
        if self.pooled is not None:
            arrays["pooled"] = self.pooled.numpy().astype(np.float32)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)

    @classmethod
    def load(cls, path: str | Path, codec) -> CellCodebook:
        """Centroids saved by ``save``, for ``codec``; a file of another shape is a ``ValueError``."""
        with np.load(path, allow_pickle=False) as saved:
            centroids = torch.from_numpy(saved["cells"])
            pooled = torch.from_numpy(saved["pooled"]) if "pooled" in saved.files else None
        return cls.for_codec(centroids, pooled, codec, str(path))

    @classmethod
    def for_codec(cls, centroids: Tensor, pooled: Tensor | None, codec, source: str = "codebook") -> CellCodebook:
        """Centroids (K, latent_channels) and pooled ones (P, global_dim) or None, for ``codec``; arrays of other
        shapes are a ``ValueError`` naming ``source``."""
        if not torch.is_tensor(centroids) or centroids.ndim != 2 or centroids.shape[1] != codec.latent_channels or (
                pooled is not None and (not torch.is_tensor(pooled) or pooled.ndim != 2
                                        or pooled.shape[1] != codec.global_dim)):
            shapes = [tuple(getattr(a, "shape", ())) for a in (centroids, pooled) if a is not None]
            raise ValueError(f"{source}: a codebook of shapes {', '.join(map(str, shapes))} does not fit this "
                             f"codec's {codec.latent_channels} channels a cell and {codec.global_dim} pooled dims")
        return cls(centroids, codec.grid, codec.global_dim, pooled)
