"""The fused CPU flow sampler draws what the PyTorch reference (FlowHead's Euler loop) draws."""

import pytest
import torch

from lightning_ssmvid.heads.flow import FlowHead
from lightning_ssmvid.ops import flow_euler_cpu

pytestmark = pytest.mark.skipif(flow_euler_cpu.kernel() is None, reason="no C++ toolchain to build the kernel")


def trained_like(latent: int = 12, d_model: int = 10, width: int = 16, depth: int = 2, steps: int = 5,
                 condition_on_input: bool = False, copy_skip: bool = False, input_skip: bool = False) -> FlowHead:
    """A head whose zero-initialised modulations and output are randomised (as training leaves them)."""
    torch.manual_seed(0)
    head = FlowHead(latent, d_model, width=width, depth=depth, steps=steps, condition_on_input=condition_on_input,
                    target="frame" if copy_skip else "change", copy_skip=copy_skip, input_skip=input_skip).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        head.scale.uniform_(0.5, 2.0)
        if copy_skip:
            head.center.uniform_(-1.0, 1.0)
    return head


@pytest.mark.parametrize("rows, depth, steps, on_input, copy_skip, input_skip", [
    (1, 2, 5, False, False, False), (7, 1, 8, False, False, False), (3, 3, 1, False, False, False),
    (7, 2, 4, True, False, False), (5, 2, 6, True, True, False), (2, 1, 1, False, True, False),
    (6, 2, 5, True, False, True), (1, 1, 3, True, False, True)])
def test_fused_sampler_matches_the_pytorch_loop(monkeypatch, rows, depth, steps, on_input, copy_skip, input_skip):
    head = trained_like(depth=depth, steps=steps, condition_on_input=on_input, copy_skip=copy_skip,
                        input_skip=input_skip)
    h, z = torch.randn(rows, 10), torch.randn(rows, 12)
    with torch.no_grad():
        fused = head.sample(h, z, torch.Generator().manual_seed(3))
        monkeypatch.setenv("SSMVID_FUSED_FLOW", "0")
        reference = head.sample(h, z, torch.Generator().manual_seed(3))
    assert not torch.equal(reference, z)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_the_fused_path_serves_inference_only(monkeypatch):
    head, calls = trained_like(), []
    monkeypatch.setattr(flow_euler_cpu, "flow_euler", lambda *a: calls.append(1) or a[0])
    h, z = torch.randn(2, 10), torch.randn(2, 12)
    with torch.no_grad():
        head.sample(h, z)
    assert calls == [1]
    head.sample(h, z)  # with autograd on (training-time sampling): the PyTorch loop
    assert calls == [1]


@pytest.mark.parametrize("on_input", [False, True])
def test_step_modulations_are_the_per_row_modulations_at_each_step_time(on_input):
    head = trained_like(condition_on_input=on_input)
    h, z = torch.randn(4, 10), torch.randn(4, 12)
    times = torch.arange(head.steps) / head.steps
    with torch.no_grad():
        per_row = head.modulations(times[:, None].expand(-1, 4), h.expand(head.steps, -1, -1),
                                   z.expand(head.steps, -1, -1))
        for fast, slow in zip(head.step_modulations(h, z), per_row):
            torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)


def test_the_kernel_sees_weights_changed_in_place(monkeypatch):
    head = trained_like()
    h, z = torch.randn(2, 10), torch.randn(2, 12)
    with torch.no_grad():
        head.sample(h, z)  # builds the stacked-weight cache
        head.blocks[0].mlp[0].weight.mul_(-1.5)  # as an optimiser step or load_state_dict would
        fused = head.sample(h, z, torch.Generator().manual_seed(1))
        monkeypatch.setenv("SSMVID_FUSED_FLOW", "0")
        torch.testing.assert_close(fused, head.sample(h, z, torch.Generator().manual_seed(1)), rtol=1e-5, atol=1e-5)
