"""The interface every per-frame head implements.

    loss = head.loss(h, z, z_next, generator)  # (B,) per-clip training loss; h (B, T, D), z and z_next (B, T, L)
    z_next = head.sample(h, z, generator)      # (..., L): a draw of the next latent (the mean for a deterministic head)
    z_mean = head.mean(h, z)                   # (..., L): a deterministic point estimate (pixel loss, PSNR)

``z`` is the latent the core read at that frame; every head predicts relative to it (video changes little per frame).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class Head(nn.Module, ABC):
    """Core output (..., d_model) and input latent (..., latent_dim) -> next latent (..., latent_dim)."""

    stochastic: bool = False
    loss_name: str = "latent_mse"  # the name the training loss is logged under

    def __init__(self, latent_dim: int, d_model: int):
        super().__init__()
        self.latent_dim, self.d_model = latent_dim, d_model

    @abstractmethod
    def loss(self, h: Tensor, z: Tensor, z_next: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """h (B, T, D), z (B, T, L) the inputs, z_next (B, T, L) the targets -> (B,) mean loss per clip; a
        stochastic head draws its training noise from ``generator``."""

    @abstractmethod
    def mean(self, h: Tensor, z: Tensor) -> Tensor:
        """h (..., D), z (..., L) -> (..., L) the expected next latent."""

    def sample(self, h: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """h (..., D), z (..., L) -> (..., L) one draw of the next latent (the mean for a deterministic head)."""
        return self.mean(h, z)
