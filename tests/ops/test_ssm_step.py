"""The fused CPU step of the Mamba and Mamba-2 mixers gives what their PyTorch reference steps give."""

import pytest
import torch

from lightning_ssmvid.cores.mamba import MambaMixer
from lightning_ssmvid.cores.mamba2 import Mamba2Mixer
from lightning_ssmvid.ops import ssm_step_cpu

pytestmark = pytest.mark.skipif(ssm_step_cpu.kernel() is None, reason="no C++ toolchain to build the kernel")

MIXERS = {
    "mamba": lambda: MambaMixer(24, d_state=8, d_conv=4, dt_rank=3),
    "mamba d_conv 2": lambda: MambaMixer(16, d_state=4, d_conv=2),
    "mamba2": lambda: Mamba2Mixer(32, d_state=8, headdim=16),
    "mamba2 two groups": lambda: Mamba2Mixer(32, d_state=4, headdim=8, ngroups=2),
}


def trained_like(name: str):
    """A mixer with every parameter perturbed (so the zero/one initialisations hide no bug) and a random state."""
    torch.manual_seed(0)
    mixer = MIXERS[name]().eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    state = {k: torch.randn_like(v) for k, v in mixer.initial_state(3).items()}
    return mixer, state


@pytest.mark.parametrize("name", MIXERS)
def test_fused_step_matches_the_reference_step(name):
    mixer, state = trained_like(name)
    u = torch.randn(3, mixer.d_model)
    with torch.no_grad():
        y, new = mixer.step(u, state)
        y_ref, new_ref = mixer._step_reference(u, state)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for key in new_ref:
        torch.testing.assert_close(new[key], new_ref[key], rtol=1e-5, atol=1e-5)
    assert not torch.equal(new["ssm"], state["ssm"])


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_the_fused_step_serves_float32_cpu_inference_only(monkeypatch, name):
    mixer, state = trained_like(name)
    calls = []
    kernel = ssm_step_cpu.mamba_step if name == "mamba" else ssm_step_cpu.mamba2_step
    monkeypatch.setattr(ssm_step_cpu, f"{name}_step", lambda *a: calls.append(1) or kernel(*a))
    u = torch.randn(3, mixer.d_model)
    with torch.no_grad():
        mixer.step(u, state)
        assert calls == [1]
        mixer.double().step(u.double(), {k: v.double() for k, v in state.items()})  # float64: PyTorch
        monkeypatch.setenv("SSMVID_FUSED_STEP", "0")
        mixer.float().step(u, state)  # switched off: PyTorch
    mixer.step(u, state)  # autograd on (training): PyTorch
    assert calls == [1]


def test_the_inputs_are_not_modified():
    mixer, state = trained_like("mamba2")
    before = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        mixer.step(torch.randn(3, mixer.d_model), state)
    for key in state:
        assert torch.equal(state[key], before[key])
