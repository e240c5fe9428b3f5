"""State read-out probe: memory apart from drawing. A linear (multinomial logistic) classifier reads the cue colour
from the frozen core output at the last hidden frame of each event; it is fitted on training clips and scored on
validation/test clips, per gap bin, with a shuffled-label control and the majority-colour rate as chance."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lightning_ssmvid.metrics.stats import bootstrap_ci


def fit_linear_probe(x: Tensor, y: Tensor, n_classes: int, l2: float = 1e-3, steps: int = 100) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (deterministic).

    x: (N, D), y: (N,) long -> weight (D, K), bias (K,) acting on the raw features (the standardisation folded in).
    """
    # validation runs under inference mode, where autograd is off: fit outside it, on ordinary copies of the data
    with torch.inference_mode(False), torch.enable_grad():
        x, y = x.double().clone(), y.clone()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        xs = (x - mean) / std
        weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(xs @ weight + bias, y) + l2 * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    weight, bias = weight.detach() / std[:, None], bias.detach()
    return weight, bias - mean @ weight


class StateProbe(Metric):
    """``update(features, labels, gap_bins_index, clips, fit=True|False)`` collects (N, D) core outputs with their
    true colours; ``fit=True`` rows train the probe, the others are scored. ``compute()``: ``probe_recall_gap{b}``
    (+ ``_lo``/``_hi`` 95% bootstrap CI over clips), ``probe_recall``, ``probe_chance`` (the rate of the most common
    training colour among the scored events), ``probe_shuffled`` (the probe fitted on shuffled training labels:
    ~chance unless the read-out leaks), ``probe_train`` (accuracy on the training rows)."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, gap_bins: Sequence[int], n_classes: int, feature_dim: int, l2: float = 1e-3, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.gap_bins, self.n_classes, self.l2, self.seed = tuple(int(b) for b in gap_bins), n_classes, l2, seed
        self.feature_dim = feature_dim
        for split in ("fit", "score"):
            for name in ("x", "y", "bin", "clip"):
                self.add_state(f"{split}_{name}", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor, bins: Tensor, clips: Tensor, fit: bool) -> None:
        split = "fit" if fit else "score"
        for name, value in (("x", features.double()), ("y", labels.long()), ("bin", bins.long()),
                            ("clip", clips.long())):
            getattr(self, f"{split}_{name}").append(value.to(self.device))

    def _sync_dist(self, *args, **kwargs) -> None:
        """A rank without events still sends rows of the right dtype and shape (torchmetrics would send float32
        ``[]``, which the other ranks' gather cannot match)."""
        for split in ("fit", "score"):
            for name, empty in (("x", torch.zeros(0, self.feature_dim, dtype=torch.float64)), ("y", None),
                                ("bin", None), ("clip", None)):
                if not getattr(self, f"{split}_{name}"):
                    getattr(self, f"{split}_{name}").append(
                        (torch.zeros(0, dtype=torch.long) if empty is None else empty).to(self.device))
        super()._sync_dist(*args, **kwargs)

    def _cat(self, name: str) -> Tensor:
        values = getattr(self, name)
        return dim_zero_cat(values).cpu() if len(values) else torch.zeros(0)

    def compute(self) -> dict[str, Tensor]:
        value = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        x_fit, y_fit = self._cat("fit_x"), self._cat("fit_y").long()
        x, y, bins, clips = self._cat("score_x"), self._cat("score_y").long(), self._cat("score_bin").long(), \
            self._cat("score_clip").long()
        out = {f"probe_recall_gap{b}": value(math.nan) for b in self.gap_bins}
        if len(y_fit) < 2 or len(y) == 0 or len(torch.unique(y_fit)) < 2:
            return out | {"probe_recall": value(math.nan), "probe_chance": value(math.nan)}
        order = torch.argsort(self._cat("fit_clip").long() * 1_000_003 + y_fit, stable=True)  # rank-order free
        x_fit, y_fit = x_fit[order], y_fit[order]
        weight, bias = fit_linear_probe(x_fit, y_fit, self.n_classes, self.l2)
        correct = ((x.double() @ weight + bias).argmax(1) == y).double()
        for i, b in enumerate(self.gap_bins):
            mask = bins == i
            out[f"probe_recall_gap{b}"] = value(correct[mask].mean().item() if mask.any() else math.nan)
            lo, hi = bootstrap_ci(clips[mask].numpy(), correct[mask].numpy())
            out[f"probe_recall_gap{b}_lo"], out[f"probe_recall_gap{b}_hi"] = value(lo), value(hi)
        out["probe_recall"] = value(correct.mean().item())
        out["probe_train"] = value(((x_fit @ weight + bias).argmax(1) == y_fit).double().mean().item())
        majority = torch.bincount(y_fit, minlength=self.n_classes).argmax()
        out["probe_chance"] = value((y == majority).double().mean().item())
        shuffled = y_fit[torch.from_numpy(np.random.default_rng(self.seed).permutation(len(y_fit)))]
        w_s, b_s = fit_linear_probe(x_fit, shuffled, self.n_classes, self.l2)
        out["probe_shuffled"] = value(((x.double() @ w_s + b_s).argmax(1) == y).double().mean().item())
        return out
