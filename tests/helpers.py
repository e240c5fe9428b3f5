"""Helpers shared by several test modules (one place, so no test module imports another)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightning_ssmvid.data.long_memory import LongMemoryConfig
from lightning_ssmvid.utils.config import CONFIG_DIR, PROJECT_ROOT


def compose_config(output_dir: Path, data_dir: str, *overrides: str) -> DictConfig:
    """The train config as `python -m lightning_ssmvid.train` would see it, with outputs under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir / "run")
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.data_dir = data_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a Hydra app's task function never sees this node
    return cfg


def shrink_data(cfg) -> None:
    """Fewer synthetic clips and codec steps (same clip length and model) so every experiment runs in seconds."""
    with open_dict(cfg):
        if cfg.data.get("generator"):
            cfg.data.generator.n_train = min(cfg.data.generator.n_train, 2)
            cfg.data.generator.n_val = min(cfg.data.generator.n_val, 1)
            if "n_test" in cfg.data.generator:
                cfg.data.generator.n_test = min(cfg.data.generator.n_test, 1)
        if cfg.stages.mode == "two_stage":
            cfg.stages.codec_training.steps = 2


LONG_MEMORY_TINY = [
    "data=long_memory", "data.generator.n_frames=200", "data.generator.gap_bins=[10,20]", "data.generator.n_train=3",
    "data.generator.n_val=1", "data.generator.n_test=1", "data.clip_length=20", "data.batch_size=2",
    "data.frame_size=32", "core.d_model=16", "codec.latent_dim=16", "codec.width=4", "logger=none", "seed=3",
]
TINY_CSV = [*(o for o in LONG_MEMORY_TINY if not o.startswith("logger=")), "logger=csv"]


def run_module(module: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process (Lightning starts the second DDP process itself)."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=420)
    if check:
        assert result.returncode == 0, (f"{module} {' '.join(args)} failed:\n{result.stdout[-4000:]}\n"
                                        f"{result.stderr[-4000:]}")
    return result


# 64 px: this decord build decodes widths that are not multiples of 64 stretched (see tests/data/test_long_memory.py)
CONFIG = LongMemoryConfig(frame_size=64, n_frames=200, gap_bins=(8, 24, 48), min_visible=8, reveal_frames=4,
                          n_train=0, n_val=0, n_test=4)


def inputs(dtype, length, bc="variable", batch=2, dim=6, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    if bc == "variable":
        B, C = r(batch, n, length), r(batch, n, length)
    elif bc == "grouped":
        B, C = r(batch, 2, n, length), r(batch, 2, n, length)
    else:  # time-invariant (D, N)
        B, C = r(dim, n), r(dim, n)
    return dict(
        u=r(batch, dim, length), delta=r(batch, dim, length, scale=0.5),
        A=-torch.exp(r(dim, n)), B=B, C=C, D=r(dim), z=r(batch, dim, length), delta_bias=r(dim, scale=0.5),
    )


def step_rollout(core, u):
    """The core's step mode over u (B, T, D) -> (y (B, T, D), final state)."""
    state = core.initial_state(u.shape[0], dtype=u.dtype)
    ys = []
    for u_t in u.unbind(1):
        y_t, state = core.step(u_t, state)
        ys.append(y_t)
    return torch.stack(ys, 1), state
