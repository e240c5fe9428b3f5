"""The rollout codebook: k-means finds separated clusters, snapping replaces each grid cell (in the codec's own
layout) by its nearest centroid and the frame-pooled dims by theirs (or leaves them), and a saved codebook loads
without pickle."""

import numpy as np
import pytest
import torch

from lightning_ssmvid.codecs.codebook import CellCodebook, kmeans
from lightning_ssmvid.codecs.conv import ConvCodec


def test_kmeans_finds_separated_clusters_and_uses_every_centroid():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (centres[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2)
    found = kmeans(points, 4, seed=1)
    assert torch.cdist(centres, found).min(1).values.max() < 0.1  # each true centre has a centroid at it
    assert kmeans(points, 7, seed=1).unique(dim=0).shape[0] == 7  # more centroids than clusters: none left empty
    with pytest.raises(ValueError, match="at least as many points"):
        kmeans(points[:3], 4)


@pytest.mark.parametrize("snap_pooled", [False, True])
def test_snap_works_cell_by_cell_in_the_codecs_layout(snap_pooled):
    codec = ConvCodec(frame_size=32, latent_dim=4 * 16 + 8, width=8, global_dim=8)  # a 4 x 4 grid, 4 channels
    centroids, pooled = torch.randn(5, 4), torch.randn(3, 8)
    book = CellCodebook(centroids, codec.grid, codec.global_dim, pooled if snap_pooled else None)
    choice = torch.randint(5, (3, 16))
    grid = centroids[choice].transpose(1, 2).reshape(3, 4, 4, 4)  # (B, C, g, g): the layout decode reads
    z = torch.cat([grid.reshape(3, 64), pooled[torch.tensor([2, 0, 1])]], 1)
    noisy = z + 0.01 * torch.randn_like(z)
    snapped = book(noisy.reshape(3, 1, 72)).reshape(3, 72)
    torch.testing.assert_close(snapped[:, :64], z[:, :64])  # every cell back on its own centroid
    torch.testing.assert_close(snapped[:, 64:], z[:, 64:] if snap_pooled else noisy[:, 64:])
    cells = book.cells(z)
    torch.testing.assert_close(cells.reshape(3, 16, 4), grid.reshape(3, 4, 16).transpose(1, 2))
    torch.testing.assert_close(cells[1], grid[0, :, 0, 1])  # cell (row 0, column 1) of the first latent


def test_fit_save_load(tmp_path):
    torch.manual_seed(0)
    codec = ConvCodec(frame_size=32, latent_dim=4 * 16 + 8, width=8, global_dim=8).eval()
    frames = [torch.rand(6, 3, 32, 32) for _ in range(2)]
    book = CellCodebook.fit(codec, iter(frames), k=8, k_pooled=50, seed=0)
    assert book.centroids.shape == (8, 4) and book.pooled.shape == (12, 8)  # 12 frames: at most 12 pooled centroids
    with torch.no_grad():
        z = codec.encode(frames[0])
    snapped = book(z)
    assert {tuple(c.tolist()) for c in book.cells(snapped)} <= {tuple(c.tolist()) for c in book.centroids}
    assert {tuple(c.tolist()) for c in snapped[:, 64:]} <= {tuple(c.tolist()) for c in book.pooled}
    book.save(tmp_path / "book.npz")
    loaded = CellCodebook.load(tmp_path / "book.npz", codec)
    torch.testing.assert_close(loaded(z), snapped)
    assert CellCodebook.fit(codec, iter(frames), k=8).pooled is None  # k_pooled=0: the pooled dims as drawn
    np.savez(tmp_path / "wrong.npz", cells=np.zeros((8, 3), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        CellCodebook.load(tmp_path / "wrong.npz", codec)
    np.savez(tmp_path / "pickled.npz", cells=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):  # an object array needs pickle: never loaded
        CellCodebook.load(tmp_path / "pickled.npz", codec)
