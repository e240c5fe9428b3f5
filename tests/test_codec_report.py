"""codec_report: an exact codec keeps the scene until its latent is perturbed; only the chosen dims are perturbed;
a stage-1 folder is read as plain values (no class named by a file is built)."""

import json

import pytest
import torch
import yaml

from lightning_ssmvid.codec_report import load_stage1_codec, main, score
from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.data.long_memory import generate_long_memory, list_clips, load_sidecar
from tests.helpers import CONFIG


class PixelCodec:
    """A near-exact stand-in: the latent is the frame's pixels (decoded through a soft sigmoid, so noise moves colours
    rather than saturating), the last ``global_dim`` of them counted as 'pooled'."""

    def __init__(self, global_dim: int = 0):
        self.global_dim = global_dim

    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return (8 * (z - 0.5)).view(-1, 3, 64, 64)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    dataset = generate_long_memory(tmp_path_factory.mktemp("lm"), CONFIG, workers=1, progress=False)
    return dataset / "test"


@pytest.fixture(scope="module")
def clips(split):
    return [load_sidecar(p) for p in list_clips(split)[:2]]


def test_an_exact_codec_keeps_the_scene_and_loses_it_under_noise(clips):
    figures = score(PixelCodec(), clips, list(range(16, 120, 8)), [0.0, 3.0], ["grid"])
    assert figures["unperturbed"]["colours_kept"] > 0.95 and figures["unperturbed"]["occluder_kept"] > 0.99
    noisy = figures["grid sigma=3"]
    assert noisy["colours_kept"] < 0.8 and noisy["occluder_kept"] < 0.5, figures


def test_only_the_chosen_part_of_the_latent_is_perturbed(clips):
    # every pixel counted as 'pooled': perturbing the grid part changes nothing, the pooled part loses the scene
    everything_pooled = PixelCodec(global_dim=3 * 64 * 64)
    figures = score(everything_pooled, clips, list(range(16, 120, 8)), [0.0, 3.0], ["grid", "pooled"])
    assert figures["grid sigma=3"] == figures["unperturbed"]
    assert figures["pooled sigma=3"]["colours_kept"] < 0.8 and figures["pooled sigma=3"]["occluder_kept"] < 0.5


def test_the_command_scores_a_stage1_codec_folder(split, tmp_path):
    folder = tmp_path / "codec"
    folder.mkdir()
    codec = ConvCodec(frame_size=64, latent_dim=144, width=8, global_dim=16)
    torch.save({"state_dict": codec.state_dict()}, folder / "codec.pt")
    spec = {"_target_": "lightning_ssmvid.codecs.conv.ConvCodec", "frame_size": 64, "channels": 3,
            "latent_dim": 144, "width": 8, "global_dim": 16}
    (folder / "identity.yaml").write_text(yaml.safe_dump({"codec": spec}))
    out = tmp_path / "report"
    figures = main(["--codec", str(folder), "--data", str(split), "--clips", "1", "--frames", "48", "--every", "8",
                    "--sigmas", "0", "0.5", "--out", str(out)])
    written = json.loads((out / "codec.json").read_text())
    assert written["figures"] == figures
    assert set(figures) == {"unperturbed", "grid sigma=0.5", "pooled sigma=0.5", "all sigma=0.5"}
    assert "8x8x2 grid + 16 frame-pooled" in (out / "codec.md").read_text()


def test_a_folder_naming_another_class_is_refused(tmp_path):
    (tmp_path / "codec.pt").write_bytes(b"")
    (tmp_path / "identity.yaml").write_text(yaml.safe_dump({"codec": {"_target_": "os.system", "command": "x"}}))
    with pytest.raises(Exception, match="ConvCodec"):
        load_stage1_codec(tmp_path)
    (tmp_path / "identity.yaml").unlink()
    with pytest.raises(Exception, match="identity.yaml"):
        load_stage1_codec(tmp_path)
