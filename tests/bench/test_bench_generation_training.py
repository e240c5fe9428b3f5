"""The generation and latent-training benchmarks run at tiny sizes (figures are reported by make bench, not
asserted)."""

from lightning_ssmvid.bench import generation, training


def test_generation_measures_rate_and_memory_curve():
    result = generation.measure("transformer_window", n_frames=120, every=40,
                                overrides=("data.frame_size=16", "core.d_model=32", "core.n_layers=1"))
    assert result["frames"] == 120 and result["frames_per_s"] > 0
    assert [i for i, _ in result["rss_curve"]] == [40, 80, 120]
    assert all(rss > 0 for _, rss in result["rss_curve"])


def test_generation_composes_the_experiment_with_the_flow_head():
    result = generation.measure("mamba2", n_frames=20, every=10, head="flow",
                                overrides=("data.frame_size=16", "core.d_model=32", "core.n_layers=1"))
    assert result["head"] == "flow" and result["frames"] == 20


def test_training_benchmark_steps_on_latents():
    result = training.measure("mamba2", length=40, batch=2, d_model=32, n_layers=1, reps=1)
    assert result["frames_per_s"] > 0 and result["step_s"] > 0


def test_experiment_benchmark_composes_the_long_experiments_and_times_both_scan_paths(monkeypatch):
    import importlib

    scan = importlib.import_module("lightning_ssmvid.ops.selective_scan")
    paths = []
    real_fused, real_torch = scan.selective_scan_fused, scan.selective_scan_torch
    monkeypatch.setattr(scan, "selective_scan_fused", lambda *a, **k: paths.append("fused") or real_fused(*a, **k))
    monkeypatch.setattr(scan, "selective_scan_torch", lambda *a, **k: paths.append("torch") or real_torch(*a, **k))
    assert "mamba_long" in training.long_experiments() and "smoke" not in training.long_experiments()
    row = training.measure_experiment("mamba_long", reps=1, quick=True)
    assert row["core"] == "mamba" and row["batch"] == 2 and row["length"] == 32
    assert row["before_frames_per_s"] > 0 and row["after_frames_per_s"] > 0
    assert "torch" in paths and "fused" in paths, "before must run the PyTorch scan and after the fused kernel"
