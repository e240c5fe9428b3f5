"""VideoModel: per-frame encoder -> sequence core -> head predicting the next latent -> per-frame decoder."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_ssmvid.codecs.codebook import CellCodebook, valid_count
from lightning_ssmvid.codecs.losses import weighted_frame_error
from lightning_ssmvid.cores import Core, State, detach_state, reset_state_slots
from lightning_ssmvid.frames import clip_shape, to_unit
from lightning_ssmvid.heads import Head, build_head
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.temporal import PooledPSNR
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.loggers import wandb_run_id

log = logging.getLogger(__name__)


class VideoModel(L.LightningModule):
    """Next-frame video model around a pluggable ``core``.

    Training on frames (B, T, C, H, W): ``z = codec.encode(x)``; ``h = core(in_proj(z))``; the ``head``
    (``heads/``: ``mse`` regresses, ``flow`` samples) predicts ``z[t+1]`` from ``h[t]`` and ``z[t]``; the loss is
    ``pixel_weight * mse(decode(z_hat[t]), x[t+1]) + recon_weight * mse(decode(z[t]), x[t])
    + latent_weight * head.loss(h[t], z[t], sg(z[t+1]))`` with ``z_hat`` the head's mean.
    ``context_noise > 0`` corrupts the core's input latents at a level ~ U(0, context_noise) per frame that the core
    is told (so it learns to read imperfect frames, as its own rollout is); generation tells it ``rollout_noise``, and
    with ``rollout_reencode`` feeds back each generated frame decoded and encoded again (onto the codec's manifold).
    ``own_input_rate > 0`` (scheduled sampling, in parallel): a no-grad first pass draws the model's own prediction of
    every frame, and that share of the input frames (after the first) is replaced by it before the training pass,
    whose targets stay the real next frames, so the model learns to correct its own one-step errors.
    ``own_input_from_epoch = E`` trains teacher-forced for the first E epochs and with own inputs after (the curriculum
    of scheduled sampling): the memory is learned on real frames first, which own inputs from the start delay.
    ``own_input_flag`` tells the core which inputs are its own draws (a learned vector added to their embedding; every
    generated frame carries it), so it can keep what it read from real frames when its own draws contradict them.
    ``rollout_loss_steps = n > 0`` (a short self-rollout loss, as autoregressive fine-tuning of weather models): each
    training clip's last ``n`` inputs are also fed as the model's own predictions in step mode from the state before
    them, and the head's loss against the real frames (and the pixel loss) over those ``n`` steps is added with
    ``rollout_loss_weight``; a deterministic head's predictions carry gradients through the chain, a stochastic one's
    draws are detached.
    A batch with a ``"reset"`` (B,) flag is a stream segment: the core state is carried (detached) from the
    previous batch and reset where the flag is set (truncated backprop through time).
    A batch of ``"latents"`` (B, T, latent) instead of frames (two-stage training, ``freeze_codec=True``) trains the
    core and head on the latent loss alone.
    With ``cue_weight > 0`` (the memory arm) a linear cue head reads the long-memory cue colour from ``h`` at every
    frame, adding ``cue_weight * cross_entropy`` against the batch's ``"cue"`` (B, T) labels (-1: no label).
    ``in_proj_hidden > 0`` makes the frame embedding ``in_proj`` a one-hidden-layer MLP (the same for every core);
    ``in_norm`` layer-normalises each latent frame before it.
    Weight decay applies to matrices only: never to SSM dynamics (parameters flagged ``_no_weight_decay``), norms or
    biases, so it cannot pull every core's decay rates toward one value.
    """

    def __init__(
        self,
        codec: nn.Module,
        core: Core,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        pixel_weight: float = 1.0,
        recon_weight: float = 1.0,
        latent_weight: float = 0.1,
        freeze_codec: bool = False,
        max_nonfinite_steps: int = 20,
        activation_checkpointing: bool = False,
        cue_weight: float = 0.0,
        cue_classes: int = 8,
        in_proj_hidden: int = 0,
        in_norm: bool = False,
        head: Callable[..., Head] | None = None,
        context_noise: float = 0.0,
        rollout_noise: float = 0.0,
        rollout_reencode: bool = False,
        foreground_weight: float = 0.0,
        foreground_symmetric: bool = False,
        own_input_rate: float = 0.0,
        own_input_flag: bool = False,
        own_input_from_epoch: int = 0,
        rollout_loss_steps: int = 0,
        rollout_loss_weight: float = 1.0,
        train_snap: int = 0,
        train_snap_pooled: int = 256,
    ):
        super().__init__()
        self.codec, self.core = codec, core
        core.checkpoint_layers = activation_checkpointing
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.pixel_weight, self.recon_weight, self.latent_weight = pixel_weight, recon_weight, latent_weight
        self.foreground_weight = foreground_weight  # joint training: up-weight object pixels, as codec pretraining
        if foreground_symmetric and not foreground_weight:
            raise UserError("model.foreground_symmetric=true weights nothing at model.foreground_weight=0: set both")
        self.foreground_symmetric = foreground_symmetric  # ... and the pixels a decoded frame paints (halos)
        if not 0.0 <= own_input_rate < 1.0:
            raise UserError(f"model.own_input_rate={own_input_rate}: must be in [0, 1)")
        self.own_input_rate = own_input_rate  # scheduled sampling: inputs replaced by the model's own draws
        if not isinstance(own_input_from_epoch, int) or own_input_from_epoch < 0:
            raise UserError(f"model.own_input_from_epoch={own_input_from_epoch}: must be an integer >= 0")
        self.own_input_from_epoch = own_input_from_epoch
        if own_input_flag and not (own_input_rate > 0 or rollout_loss_steps):
            raise UserError("model.own_input_flag=true marks own inputs, and training has none: set "
                            "model.own_input_rate > 0 or model.rollout_loss_steps > 0")
        if not isinstance(rollout_loss_steps, int) or rollout_loss_steps < 0:
            raise UserError(f"model.rollout_loss_steps={rollout_loss_steps}: must be an integer >= 0")
        self.rollout_loss_steps, self.rollout_loss_weight = rollout_loss_steps, rollout_loss_weight
        self._warned_short_rollout_loss = False
        latent_dim, d_model = codec.latent_dim, core.d_model
        # the codec's latent dims differ in scale by 10x (grid vs frame-pooled): normalise each frame before the core
        self.in_norm = nn.LayerNorm(latent_dim) if in_norm else nn.Identity()
        if in_proj_hidden:  # a per-frame MLP shared by every core's design: colour is not linear in the codec latent
            self.in_proj = nn.Sequential(nn.Linear(latent_dim, in_proj_hidden), nn.GELU(),
                                         nn.Linear(in_proj_hidden, d_model))
        else:
            self.in_proj = nn.Linear(latent_dim, d_model) if latent_dim != d_model else nn.Identity()
        self.head = (head or partial(build_head, "mse"))(latent_dim=latent_dim, d_model=d_model)
        # noise-augmented context (diffusion forcing, GameNGen): inputs corrupted at a level the core is told
        self.context_noise, self.rollout_noise, self.rollout_reencode = context_noise, rollout_noise, rollout_reencode
        self.rollout_snap = None  # a CellCodebook (codecs/codebook.py) that each generated latent is snapped onto
        self.rollout_snap_feedback = 0.0  # the share of each snap error added to the next prediction (error diffusion)
        if not valid_count(train_snap, zero_ok=True):
            raise UserError(f"model.train_snap={train_snap}: must be 0 (off) or the number of centroids (>= 2)")
        if not valid_count(train_snap_pooled, zero_ok=True):
            raise UserError(f"model.train_snap_pooled={train_snap_pooled}: must be 0 (pooled dims as they are) or "
                            f"the number of centroids (>= 2)")
        # train on latents snapped onto a codebook of real cells (as its rollouts are): set by prepare_two_stage
        self.train_snap, self.train_snap_pooled = int(train_snap), int(train_snap_pooled)
        self.train_snap_book = None
        self.noise_embed = nn.Linear(1, d_model) if context_noise > 0 else None
        if self.noise_embed is not None:
            nn.init.zeros_(self.noise_embed.weight)
            nn.init.zeros_(self.noise_embed.bias)
        # told own inputs (own_input_flag): zero at init, so the flag starts as a no-op
        self.own_embed = nn.Parameter(torch.zeros(d_model)) if own_input_flag else None
        self.cue_weight = cue_weight
        self.cue_head = nn.Linear(d_model, cue_classes) if cue_weight > 0 else None
        if freeze_codec:  # two-stage: the shared stage-1 codec stays exactly as trained
            self.codec.requires_grad_(False)
        self.codec_source: str | None = None  # where the codec weights came from (stage 1), for the run summary
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.skipped_nonfinite = 0
        self.stream_state: State | None = None
        self._training_rng: torch.Generator | None = None  # training noise (training_generator)
        self._restored_rng: Tensor | None = None
        # validation means as torchmetrics: DDP sums weighted values and weights exactly (Lightning's own mean
        # reduction of logged values averages integer batch counts, which is wrong for unequal ranks); a NaN stays
        # NaN (torchmetrics' default drops it, which would report a diverged run as better)
        self.val_means = nn.ModuleDict({name: MeanMetric(nan_strategy=math.nan)
                                        for name in ("loss", "latent_mse", "flow_mse", "residual_loss", "code_ce",
                                                     "pixel_mse", "recon_mse", "cue_ce")})
        self.val_psnr_next = PooledPSNR(nan_strategy=math.nan)
        self.run_config: dict | None = None  # the resolved Hydra config, stored in checkpoints

    # ----------------------------------------------------------------------------------------------- model
    def predict_latents(self, z: Tensor, state: State | None = None,
                        generator: torch.Generator | None = None) -> tuple[Tensor, State]:
        """z: (B, T, latent) -> z_hat (B, T, latent), z_hat[:, t] predicting z[:, t+1]; and the core state.
        A stochastic head draws z_hat (with ``generator``); a deterministic one gives its mean."""
        z_hat, _, state = self.predict_with_features(z, state, generator)
        return z_hat, state

    def predict_with_features(self, z: Tensor, state: State | None = None, generator: torch.Generator | None = None,
                              at: Tensor | None = None) -> tuple[Tensor, Tensor, State]:
        """z: (B, T, latent) real latents -> (z_hat (B, T, latent), core output h (B, T, d_model), state); with
        ``at`` (B, K) frame indices, z_hat (B, K, latent) is drawn at those frames only (a stochastic head's
        sampling is the cost). A model trained on snapped latents (``train_snap``) reads ``z`` snapped, as it was
        trained."""
        if self.train_snap_book is not None:  # a model trained on snapped latents reads real frames snapped too
            z = self.train_snap_book(z)
        h, state = self.core(self.embed(z), state)
        if at is None:
            return self.head.sample(h, z, generator), h, state
        pick = lambda x: torch.gather(x, 1, at[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
        return self.head.sample(pick(h), pick(z), generator), h, state

    def use_train_codebook(self, codebook: CellCodebook) -> None:
        """Train on latents snapped onto ``codebook`` (``train_snap``), snap rollouts onto it, and give it to a head
        that draws its codes (``head=categorical``)."""
        self.train_snap_book = self.rollout_snap = codebook
        if hasattr(self.head, "set_codebook"):
            self.head.set_codebook(codebook)

    def embed(self, z: Tensor, noise_level: Tensor | float = 0.0, own: Tensor | float = 0.0) -> Tensor:
        """Latents (..., latent) with their corruption level and whether each is the model's own draw (floats or
        (...,)) -> core inputs (..., d_model)."""
        u = self.in_proj(self.in_norm(z))
        if self.noise_embed is not None:
            level = torch.as_tensor(noise_level, dtype=u.dtype, device=u.device).expand(u.shape[:-1])
            u = u + self.noise_embed(level[..., None])
        if self.own_embed is not None:
            own = torch.as_tensor(own, dtype=u.dtype, device=u.device).expand(u.shape[:-1])
            u = u + own[..., None] * self.own_embed
        return u

    def corrupt(self, z: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training inputs: z (B, T, L) plus Gaussian noise of a level ~ U(0, context_noise) per frame, in units of
        each latent dim's spread -> (noisy z, levels (B, T))."""
        level = torch.rand(z.shape[:2], device=z.device, dtype=z.dtype, generator=generator) * self.context_noise
        spread = z.detach().flatten(0, 1).std(0).clamp_min(1e-4)
        noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
        return z + level[..., None] * spread * noise, level

    def losses(self, batch: dict, state: State | None = None,
               generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], State]:
        """Named losses of a batch of ``"frames"`` (B, T, C, H, W) or ``"latents"`` (B, T, latent), averaged over its
        ``"valid"`` (B,) clips when given; and the core state after the last frame. The training noise (corrupted
        context, a stochastic head's draws) comes from ``generator``."""
        frames = batch.get("frames")
        x = None if frames is None else to_unit(frames)
        z = self.codec.encode(x) if x is not None else batch["latents"].to(self.dtype)
        if self.train_snap:  # inputs and targets on the codebook the rollout snaps onto
            if self.train_snap_book is None or x is not None:
                raise UserError("model.train_snap needs the two-stage latents and their codebook (stages=two_stage)")
            z = self.train_snap_book(z)
        weight = batch["valid"].to(z) if "valid" in batch else torch.ones(z.shape[0], device=z.device)
        weight = weight / weight.sum().clamp_min(1)  # an all-invalid (padding) batch gives a zero loss, graph intact
        mse = lambda pred, target: ((pred - target).square().flatten(1).mean(1) * weight).sum()  # noqa: E731
        z_in, level = self.corrupt(z, generator) if self.training and self.context_noise > 0 else (z, 0.0)
        own = 0.0
        if self.training and self.own_input_rate > 0 and self.current_epoch >= self.own_input_from_epoch:
            z_in, own = self.with_own_inputs(z_in, level, state, generator)
        n_own = self.rollout_loss_steps if self.training else 0
        if n_own and z.shape[1] < n_own + 2:  # a prefix of >= 1 real frame, then n own inputs with real targets
            if not self._warned_short_rollout_loss:
                log.warning("clips of %d frames are too short for model.rollout_loss_steps=%d: no rollout loss",
                            z.shape[1], n_own)
                self._warned_short_rollout_loss = True
            n_own = 0
        if n_own:  # the same pass in two parts, so the rollout starts from the state before the clip's last n+1 frames
            prefix = z.shape[1] - n_own - 1
            part = lambda lv, sl: lv[:, sl] if torch.is_tensor(lv) else lv  # noqa: E731
            h_prefix, rollout_state = self.core(self.embed(z_in[:, :prefix], part(level, slice(None, prefix)),
                                                           part(own, slice(None, prefix))), state)
            h_rest, state = self.core(self.embed(z_in[:, prefix:], part(level, slice(prefix, None)),
                                                 part(own, slice(prefix, None))), rollout_state)
            h = torch.cat([h_prefix, h_rest], dim=1)
        else:
            h, state = self.core(self.embed(z_in, level, own), state)
        head_loss = (self.head.loss(h[:, :-1], z_in[:, :-1], z[:, 1:], generator) * weight).sum()
        out = {self.head.loss_name: head_loss, "loss": self.latent_weight * head_loss}
        if n_own:
            own_loss, own_means = self.self_rollout(h_prefix[:, -1], z_in[:, prefix - 1], rollout_state,
                                                    z[:, prefix + 1:], generator)
            out[f"rollout_{self.head.loss_name}"] = own = (own_loss * weight).sum()
            out["loss"] = out["loss"] + self.rollout_loss_weight * self.latent_weight * own
        z_hat = self.head.mean(h, z_in) if x is not None else None
        if self.cue_head is not None and "cue" in batch:
            out["cue_ce"] = self.cue_loss(h, batch["cue"], weight)
            out["loss"] = out["loss"] + self.cue_weight * out["cue_ce"]
        if x is not None:
            terms = [("pixel", z_hat[:, :-1], x[:, 1:], self.pixel_weight), ("recon", z, x, self.recon_weight)]
            if n_own:
                own_factor = self.rollout_loss_weight * self.pixel_weight
                terms.append(("rollout_pixel", own_means, x[:, prefix + 1:], own_factor))
            for name, pred, target, factor in terms:
                if name == "recon" and not factor:
                    continue
                decoded = torch.sigmoid(self.codec.decode(pred))
                out[f"{name}_mse"] = mse(decoded, target)
                error = out[f"{name}_mse"] if not self.foreground_weight else (weighted_frame_error(
                    decoded, target, self.foreground_weight, self.foreground_symmetric) * weight).sum()
                out["loss"] = out["loss"] + factor * error
        return out, state

    def self_rollout(self, h_last: Tensor, z_last: Tensor, state: State, z_targets: Tensor,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Step the core on its own predictions: h_last (B, D) the output after reading z_last (B, L), ``state`` after
        it, z_targets (B, n, L) the real frames the n own inputs should lead to -> (the head's loss (B,) averaged over
        the n steps, the head's means (B, n, L) of those frames). Input i is the prediction of the frame after input
        i - 1 (the first: after z_last), told as corrupted at ``rollout_noise``, as generation does."""
        losses, means = [], []
        h, z_prev = h_last, z_last
        statistics = {name: b.detach().clone() for name, b in self.head.named_buffers()}  # e.g. the flow head's scale
        for i in range(z_targets.shape[1]):
            z_own = (self.head.sample(h, z_prev, generator).detach() if self.head.stochastic
                     else self.head.mean(h, z_prev))  # a draw is not differentiable: the chain runs through the state
            h, state = self.core.step(self.embed(z_own, self.rollout_noise, own=1.0), state)
            losses.append(self.head.loss(h[:, None], z_own[:, None], z_targets[:, i : i + 1], generator))
            means.append(self.head.mean(h, z_own))
            z_prev = z_own
        with torch.no_grad():  # running statistics follow the real frames' changes only, not the rollout's
            for name, buffer in self.head.named_buffers():
                buffer.copy_(statistics[name])
        return torch.stack(losses, 1).mean(1), torch.stack(means, 1)

    @torch.no_grad()
    def with_own_inputs(self, z_in: Tensor, level: Tensor | float, state: State | None,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """z_in (B, T, L) with a share ``own_input_rate`` of frames 1..T-1 replaced by the model's draw of that frame
        from the frames before it (one parallel pass; the first frame is always real); and which were (B, T) 0/1."""
        h, _ = self.core(self.embed(z_in, level), state)
        own = self.head.sample(h[:, :-1], z_in[:, :-1], generator)  # own[:, t] predicts z_in[:, t + 1]
        pick = torch.rand(own.shape[:2], device=own.device, generator=generator) < self.own_input_rate
        mixed = torch.cat([z_in[:, :1], torch.where(pick[..., None], own.to(z_in.dtype), z_in[:, 1:])], dim=1)
        return mixed, torch.cat([torch.zeros_like(pick[:, :1]), pick], dim=1).to(z_in.dtype)

    def cue_loss(self, h: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
        """Cross-entropy of the cue colour at every labelled frame; h (B, T, D), labels (B, T) (-1: none), weight (B,)
        the per-clip weights (summing to 1)."""
        logits = self.cue_head(h)
        ce = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().long().clamp_min(0),
                                         reduction="none").view(labels.shape)
        labelled = (labels >= 0).to(ce)
        per_clip = (ce * labelled).sum(1) / labelled.sum(1).clamp_min(1)
        return (per_clip * weight).sum()

    # -------------------------------------------------------------------------------------------- training
    def _carried_state(self, batch: dict) -> State | None:
        if "reset" not in batch:
            return None
        batch_size = batch["reset"].shape[0]
        fresh = self.core.initial_state(batch_size, device=self.device, dtype=self.dtype)
        if self.stream_state is None or next(iter(self.stream_state.values())).shape[0] != batch_size:
            return fresh
        self.stream_state = {k: v.to(self.device) for k, v in self.stream_state.items()}  # restored on the CPU
        reset = batch["reset"] | ~batch["valid"] if "valid" in batch else batch["reset"]
        if reset.all():  # every slot starts a new video (always so with equal-length clips)
            return fresh
        if not reset.any():
            return self.stream_state
        return reset_state_slots(self.stream_state, fresh, reset)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if "valid" in batch and not batch["valid"].any():  # an epoch's tail filler: keep DDP ranks in step, cheaply
            self.stream_state = None
            return self._zero_loss()
        out, state = self.losses(batch, self._carried_state(batch), self.training_generator())
        if "reset" in batch:
            self.stream_state = detach_state(state)
        if not torch.isfinite(out["loss"]):
            return self._skip_nonfinite(batch_idx)
        self.nonfinite_in_a_row = 0
        batch_size = clip_shape(batch)[0]
        for name, value in out.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=batch_size)
        return out["loss"]

    def _skip_nonfinite(self, batch_idx: int) -> Tensor:
        self.skipped_nonfinite += 1
        self.nonfinite_in_a_row += 1
        self.stream_state = None
        log.warning("skipped training batch %d: non-finite loss (%d in a row)", batch_idx, self.nonfinite_in_a_row)
        self.log(keys.TRAIN_SKIPPED_NONFINITE, float(self.skipped_nonfinite))
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self.nonfinite_in_a_row} training steps in a row had a non-finite loss; stopping. "
                "Lower model.optimizer.lr or enable trainer.gradient_clip_val; the last good checkpoint is kept."
            )
        return self._zero_loss()

    def _zero_loss(self) -> Tensor:
        """A zero loss on the parameters (not None): every DDP rank still runs backward, so none waits forever."""
        return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def _evaluation_step(self, batch: dict, batch_idx: int, prefix: str) -> None:
        """Teacher-forced losses logged as ``prefix/...`` (validation and test never run at once: one set of means)."""
        out, _ = self.losses(batch, generator=self.sampling_generator(batch_idx))  # the same draws every epoch
        # weighted by the real clips: a rank's filler clips (valid=False) add nothing to the pooled means
        n_clips = batch["valid"].sum() if "valid" in batch else clip_shape(batch)[0]
        for name, value in out.items():
            self.val_means[name].update(value.detach(), weight=n_clips)
            self.log(f"{prefix}/{name}", self.val_means[name])
        if "pixel_mse" in out:
            self.val_psnr_next.update(out["pixel_mse"].detach(), weight=n_clips)
            self.log(keys.VAL_PSNR_NEXT.replace("val/", f"{prefix}/", 1), self.val_psnr_next)

    def parameter_groups(self) -> list[dict]:
        """AdamW groups: matrices decay; vectors (norms, biases, D, dt biases) and SSM dynamics parameters flagged
        ``_no_weight_decay`` (A_log, S4D's log_dt/log_A_real/A_imag, the dense SSM's A) do not, as in mamba_ssm and
        nanoGPT."""
        decay, no_decay = [], []
        for parameter in self.parameters():
            if parameter.requires_grad:
                exempt = parameter.ndim < 2 or getattr(parameter, "_no_weight_decay", False)
                (no_decay if exempt else decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["run_config"] = self.run_config
        checkpoint["wandb_run_id"] = wandb_run_id(self.loggers)  # a resume continues this W&B run
        checkpoint["nonfinite_steps_skipped"] = self.skipped_nonfinite
        # a resumed stream goes on with the state it had: every rank's own (rank 0 writes the file)
        checkpoint["stream_state_by_rank"] = gather_state_from_ranks(detach_state(self.stream_state))
        rng = None if self._training_rng is None else {"state": self._training_rng.get_state()}
        checkpoint["training_rng_by_rank"] = gather_state_from_ranks(rng)
        book = self.train_snap_book  # the codebook it was trained on travels with it (plain tensors)
        checkpoint["train_snap_codebook"] = None if book is None else {"cells": book.centroids.cpu(),
                                                                       "pooled": book.pooled}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get("run_config")
        self.skipped_nonfinite = checkpoint.get("nonfinite_steps_skipped", 0)
        by_rank = checkpoint.get("stream_state_by_rank") or [checkpoint.get("stream_state")]  # older checkpoints
        rank, world_size = _rank_and_world_size()
        self.stream_state = by_rank[rank] if len(by_rank) == world_size else None
        rngs = checkpoint.get("training_rng_by_rank") or []
        self._restored_rng = rngs[rank]["state"] if len(rngs) == world_size and rngs[rank] else None
        if len(by_rank) != world_size and self._trainer is not None:  # resuming training on another process count
            log.warning("checkpoint has carried stream states of %d processes, this run has %d: streams restart",
                        len(by_rank), world_size)

    # ------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def rollout_latents(self, z_next: Tensor, state: State, n_steps: int, reencode: bool | None = None,
                        generator: torch.Generator | None = None) -> Iterator[Tensor]:
        """Yield ``n_steps`` predicted latents (B, latent), starting with ``z_next``, stepping the core from ``state``.

        Each prediction is snapped onto ``rollout_snap``'s codebook (when set) and fed back (``reencode``, default
        ``rollout_reencode``: decoded and encoded again), told as corrupted at ``rollout_noise``; a stochastic head
        draws each frame with ``generator``. With ``rollout_snap_feedback = g > 0`` the snap's error (prediction minus
        centroid) times ``g`` is added to the next prediction before it is snapped (error diffusion, as in dithering):
        a change smaller than the codebook's spacing, which plain snapping erases at every step, accumulates until it
        moves the frame to another centroid. Only the state (and that error, one latent) is kept between steps, so
        memory is constant for cores with a bounded state."""
        reencode = self.rollout_reencode if reencode is None else reencode
        snap_error = None
        for i in range(n_steps):
            if self.rollout_snap is not None:
                if snap_error is not None and self.rollout_snap_feedback:
                    z_next = z_next + self.rollout_snap_feedback * snap_error
                snapped = self.rollout_snap(z_next)
                snap_error, z_next = z_next - snapped, snapped
            yield z_next
            if i + 1 == n_steps:
                return
            z_in = self.codec.encode(torch.sigmoid(self.codec.decode(z_next))) if reencode else z_next
            h, state = self.core.step(self.embed(z_in, self.rollout_noise, own=1.0), state)
            z_next = self.head.sample(h, z_in, generator)

    @torch.no_grad()
    def rollout(self, context: Tensor, n_frames: int, reencode: bool | None = None, seed: int = 0) -> Iterator[Tensor]:
        """Yield ``n_frames`` generated frames (B, C, H, W) in [0, 1], one at a time, after ``context``.

        context: (B, K, C, H, W) real frames, read in parallel mode (teacher-forced prefix); then the core's step
        mode rolls out (see ``rollout_latents``). A stochastic head's draws are fixed by ``seed``.
        """
        generator = self.sampling_generator(seed)
        z_hat, state = self.predict_latents(self.codec.encode(to_unit(context).to(self.device)), None, generator)
        for z in self.rollout_latents(z_hat[:, -1], state, n_frames, reencode, generator):
            yield torch.sigmoid(self.codec.decode(z))

    @torch.no_grad()
    def generate(self, context: Tensor, n_frames: int, reencode: bool | None = None, seed: int = 0) -> Tensor:
        """context: (B, K, C, H, W) -> generated frames (B, n_frames, C, H, W) in [0, 1] (held in memory)."""
        return torch.stack(list(self.rollout(context, n_frames, reencode, seed)), dim=1)

    def training_generator(self) -> torch.Generator:
        """The generator of training noise: seeded from the global RNG (``seed_everything``) and this rank on first
        use, saved in checkpoints, so a resumed run draws what an uninterrupted one would."""
        if self._training_rng is None or self._training_rng.device != self.device:
            rank = _rank_and_world_size()[0]
            self._training_rng = torch.Generator(device=self.device)
            if self._restored_rng is not None:
                self._training_rng.set_state(self._restored_rng)
            else:
                self._training_rng.manual_seed(int(torch.randint(0, 2**62, (1,))) + rank)
        return self._training_rng

    def sampling_generator(self, seed: int) -> torch.Generator:
        """A generator on the model's device seeded with ``seed`` (draws of a stochastic head)."""
        return torch.Generator(device=self.device).manual_seed(int(seed))


def load_model(ckpt_path: str, map_location: str = "cpu") -> VideoModel:
    """Rebuild a VideoModel from a checkpoint alone (its resolved run config travels inside it), opened without
    running code: tensors and plain values only, and a model config that can only build lightning_ssmvid classes."""
    from hydra.utils import instantiate

    from lightning_ssmvid.utils.checkpoints import check_targets, read_checkpoint

    checkpoint = read_checkpoint(ckpt_path, map_location)
    run_config = checkpoint.get("run_config")
    if not isinstance(run_config, dict) or "model" not in run_config or "state_dict" not in checkpoint:
        raise UserError(f"{ckpt_path} holds no run config and weights: it was not written by lightning_ssmvid.train")
    check_targets(run_config["model"], str(ckpt_path), "model")
    model = instantiate(run_config["model"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise UserError(f"{ckpt_path}: its weights do not fit its own run config ({str(error).splitlines()[0]}); "
                        "the file is damaged or was edited") from None
    model.run_config = run_config
    book = checkpoint.get("train_snap_codebook")
    if model.train_snap and isinstance(book, dict):
        try:
            model.use_train_codebook(CellCodebook.for_codec(book.get("cells"), book.get("pooled"), model.codec,
                                                            f"{ckpt_path}'s codebook"))
        except ValueError as error:
            raise UserError(f"{error}: the file is damaged or was edited") from None
    return model.eval()


def _rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_state_from_ranks(state: State | None) -> list[State | None]:
    """Every process's ``state`` (on the CPU), in rank order: ``[state]`` in a single process."""
    state = None if state is None else {key: value.cpu() for key, value in state.items()}
    world_size = _rank_and_world_size()[1]
    if world_size == 1:
        return [state]
    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered
