"""Sampling settings an inference command may change on a trained model (they are not weights).

    generate/strip: ``temperature=0.7 steps=16 rollout_noise=0.1 reencode=true snap=1024``
    evaluate:       ``head.temperature=0.7 head.steps=16 model.rollout_noise=0.1 model.rollout_reencode=true snap=1024``

``temperature`` scales a stochastic head's starting noise, ``steps`` is its number of Euler steps per frame, and
``rollout_noise`` is the context-noise level the core is told its own generated inputs carry (diffusion forcing's
inference trick; only meaningful for a model trained with ``model.context_noise``), and ``reencode`` feeds back each
generated frame decoded and encoded again (``model.rollout_reencode``) instead of its latent. ``snap=K`` (generate,
strip and evaluate) snaps each generated latent's grid cells onto K k-means centroids of real training frames' cells,
and its frame-pooled dims onto ``snap_pooled`` (default 256) centroids of theirs (``codecs/codebook.py``; fitted once
per run and setting, kept in ``RUN/codebooks/``); ``snap_feedback=g`` carries ``g`` times each snap's error into the
next prediction (error diffusion: changes smaller than the codebook's spacing add up instead of being erased).
"""

from __future__ import annotations

# evaluate's dotted keys -> the setting they change
EVALUATE_KEYS = {"head.temperature": "temperature", "head.steps": "steps", "model.rollout_noise": "rollout_noise",
                 "model.rollout_reencode": "reencode", "model.head.temperature": "temperature",
                 "model.head.steps": "steps"}


def apply_sampling(model, temperature: float | None = None, steps: int | None = None,
                   rollout_noise: float | None = None, reencode: bool | None = None) -> dict:
    """Set the given (non-None) settings on ``model`` (a ``VideoModel``); returns the settings now in force.
    A setting the model's head does not have (``temperature`` of the mse head) is a ``ValueError``."""
    head = model.head
    for name, value in (("temperature", temperature), ("steps", steps)):
        if value is None:
            continue
        if not hasattr(head, name):
            raise ValueError(f"{name}={value}: the {type(head).__name__} has no {name} (only a stochastic head does)")
        if (name == "steps" and (int(value) != value or value < 1)) or (name == "temperature" and value < 0):
            raise ValueError(f"{name}={value}: must be {'an integer >= 1' if name == 'steps' else '>= 0'}")
        setattr(head, name, int(value) if name == "steps" else float(value))
    if rollout_noise is not None:
        if rollout_noise < 0:
            raise ValueError(f"rollout_noise={rollout_noise}: must be >= 0")
        model.rollout_noise = float(rollout_noise)
    if reencode is not None:
        model.rollout_reencode = bool(reencode)
    return sampling_settings(model)


def sampling_settings(model) -> dict:
    """The settings in force: ``rollout_noise``, ``reencode``, and a stochastic head's ``temperature`` and ``steps``."""
    out = {"rollout_noise": float(model.rollout_noise), "reencode": bool(model.rollout_reencode)}
    if getattr(model, "rollout_snap", None) is not None:
        out["snap"] = int(model.rollout_snap.centroids.shape[0])
        pooled = model.rollout_snap.pooled
        out["snap_pooled"] = 0 if pooled is None else int(pooled.shape[0])
        out["snap_feedback"] = float(model.rollout_snap_feedback)
    for name in ("temperature", "steps"):
        if hasattr(model.head, name):
            out[name] = getattr(model.head, name)
    return out
