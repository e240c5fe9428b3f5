"""Rollout evaluation wired through training and `evaluate`, and identical over 1 or 2 (simulated) ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lightning_ssmvid.evaluate import evaluate
from lightning_ssmvid.model import load_model
from lightning_ssmvid.rollouts import Evaluator, evaluate_clips
from lightning_ssmvid.train import train
from lightning_ssmvid.utils.config import PROJECT_ROOT as REPO
from lightning_ssmvid.utils.errors import UserError
from tests.helpers import LONG_MEMORY_TINY, compose_config

EVAL = ["callbacks.evaluation.n_clips=2", "callbacks.evaluation.context=8", "callbacks.evaluation.horizon=24",
        "callbacks.evaluation.max_events_per_clip=2", "data.generator.n_val=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("eval_run")
    tiny = [o for o in LONG_MEMORY_TINY if not o.startswith("codec.latent_dim=")]  # a 4 x 4 x 1 grid + 8 pooled dims
    train(compose_config(out, data_dir, *tiny, "codec.latent_dim=24", "codec.global_dim=8", *EVAL, "logger=csv",
                         "arm=cue"))
    GlobalHydra.instance().clear()
    return out / "run"


def test_training_logs_rollout_metrics_and_recall(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    final = summary["final"]
    for key in ("val/psnr_h1-16", "val/ssim_h1-16", "val/flicker_ratio", "val/warp_error_gen", "val/recall_chance",
                "val/recall_codec_ceiling", "val/recall_oracle", "val/recall_copy_last", "val/probe_chance",
                "val/recall_absent_gap10", "val/recall_rollout", "val/cue_ce"):
        assert key in final, key
    assert final["val/recall_chance"] == pytest.approx(1 / 8) and final["val/recall_oracle"] == 1.0
    events = sum(v for k, v in final.items() if k.startswith("val/recall_events_gap"))
    assert events > 0 and 0 <= final["val/recall"] <= 1
    curves = json.loads((trained_run / "curves.json").read_text())
    assert len(curves["psnr"]) == 24
    assert list((trained_run / "samples").rglob("sample_0.mp4"))


def test_two_simulated_ranks_equal_one_process(trained_run):
    model = load_model(str(trained_run / "checkpoints" / "last.ckpt"))
    data_root = Path(model.run_config["data"]["root"])
    videos = sorted(next(data_root.glob("long_memory-*")).glob("val/*.mp4"))
    kwargs = dict(context=8, horizon=24, gap_bins=(10, 20), max_events_per_clip=2, fvd_frames=0)
    one = evaluate_clips(model, videos, 32, **kwargs)
    ranks = [evaluate_clips(model, videos, 32, rank=r, world_size=2, **kwargs) for r in range(2)]
    for metric, part0, part1 in zip(one.metrics(), ranks[0].metrics(), ranks[1].metrics()):
        part0.merge_state(part1)
        expected, merged = metric.compute(), part0.compute()
        if isinstance(expected, dict):
            for key in expected:
                torch.testing.assert_close(merged[key], expected[key], equal_nan=True)
        else:
            torch.testing.assert_close(merged, expected, equal_nan=True)  # NaN: never seen (diversity, mse head)


def test_evaluate_a_checkpoint_on_the_test_split(trained_run):
    """split=test runs trainer.test on the test clips and logs test/... (teacher-forced, rollouts, memory probes)."""
    metrics = evaluate(str(trained_run / "checkpoints" / "last.ckpt"), split="test")
    for key in ("test/loss", "test/psnr_h1-16", "test/recall_oracle", "test/probe_chance", "test/recall_copy_last"):
        assert key in metrics, key
    assert not [key for key in metrics if key.startswith("val/")]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["evaluation"]["test"]["metrics"]["test/loss"] == pytest.approx(metrics["test/loss"])
    assert (trained_run / "eval_test" / "curves.json").is_file()


@pytest.mark.slow
def test_the_evaluate_command_recomposes_the_saved_config_with_overrides(trained_run):
    """The Hydra app: ckpt_path= plus overrides of the run's saved config; a key no config has is one error."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    done = subprocess.run([sys.executable, "-m", "lightning_ssmvid.evaluate", f"ckpt_path={ckpt}",
                           "callbacks.evaluation.n_clips=1", "logger=csv", "snap=16", "snap_pooled=4"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluation = json.loads((trained_run / "summary.json").read_text())["evaluation"]["val"]
    assert evaluation["overrides"] == ["callbacks.evaluation.n_clips=1", "logger=csv"]  # snap is evaluate's own key
    assert (evaluation["sampling"]["snap"], evaluation["sampling"]["snap_pooled"]) == (16, 4)
    assert "val/loss" in evaluation["metrics"] and "val/psnr_h1-16" in evaluation["metrics"]
    wrong = subprocess.run([sys.executable, "-m", "lightning_ssmvid.evaluate", f"ckpt_path={ckpt}",
                            "callbacks.evaluation.n_clipz=1"], capture_output=True, text=True, cwd=REPO)
    assert wrong.returncode != 0 and "n_clipz" in wrong.stderr and "Traceback" not in wrong.stderr


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        evaluate(str(tmp_path / "nope.ckpt"))


def test_evaluate_refuses_an_override_that_would_change_the_model(trained_run):
    """`core=lstm` on a GRU checkpoint would evaluate the GRU and record lstm: refused, nothing recorded."""
    before = (trained_run / "summary.json").read_text()
    with pytest.raises(UserError, match="core=lstm would change its core"):
        evaluate(str(trained_run / "checkpoints" / "last.ckpt"), ["core=lstm"])
    with pytest.raises(UserError, match="model.latent_weight=3 would change its model"):
        evaluate(str(trained_run / "checkpoints" / "last.ckpt"), ["model.latent_weight=3"])
    assert (trained_run / "summary.json").read_text() == before


def test_evaluate_may_change_the_sampling_settings_and_records_them(trained_run):
    """Sampling settings are not weights: ``model.rollout_noise`` is applied and recorded; a temperature for the
    deterministic head is one error."""
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    evaluate(ckpt, ["model.rollout_noise=0.2", "callbacks.evaluation.n_clips=1"])
    evaluation = json.loads((trained_run / "summary.json").read_text())["evaluation"]["val"]
    assert evaluation["sampling"] == {"rollout_noise": 0.2, "reencode": False}
    with pytest.raises(UserError, match="MSEHead has no temperature"):
        evaluate(ckpt, ["head.temperature=0.5"])


def test_evaluate_scores_snapped_rollouts(trained_run):
    """``snap=K`` snaps the rollouts it scores (PSNR, SSIM, persistence), as generate's key does, and records it."""
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    plain = evaluate(ckpt, ["callbacks.evaluation.n_clips=1"])
    snapped = evaluate(ckpt, ["callbacks.evaluation.n_clips=1"], snap=16, snap_pooled=4, snap_feedback=0.5)
    assert snapped["val/loss"] == pytest.approx(plain["val/loss"])  # teacher-forced: no rollout, nothing snapped
    assert snapped["val/psnr_h1-16"] != pytest.approx(plain["val/psnr_h1-16"])
    evaluation = json.loads((trained_run / "summary.json").read_text())["evaluation"]["val"]
    assert evaluation["sampling"] == {"rollout_noise": 0.0, "reencode": False, "snap": 16, "snap_pooled": 4,
                                      "snap_feedback": 0.5}
    with pytest.raises(UserError, match="snap_feedback=2.0"):
        evaluate(ckpt, snap=16, snap_feedback=2)



def test_generate_scores_the_scene_of_a_long_memory_clip_and_reencode_is_a_setting(trained_run, tmp_path):
    from lightning_ssmvid.generate import run
    from lightning_ssmvid.utils.config import compose_config

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run(compose_config("generate", f"ckpt_path={ckpt}", "frames=20", "reencode=true", "progress=false",
                                f"out={tmp_path / 'g.mp4'}"))
    assert set(result["scene"]) == {"occluder_kept_h1-16", "colours_kept_h1-16", "occluder_kept_h17-20",
                                    "colours_kept_h17-20"}
    assert all(0.0 <= v <= 1.0 or v != v for v in result["scene"].values())
    references = result["references"]  # the same measures' ceilings (real, codec) and frozen baseline (copy-last)
    assert set(references) == {"real", "codec", "copy_last", "one_step"}
    assert all(set(figures) >= set(result["scene"]) for figures in references.values())
    # read through decord at the model's frame size, then scored at the clip's: an object of a few pixels may miss
    assert references["real"]["occluder_kept_h1-16"] > 0.99 and references["real"]["colours_kept_h1-16"] > 0.9
    assert references["copy_last"]["motion_ratio_h1-16"] == 0.0  # held: nothing moves
    assert references["codec"] != references["real"]  # a one-epoch codec does not reconstruct the clip exactly
    assert json.loads((tmp_path / "g.json").read_text())["sampling"]["reencode"] is True
    model = load_model(str(ckpt))
    context = torch.rand(1, 4, 3, 32, 32)
    model.rollout_reencode = True
    assert torch.equal(model.generate(context, 6), model.generate(context, 6, reencode=True))
    assert not torch.equal(model.generate(context, 6), model.generate(context, 6, reencode=False))


def test_generate_snaps_each_generated_latent_onto_a_codebook_of_training_cells(trained_run, tmp_path):
    """``snap=K`` fits K centroids on the run's training clips once (kept in the run folder), every generated latent's
    grid cells are centroids, and the snapped codec reconstruction is scored beside the plain one."""
    from lightning_ssmvid.codecs.codebook import CellCodebook
    from lightning_ssmvid.generate import rollout_codebook, run
    from lightning_ssmvid.utils.config import compose_config

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run(compose_config("generate", f"ckpt_path={ckpt}", "frames=12", "snap=16", "snap_pooled=4",
                                "snap_feedback=0.5", "progress=false", f"out={tmp_path / 's.mp4'}"))
    path = trained_run / "codebooks" / "cells_k16_pooled4.npz"
    assert path.is_file() and "codec_snapped" in result["references"]
    model = load_model(str(ckpt))
    assert model.codec.global_dim > 0  # the long-memory protocol's codec has frame-pooled dims, snapped here too
    sampling = json.loads((tmp_path / "s.json").read_text())["sampling"]
    assert (sampling["snap"], sampling["snap_pooled"], sampling["snap_feedback"]) == (16, 4, 0.5)
    book = rollout_codebook(model, ckpt, 16, 4)  # read back, not refitted
    torch.testing.assert_close(book.centroids, CellCodebook.load(path, model.codec).centroids)
    model.rollout_snap = book
    with torch.no_grad():
        z_hat, state = model.predict_latents(model.codec.encode(torch.rand(1, 4, 3, 32, 32)))
        latents = list(model.rollout_latents(z_hat[:, -1], state, 5))
    centroids, pooled = {tuple(c.tolist()) for c in book.centroids}, {tuple(c.tolist()) for c in book.pooled}
    assert all({tuple(c.tolist()) for c in book.cells(latent)} <= centroids for latent in latents)
    assert all({tuple(z.tolist()) for z in latent[:, -model.codec.global_dim:]} <= pooled for latent in latents)
    path.write_bytes(b"not an npz")  # a damaged cache file is refitted, not trusted or fatal
    torch.testing.assert_close(rollout_codebook(model, ckpt, 16, 4).centroids, book.centroids)
    assert CellCodebook.load(path, model.codec).centroids.shape == (16, 1)
    with pytest.raises(ValueError, match="snap=1"):
        rollout_codebook(model, ckpt, 1)
    with pytest.raises(ValueError, match="snap_pooled=1"):
        rollout_codebook(model, ckpt, 16, 1)


def test_snap_feedback_lets_changes_below_the_codebook_spacing_add_up(trained_run, monkeypatch):
    """A head that moves every cell by 0.3 per frame on a codebook of whole numbers: plain snapping erases the move
    at every step (the rollout freezes), with ``snap_feedback=1`` the snap error carries it on, so the rollout moves
    0.3 a frame on average while every frame stays on the codebook and the carried error stays below half a spacing."""
    from lightning_ssmvid.codecs.codebook import CellCodebook
    from lightning_ssmvid.generate import set_rollout_snap

    model = load_model(str(trained_run / "checkpoints" / "last.ckpt"))
    codec = model.codec
    model.rollout_snap = CellCodebook(torch.arange(-2.0, 20.0)[:, None], codec.grid, codec.global_dim)
    monkeypatch.setattr(model.head, "sample", lambda h, z, generator=None: z + 0.3)
    with torch.no_grad():
        _, state = model.predict_latents(codec.encode(torch.rand(1, 4, 3, 32, 32)))
    start = torch.zeros(1, codec.latent_dim)
    n_grid = codec.latent_dim - codec.global_dim

    def cells(feedback: float) -> list[torch.Tensor]:
        model.rollout_snap_feedback = feedback
        with torch.no_grad():
            return [z[0, :n_grid] for z in model.rollout_latents(start, state, 12)]

    assert all(torch.equal(z, torch.zeros(n_grid)) for z in cells(0.0))  # each 0.3 rounded away: frozen
    carried = cells(1.0)
    for i, z in enumerate(carried):
        assert torch.equal(z, z.round()) and (z - 0.3 * i).abs().max() <= 0.5 + 1e-5
    assert carried[-1].min() >= 3.0  # 11 moves of 0.3: three whole steps
    with pytest.raises(ValueError, match="snap_feedback=1.5"):
        set_rollout_snap(model, "unused.ckpt", 16, 4, 1.5)
    set_rollout_snap(model, "unused.ckpt", 0, 4, 0.5)  # snap=0 keeps the model's codebook (a train_snap model's)
    assert model.rollout_snap_feedback == 0.5
    model.rollout_snap = None
    with pytest.raises(ValueError, match="needs snap"):
        set_rollout_snap(model, "unused.ckpt", 0, 4, 0.5)


def test_one_step_reference_is_the_teacher_forced_draw_of_each_real_frame(trained_run, monkeypatch):
    """Scored a chunk at a time with the core state carried, the one-step reference equals one teacher-forced pass
    over the whole clip (each real frame drawn from the real frames before it), and it is not the real video."""
    from lightning_ssmvid import generate
    from lightning_ssmvid.metrics.scene import SceneKept, scene_bands

    model = load_model(str(trained_run / "checkpoints" / "last.ckpt"))
    data = model.run_config["data"]
    video = generate.dataset_video(data, "val", 0)
    sidecar, size, k, n = generate.long_memory_sidecar(video), data["frame_size"], 4, 20
    reader, context = generate.read_context(video, k, size)
    monkeypatch.setattr(generate, "CHUNK", 7)  # 20 frames in 3 chunks
    one_step = generate.reference_rollouts(reader, context, n, 1, size, model.codec, sidecar, model)["one_step"]
    _, frames = generate.read_context(video, k + n, size)
    with torch.no_grad():
        z_hat, _ = model.predict_latents(model.codec.encode(frames.float()[None] / 255))
        drawn = torch.sigmoid(model.codec.decode(z_hat[0, k - 1 : -1]))
    by_hand = SceneKept(sidecar, k, scene_bands(n))
    for frame in drawn:
        by_hand.update(frame)
    for key, value in by_hand.summary().items():
        assert one_step[key] == pytest.approx(value, abs=1e-6), key
    assert one_step["frames"] == n and one_step != generate.reference_rollouts(
        reader, context, n, 1, size, model.codec, sidecar)["real"]


class OracleModel:
    """Knows the real videos: its rollouts continue the real frames exactly (perfect memory and rendering), and its
    core output holds the cue colour (a perfect state). With ``memory=False`` it repeats the last frame it was shown
    and its core output is noise (no memory of the hidden cue at all)."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, clips: list[tuple[torch.Tensor, dict]], memory: bool = True):
        shape = clips[0][0].shape[1:]
        self.codec = SimpleNamespace(encode=lambda x: torch.logit(x.clamp(1e-4, 1 - 1e-4)).flatten(1),
                                     decode=lambda z: z.view(-1, *shape))
        self.clips = [(self.codec.encode(video.float() / 255), sidecar) for video, sidecar in clips]
        self.memory = memory

    def sampling_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def predict_latents(self, z: torch.Tensor, state: dict | None = None, generator=None):
        t = int(state["t"]) if state else 0
        return self.clips[0][0][t + 1 : t + 1 + z.shape[1]][None], {"t": torch.tensor(t + z.shape[1])}

    def rollout_latents(self, z_next: torch.Tensor, state: dict, n_steps: int, generator=None):
        t = int(state["t"])
        for i in range(n_steps):
            yield self.clips[0][0][t + i if self.memory else t - 1][None]

    def predict_with_features(self, z: torch.Tensor, state=None, generator=None, at=None):
        """z: (B, T, D) of whole clips from frame 0 (what the memory probes pass); z_hat at frames ``at`` (B, K)."""
        z_hat, h = torch.cat([z[:, 1:], z[:, -1:]], 1), torch.randn(z.shape[0], z.shape[1], 8)
        if not self.memory:
            z_hat = z
        if at is not None:
            z_hat = torch.stack([z_hat[b, at[b]] for b in range(z.shape[0])])
        if not self.memory:
            return z_hat, h, {}
        for b in range(z.shape[0]):
            sidecar = next(s for latents, s in self.clips if torch.equal(latents[0], z[b, 0]))
            h[b] = torch.nn.functional.one_hot(torch.from_numpy(sidecar["cue_colour"][: z.shape[1]]).long(), 8)
        return z_hat, h, {}


def test_memory_probes_score_a_perfect_model_100_and_a_memoryless_one_at_chance(tmp_path):
    from lightning_ssmvid.data.long_memory import LongMemoryConfig, generate_long_memory, list_clips, load_sidecar
    from lightning_ssmvid.data.video_io import open_video, read_frames
    from lightning_ssmvid.memory_probes import MemoryEvaluator

    config = LongMemoryConfig(frame_size=64, n_frames=200, gap_bins=(8, 24, 48), min_visible=8, reveal_frames=4,
                              n_train=8, n_val=0, n_test=8)
    dataset = generate_long_memory(tmp_path, config, workers=1, progress=False)
    splits = {split: list_clips(dataset / split) for split in ("train", "test")}
    clips = [(read_frames(open_video(p), 0, config.n_frames), load_sidecar(p)) for p in sum(splits.values(), [])]
    results = {}
    for memory in (True, False):
        model = OracleModel(clips, memory)
        evaluator = MemoryEvaluator(config.gap_bins, n_classes=8, feature_dim=8, batch_size=3)
        evaluator.update(model, splits["train"], 64, fit=True)
        evaluator.update(model, splits["test"], 64, fit=False)
        results[memory] = evaluator.compute()
    perfect, memoryless = results[True], results[False]
    n_events = sum(len(s["events"]) for _, s in clips[8:])
    assert sum(perfect[f"val/recall_events_gap{b}"] for b in config.gap_bins) == n_events >= 8
    for b in config.gap_bins:  # a perfect memory: every event, pixel probe and state read-out
        assert perfect[f"val/recall_gap{b}"] == perfect[f"val/probe_recall_gap{b}"] == 1.0
    assert perfect["val/recall_oracle"] == perfect["val/recall_codec_ceiling"] == 1.0
    assert perfect["val/recall_codec_worst_colour"] == 1.0
    # repeating the announcement frame (the cue is hidden there) draws nothing: absent, never a colour
    for result in (perfect, memoryless):
        assert result["val/recall_copy_last"] == 0.0
    assert memoryless["val/recall"] == 0.0 and memoryless["val/recall_absent"] == 1.0
    assert memoryless["val/probe_recall"] <= 0.5 and memoryless["val/probe_shuffled"] <= 0.5


def test_free_rollout_recall_scores_memory_and_rollout(tmp_path):
    from lightning_ssmvid.data.long_memory import generate_long_memory, list_clips, load_sidecar
    from lightning_ssmvid.data.video_io import open_video, read_frames
    from tests.helpers import CONFIG

    dataset = generate_long_memory(tmp_path, CONFIG, workers=1, progress=False)
    evaluators = {memory: Evaluator(gap_bins=CONFIG.gap_bins, fvd_frames=0) for memory in (True, False)}
    n_events = 0
    for path in list_clips(dataset / "test"):
        reader, sidecar = open_video(path), load_sidecar(path)
        video = read_frames(reader, 0, len(reader))
        n_events += len(sidecar["events"])
        for memory, evaluator in evaluators.items():
            evaluator._update_recall(OracleModel([(video, sidecar)], memory), reader, 64, sidecar)
    perfect, memoryless = evaluators[True], evaluators[False]
    assert int(perfect.recall_rollout.total.sum()) == n_events >= 8
    assert perfect.recall_rollout.compute()["recall"] == 1.0
    assert memoryless.recall_rollout.compute()["recall"] <= 0.5


def test_evaluate_can_rechoose_a_config_group(trained_run):
    """`logger=none` picks the group option (as in training), instead of overwriting the logger node with a string."""
    metrics = evaluate(str(trained_run / "checkpoints" / "last.ckpt"),
                       ["logger=none", "callbacks.evaluation.n_clips=1", "+trainer.strategy=auto"])
    assert "val/loss" in metrics
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["evaluation"]["val"]["overrides"][0] == "logger=none"


def test_the_command_checks_overrides_against_the_runs_experiment(tmp_path):
    from lightning_ssmvid.evaluate import with_run_experiment

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    (run / "config.yaml").write_text("name: mamba2_short\n")
    assert with_run_experiment([ckpt, "split=test"]) == [ckpt, "split=test", "experiment=mamba2_short"]
    assert with_run_experiment([ckpt, "experiment=smoke"]) == [ckpt, "experiment=smoke"]  # the user's choice
    (run / "config.yaml").write_text("name: my_own_family\n")  # not an experiment: the default config's keys
    assert with_run_experiment([ckpt]) == [ckpt]
