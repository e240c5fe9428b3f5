"""Opening checkpoints safely: tensors and plain values only, and a stored config that can only build our classes.

A ``.ckpt`` is a pickle: ``torch.load(weights_only=False)`` would run any code inside it, and a run config
handed to Hydra's ``instantiate`` could name any importable callable. Every checkpoint, codec and cache file is
opened here with ``weights_only=True``, and a stored config is instantiated only when each ``_target_`` is ours
(``lightning_ssmvid.``) or one of the few library classes our configs use (optimisers, schedulers).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning_ssmvid.utils.errors import UserError

ALLOWED_TARGET_PREFIXES = ("lightning_ssmvid.", "torch.optim.")
ALLOWED_TARGETS = frozenset({  # library classes our configs name (built by train/evaluate, never with code args)
    "lightning.pytorch.Trainer", "lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.RichProgressBar", "lightning.pytorch.callbacks.LearningRateMonitor",
})


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """The contents of a checkpoint (or codec) file, opened without running code; a missing, damaged or hostile
    file is a ``UserError`` that names it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (expected e.g. RUN/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():  # a class or function to import: what a payload needs
            raise UserError(f"{path} holds objects other than tensors and plain values (opening it could run code); "
                            "refused. Use a checkpoint written by lightning_ssmvid.train") from None
        raise UserError(f"{path} is not a readable checkpoint ({_first_line(error)}); delete it or pass another") \
            from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise UserError(f"{path} is not a readable checkpoint ({_first_line(error)}); delete it or pass another") \
            from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not a lightning_ssmvid checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def check_targets(config: Any, source: str, where: str = "") -> None:
    """Refuse a config (nested dicts/lists) naming a ``_target_`` outside ``ALLOWED_TARGET_PREFIXES``."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None and not (isinstance(target, str) and (target.startswith(ALLOWED_TARGET_PREFIXES)
                                                                     or target in ALLOWED_TARGETS)):
            raise UserError(f"{source} names _target_ {target!r} at {where or 'the top'}: only lightning_ssmvid "
                            "classes, torch.optim and a few Lightning callbacks and loggers may be built from a "
                            "stored config; refused")
        for key, value in config.items():
            check_targets(value, source, f"{where}.{key}" if where else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_targets(value, source, f"{where}[{i}]")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
