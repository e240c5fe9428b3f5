"""DDP with 2 CPU processes (gloo) through the real command lines: train, validate, checkpoint, resume, evaluate."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lightning_ssmvid.utils.config import CONFIG_DIR, PROJECT_ROOT
from tests.helpers import TINY_CSV, run_module

pytestmark = pytest.mark.slow
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
TINY_STREAM = [*TINY_CSV, "data.sampling=stream", "data.samples_per_epoch=16",
               "callbacks.evaluation.n_clips=2", "callbacks.evaluation.context=8", "callbacks.evaluation.horizon=16",
               "callbacks.evaluation.max_events_per_clip=2", "+callbacks.model_checkpoint.every_n_train_steps=2",
               "callbacks.model_checkpoint.monitor=null", "callbacks.model_checkpoint.save_top_k=-1",
               "callbacks.model_checkpoint.filename='step{step}'", "trainer.max_epochs=3",
               "trainer.limit_train_batches=3"]


def train_ddp(log_dir: Path, data_dir: str, *overrides: str) -> Path:
    run_module("lightning_ssmvid.train", *TINY_STREAM, *DDP, f"paths.log_dir={log_dir}", f"paths.data_dir={data_dir}",
               *overrides)
    (run,) = log_dir.glob("*/runs/*")
    return run


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data_dir) -> Path:
    """An uninterrupted 2-process run of 7 steps (epochs of 3), checkpointed every 2 steps."""
    return train_ddp(tmp_path_factory.mktemp("ddp_full"), data_dir, "trainer.max_steps=7")


def test_ddp_trains_validates_and_checkpoints(ddp_run):
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["global_step"] == 7
    assert torch.isfinite(torch.tensor(summary["final"]["val/loss"]))
    assert "val/recall" in summary["final"] and "val/psnr_h1-16" in summary["final"]
    checkpoint = torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=False)
    states = checkpoint["stream_state_by_rank"]
    assert len(states) == 2 and all(state is not None for state in states)
    assert not torch.equal(*(next(iter(state.values())) for state in states)), "ranks streamed the same videos"
    assert list((ddp_run / "samples").rglob("*.mp4")), "rank 0 writes the sample videos"


def test_ddp_resumed_mid_epoch_matches_uninterrupted(ddp_run, tmp_path, data_dir):
    resumed = train_ddp(tmp_path, data_dir, "trainer.max_steps=7",
                        f"ckpt_path={ddp_run / 'checkpoints' / 'step4.ckpt'}")
    full, again = (torch.load(run / "checkpoints" / "step6.ckpt", weights_only=False) for run in (ddp_run, resumed))
    assert full["global_step"] == again["global_step"] == 6
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    for rank, state in enumerate(full["stream_state_by_rank"]):
        for key, value in state.items():
            torch.testing.assert_close(again["stream_state_by_rank"][rank][key], value, rtol=1e-6, atol=1e-7)


def test_evaluation_with_two_processes_equals_one(ddp_run):
    ckpt = str(ddp_run / "checkpoints" / "last.ckpt")
    three_videos = ["data.generator.n_val=3", "callbacks.evaluation.n_clips=3"]  # 2 on rank 0, 1 on rank 1
    results = []
    for devices in (["trainer.devices=1"], ["trainer.devices=2", "+trainer.strategy=ddp"]):
        run_module("lightning_ssmvid.evaluate", f"ckpt_path={ckpt}", "trainer.accelerator=cpu", *three_videos, *devices)
        results.append(json.loads((ddp_run / "summary.json").read_text())["evaluation"]["val"]["metrics"])
    one, two = results
    assert set(one) == set(two) and one["val/recall_events_gap10"] + one["val/recall_events_gap20"] > 0
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_config_composes_with_one_task_per_device(launcher):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["experiment=mamba_long", f"hydra/launcher={launcher}", "trainer=ddp",
                                 "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"])
    GlobalHydra.instance().clear()
    slurm = cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu"
    if launcher == "slurm":
        assert (slurm.nodes, slurm.gpus_per_node, slurm.tasks_per_node) == (2, 4, 4)
        assert slurm.timeout_min == 720 and slurm.max_num_timeout == 3


def test_slurm_submission_runs_ddp_tasks_and_a_requeued_job_resumes(tmp_path, data_dir):
    """`-m hydra/launcher=slurm` through submitit, against stand-ins for sbatch/srun/sacct (tests/fake_slurm) that run
    the job on this machine: 2 SLURM tasks form one DDP run; run again as a requeued job, it resumes."""
    env = {"FAKE_SLURM_DIR": str(tmp_path / "slurm"), "FAKE_SLURM_RUNS": "2",
           "PATH": f"{PROJECT_ROOT / 'tests' / 'fake_slurm'}:{os.environ['PATH']}"}
    args = ["-m", *TINY_STREAM, *DDP, "hydra/launcher=slurm", "hydra.launcher.partition=test", "trainer.max_steps=4",
            f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    result = run_module("lightning_ssmvid.train", *args, env=env, check=False)  # checked with the job's own logs
    (job_script,) = (tmp_path / "slurm").glob("job_*")
    state = tmp_path / "slurm" / job_script.name.removeprefix("job_")
    for _ in range(300):  # the "requeued" second run goes on after the launcher has its result
        if state.read_text() in ("COMPLETED", "FAILED"):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text() for p in tmp_path.rglob(".submitit/*/*.err"))
    assert result.returncode == 0 and state.read_text() == "COMPLETED", f"{result.stderr[-3000:]}\n{logs[-3000:]}"
    sbatch = job_script.read_text()
    for line in ("#SBATCH --partition=test", "#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1"):
        assert line in sbatch
    (run,) = tmp_path.glob("train/multiruns/*/0")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4 and summary["status"] == "finished"
    assert "resuming from" in (run / "train.log").read_text()
