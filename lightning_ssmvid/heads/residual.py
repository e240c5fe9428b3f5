"""The regressor's mean plus a flow draw of what it misses (``head=residual``; CorrDiff's "residual corrective
diffusion", Mardani et al. 2023, as a per-frame flow).

The mse head gives the expected next latent ``mu = z + W h``: on the long-memory data's wide codec it keeps the
objects' colours for one step, but a mean moves less than any real future, so its free rollouts stop and then drift.
A flow head drawing the whole frame or its change has to learn the static scene too, and on that codec its one-step
draws err more than copying the last frame. Here the flow head (``FlowHead`` with the change target) draws only the
residual ``z_next - mu`` about the detached mean, normalised by its running per-dim RMS: where the mean is right
(the static cells) that residual is near zero, and the draw puts back the spread the mean averaged away.

    loss   = |mu - z_next|^2 (the mse head's, in latent units) + flow_weight * flow loss of the residual
    sample = mu + a draw of the residual (``temperature=0``: the flow's draw from zero noise; the mean itself with
             ``flow_weight=0``, which trains the mse head with an idle flow)
    mean   = mu

With ``condition_on_input`` the flow reads ``mu`` (its bounded normalisation), not the input latent: the mean is what
the residual is measured from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ssmvid.heads import register_head
from lightning_ssmvid.heads.flow import FlowHead
from lightning_ssmvid.heads.mse import MSEHead


@register_head("residual")
class ResidualFlowHead(FlowHead):
    loss_name = "residual_loss"

    def __init__(self, latent_dim: int, d_model: int, flow_weight: float = 1.0, **flow_options):
        if flow_options.pop("target", "change") != "change":
            raise ValueError("head=residual draws the residual about its mean (head.target must be change)")
        if not flow_weight >= 0:
            raise ValueError(f"head.flow_weight must be >= 0, got {flow_weight!r}")
        super().__init__(latent_dim, d_model, target="change", **flow_options)
        self.flow_weight = float(flow_weight)
        self.regressor = MSEHead(latent_dim, d_model)  # the mean, exactly the mse head (its loss and its init)

    def mean(self, h: Tensor, z: Tensor) -> Tensor:
        return self.regressor.mean(h, z)

    def loss(self, h: Tensor, z: Tensor, z_next: Tensor, generator: torch.Generator | None = None) -> Tensor:
        regression = self.regressor.loss(h, z, z_next)
        if not self.flow_weight:
            return regression
        return regression + self.flow_weight * super().loss(h, self.mean(h, z).detach(), z_next, generator)

    def sample(self, h: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mu = self.mean(h, z)
        return mu if not self.flow_weight else super().sample(h, mu, generator)
