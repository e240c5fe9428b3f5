"""Every core of the comparison has one size (conf/matched/), used by its _long and _short experiments, and the
sizes give about the same number of core parameters (the README's "about 1.0M each, within 10%")."""

import pytest
from hydra.utils import instantiate

from lightning_ssmvid.utils.config import CONFIG_DIR, compose_train_config

CORES = sorted(p.stem for p in (CONFIG_DIR / "matched").glob("*.yaml"))


@pytest.mark.parametrize("core", CORES)
def test_long_and_short_take_their_core_from_the_one_matched_size(core):
    for family in ("long", "short"):
        text = (CONFIG_DIR / "experiment" / f"{core}_{family}.yaml").read_text()
        assert f"- /matched/{core}" in text and "d_model" not in text, f"{core}_{family} must not set sizes itself"
    long, short = (compose_train_config(f"experiment={core}_{family}").core for family in ("long", "short"))
    assert long == short


def test_matched_sizes_have_about_the_same_parameter_count():
    counts = {}
    for core in CORES:
        model = instantiate(compose_train_config(f"experiment={core}_long").core)
        counts[core] = sum(p.numel() for p in model.parameters())
    mean = sum(counts.values()) / len(counts)
    assert all(abs(n - mean) / mean <= 0.10 for n in counts.values()), counts
