"""The protocol arms compose through the real configs, and long-memory batches carry the cue labels of their clips."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.helpers import LONG_MEMORY_TINY


@pytest.mark.parametrize("arm, cue_weight, clip_length", [("cue", 1.0, 240), ("generative", 0.0, 240),
                                                          ("full_clip", 1.0, 1440)])
def test_protocol_arms_compose(compose_cfg, arm, cue_weight, clip_length):
    cfg = compose_cfg("experiment=mamba2_long", f"arm={arm}")
    assert cfg.protocol_arm == arm and cfg.model.cue_weight == cue_weight and cfg.data.clip_length == clip_length
    assert cfg.callbacks.run_summary.extra.arm == arm  # recorded in summary.json: one table row per arm
    assert cfg.model.cue_classes == cfg.data.generator.palette_size


def test_the_long_protocol_defaults_to_the_cue_arm_and_smoke_has_none(compose_cfg):
    assert compose_cfg("experiment=lstm_long").protocol_arm == "cue"
    assert compose_cfg("experiment=smoke").protocol_arm is None


def test_windowed_control_reaches_less_than_the_smallest_gap(compose_cfg):
    cfg = compose_cfg("experiment=transformer_window_long")
    assert cfg.core.window * cfg.core.n_layers < min(cfg.data.generator.gap_bins)


@pytest.mark.parametrize("sampling", ["stream", "random"])
def test_long_memory_batches_carry_the_cue_colour_of_every_frame(compose_cfg, sampling):
    from lightning_ssmvid.data.long_memory import load_sidecar

    cfg = compose_cfg(*LONG_MEMORY_TINY, f"data.sampling={sampling}", "data.samples_per_epoch=4")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["cue"].shape == batch["frames"].shape[:2] and (batch["cue"] >= 0).all()
    for b in range(batch["cue"].shape[0]):
        path = datamodule.train_set.videos[int(batch["video"][b])].path
        start, length = int(batch["start"][b]), batch["cue"].shape[1]
        np.testing.assert_array_equal(batch["cue"][b].numpy(), load_sidecar(path)["cue_colour"][start : start + length])
    val = next(iter(datamodule.val_dataloader()))
    assert "cue" in val  # validation batches too: val/cue_ce
