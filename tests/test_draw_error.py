"""draw_error: an oracle head's draws have no error and keep the colours; copy-last errs on the cells the moving
objects cover; a deterministic head reports its mean only."""

import pytest
import torch
import torch.nn.functional as F

from lightning_ssmvid.data.long_memory import generate_long_memory, list_clips, load_sidecar
from lightning_ssmvid.draw_error import draw_errors
from tests.helpers import CONFIG


class CellCodec:
    """An exact stand-in for the conv codec's layout: each 8x8-pixel cell's pixels are its channels."""

    grid, latent_channels, global_dim = 8, 3 * 64, 0

    def encode(self, x):
        return F.pixel_unshuffle(x, 8).flatten(1)

    def decode(self, z):
        return 8 * (F.pixel_shuffle(z.view(-1, self.latent_channels, 8, 8), 8) - 0.5)


class OracleHead:
    """Draws the real next latent: the core hands it the whole sequence and the frame index as ``h``."""

    stochastic, temperature, scale = True, 1.0, None

    def sample(self, h, z, generator=None):
        return self.sequence[:, h[..., 0].long() + 1]

    def mean(self, h, z):
        return self.sample(h, z)


class OracleModel:
    def __init__(self, stochastic=True):
        self.codec, self.head = CellCodec(), OracleHead()
        self.head.stochastic = stochastic

    def embed(self, z):
        return z

    def core(self, u):
        self.head.sequence = u
        return torch.arange(u.shape[1], dtype=torch.float32)[None, :, None], None


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    dataset = generate_long_memory(tmp_path_factory.mktemp("lm"), CONFIG, workers=1, progress=False)
    return load_sidecar(list_clips(dataset / "test")[0])


def test_the_oracle_draws_exactly_and_copy_last_errs_where_objects_move(sidecar):
    errors = draw_errors(OracleModel(), sidecar, last=120, temperatures=[1.0, 0.5])
    assert set(errors) == {"t=1", "t=0.5", "mean", "copy last"}
    for name in ("t=1", "t=0.5", "mean"):
        assert errors[name]["object_cells"] == errors[name]["other_cells"] == 0.0, errors
        assert errors[name]["colours_kept"] > 0.95, errors
    copy = errors["copy last"]
    assert copy["object_cells"] > 10 * copy["other_cells"] and copy["object_cells"] > 0, errors


def test_a_deterministic_head_reports_its_mean_and_copy_last(sidecar):
    errors = draw_errors(OracleModel(stochastic=False), sidecar, last=60, temperatures=[1.0])
    assert set(errors) == {"mean", "copy last"}


def test_a_last_frame_past_the_clip_is_clamped_and_a_short_span_refused(sidecar):
    errors = draw_errors(OracleModel(), sidecar, last=10_000, temperatures=[1.0])
    assert errors["t=1"]["object_cells"] == 0.0
    with pytest.raises(ValueError, match="context"):
        draw_errors(OracleModel(), sidecar, last=10, temperatures=[1.0])
