"""The foreground-weighted reconstruction error: small objects count, and (symmetric) so do halos."""

import torch

from lightning_ssmvid.codecs.losses import weighted_frame_error


def frames_with_square(rows: slice, cols: slice) -> torch.Tensor:
    """(1, 1, 3, 16, 16): black, white where ``rows`` x ``cols``."""
    x = torch.zeros(1, 1, 3, 16, 16)
    x[..., rows, cols] = 1.0
    return x


def test_a_missed_object_costs_more_than_plain_mse_says():
    target, blank = frames_with_square(slice(0, 2), slice(0, 2)), torch.zeros(1, 1, 3, 16, 16)
    plain = weighted_frame_error(blank, target, 0.0)
    assert torch.allclose(plain, (blank - target).square().mean().view(1))
    assert weighted_frame_error(blank, target, 30.0) > 10 * plain


def test_symmetric_weighting_makes_a_halo_cost_about_what_a_miss_costs():
    target = frames_with_square(slice(0, 2), slice(0, 2))
    miss = torch.zeros_like(target)
    halo = target.clone()
    halo[..., 8:10, 8:10] = 1.0  # as many wrongly painted pixels as a miss leaves out
    one_sided = weighted_frame_error(halo, target, 30.0) / weighted_frame_error(miss, target, 30.0)
    symmetric = weighted_frame_error(halo, target, 30.0, True) / weighted_frame_error(miss, target, 30.0, True)
    assert one_sided < 0.1  # target-only weights: painting objects too large is nearly free
    assert 0.5 < symmetric < 1.0  # the halo's weight joins the normaliser, so a little below 1
    assert torch.equal(weighted_frame_error(target, target, 30.0, True), torch.zeros(1))
