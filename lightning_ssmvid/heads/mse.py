"""The deterministic head: ``z_next = z + W h`` regressed with a mean-squared error (the expected next latent)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_ssmvid.heads import register_head
from lightning_ssmvid.heads.base import Head


@register_head("mse")
class MSEHead(Head):
    def __init__(self, latent_dim: int, d_model: int):
        super().__init__(latent_dim, d_model)
        self.proj = nn.Linear(d_model, latent_dim)
        nn.init.zeros_(self.proj.weight)  # start as "next latent = this latent", a strong baseline for video
        nn.init.zeros_(self.proj.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):  # checkpoints from before heads/ held a bare nn.Linear
            if prefix + name in state_dict:
                state_dict[prefix + "proj." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mean(self, h: Tensor, z: Tensor) -> Tensor:
        return z + self.proj(h)

    def loss(self, h: Tensor, z: Tensor, z_next: Tensor, generator=None) -> Tensor:
        return (self.mean(h, z) - z_next.detach()).square().flatten(1).mean(1)
