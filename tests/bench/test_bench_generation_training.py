"""The generation and latent-training benchmarks run at tiny sizes (figures are reported by make bench, not asserted)."""

from lightning_ssmvid.bench import generation, training


def test_generation_measures_rate_and_memory_curve():
    result = generation.measure("transformer_window", n_frames=120, every=40, frame_size=16)
    assert result["frames"] == 120 and result["frames_per_s"] > 0
    assert [i for i, _ in result["rss_curve"]] == [40, 80, 120]
    assert all(rss > 0 for _, rss in result["rss_curve"])


def test_training_benchmark_steps_on_latents():
    result = training.measure("mamba2", length=40, batch=2, d_model=32, n_layers=1, reps=1)
    assert result["frames_per_s"] > 0 and result["step_s"] > 0
