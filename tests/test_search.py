"""Hyper-parameter search: W&B sweep specs validated offline and one proposed trial run; an Optuna multirun."""

from __future__ import annotations

import pytest
import torch
import yaml

from lightning_ssmvid import sweep
from lightning_ssmvid.train import train
from tests.helpers import TINY_CSV, run_module, shrink_data


@pytest.mark.parametrize("name", sweep.available_sweeps())
def test_sweep_spec_is_valid_and_its_proposed_trial_trains(compose_cfg, name):
    overrides = sweep.validate(name)  # W&B's sweep engine proposes; the train config composes with it
    spec = sweep.load_spec(name)
    assert set(spec["parameters"]) <= {o.split("=", 1)[0] for o in overrides}
    cfg = compose_cfg(*overrides, "trainer.fast_dev_run=true", "logger=csv")
    shrink_data(cfg)
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))


def test_sweep_parameter_that_is_not_a_config_key_fails_before_training(tmp_path):
    spec = yaml.safe_load((sweep.SWEEP_DIR / "mamba_long.yaml").read_text())
    spec["parameters"]["core.d_stat"] = {"values": [8, 16]}  # a typo
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="d_stat"):
        sweep.validate(str(tmp_path / "typo.yaml"))


def test_sweep_value_that_is_not_a_valid_choice_fails_before_training(tmp_path):
    spec = yaml.safe_load((sweep.SWEEP_DIR / "lr_all_cores.yaml").read_text())
    spec["parameters"]["experiment"]["values"].append("mamba_lnog")  # any value, not only the first proposed
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="mamba_lnog"):
        sweep.validate(str(tmp_path / "typo.yaml"))


def test_invalid_sweep_spec_is_rejected_by_the_sweep_engine(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"method": "bayes", "parameters": {"x": {"values": [1]}}}))
    with pytest.raises(ValueError, match="invalid sweep spec"):
        sweep.validate(str(tmp_path / "bad.yaml"))  # bayes needs a metric


def test_creating_a_sweep_without_credentials_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with pytest.raises(SystemExit, match="WANDB_API_KEY"):
        sweep.main(["create", "mamba_long"])


@pytest.mark.slow
def test_optuna_multirun_of_two_trials_reports_the_metric(tmp_path, data_dir):
    run_module("lightning_ssmvid.train", *TINY_CSV, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
               "callbacks.evaluation.n_clips=1", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}")
    (sweep_dir,) = tmp_path.glob("train/multiruns/*")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 0 <= best["best_value"] <= 1
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.optimizer.weight_decay", "core.n_layers"}
    trials = sorted(p.name for p in sweep_dir.iterdir() if (p / "summary.json").is_file())
    assert trials == ["0", "1"]
