"""Sequence-model kernels in pure PyTorch (with the ``mamba_ssm`` CUDA kernels used when available)."""

from lightning_ssmvid.ops.fft_conv import causal_conv, direct_conv, fft_conv
from lightning_ssmvid.ops.selective_scan import exp_clamped, selective_scan, selective_scan_ref, selective_scan_torch
from lightning_ssmvid.ops.ssd import segsum, ssd_scan, ssd_scan_ref, ssd_scan_torch

__all__ = [
    "causal_conv", "direct_conv", "exp_clamped", "fft_conv", "segsum", "selective_scan", "selective_scan_ref",
    "selective_scan_torch", "ssd_scan", "ssd_scan_ref", "ssd_scan_torch",
]
