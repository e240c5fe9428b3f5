"""Evaluate a checkpoint: ``python -m lightning_ssmvid.evaluate ckpt_path=PATH [split=test] [key=value ...]``.

A Hydra app (``conf/evaluate.yaml``). It rebuilds model and data from the checkpoint's own run config, which
``key=value`` overrides change (e.g. ``callbacks.evaluation.n_clips=16 trainer.devices=2 logger=csv``), runs the
teacher-forced losses and the rollout evaluation on ``split`` (``val``: ``trainer.validate``, logged as ``val/...``;
``test``: ``trainer.test`` on ``data.test_split``, logged as ``test/...``) and writes the results into the run
folder's ``summary.json`` (under ``evaluation.<split>``), ``eval_<split>/curves.json`` and W&B (a run with
``job_type=eval`` in the training run's group). Overrides that would change the model are refused, except the
sampling settings (``head.temperature``, ``head.steps``, ``model.rollout_noise``; ``lightning_ssmvid/sampling.py``).
``snap=K snap_pooled=P snap_feedback=G`` snap the rollouts onto real latents, as ``generate``'s keys of those names.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_ssmvid.callbacks.evaluation import RolloutEvaluation
from lightning_ssmvid.generate import load_checkpoint, set_rollout_snap
from lightning_ssmvid.sampling import EVALUATE_KEYS, apply_sampling
from lightning_ssmvid.utils.checkpoints import check_targets
from lightning_ssmvid.utils.config import CONFIG_DIR, compose_train_config, instantiate_list
from lightning_ssmvid.utils.errors import UserError, user_errors
from lightning_ssmvid.utils.files import write_json_atomic
from lightning_ssmvid.utils.loggers import finish_wandb


def evaluate(ckpt_path: str, overrides: list[str] | None = None, split: str = "val", snap: int = 0,
             snap_pooled: int = 256, snap_feedback: float = 0.0) -> dict:
    """Validate (``split="val"``) or test (``"test"``) ``ckpt_path``; return the logged metrics (also merged into the
    run's ``summary.json``). ``snap > 0`` snaps its rollouts onto a codebook of real latents, as generate does."""
    if split not in ("val", "test"):
        raise UserError(f"split={split}: must be val or test")
    model = load_checkpoint(ckpt_path)
    check_targets(model.run_config, str(ckpt_path))  # data, loggers and callbacks are built from it too
    try:
        set_rollout_snap(model, ckpt_path, snap, snap_pooled, snap_feedback)
    except ValueError as error:
        raise UserError(str(error)) from None
    overrides = [o.lstrip("+") for o in overrides or []]  # Hydra's "+key=value"/"++key=value" add a key; so does this
    cfg = apply_overrides(OmegaConf.create(model.run_config), overrides)
    refuse_model_changes(model.run_config, cfg, overrides)
    try:
        sampling = apply_sampling(model, **{name: OmegaConf.select(cfg, key) for key, name in EVALUATE_KEYS.items()
                                            if any(o.startswith(f"{key}=") for o in overrides)})
    except ValueError as error:  # temperature of a deterministic head, steps=0
        raise UserError(str(error)) from None
    run_dir = Path(ckpt_path).resolve().parent.parent
    if split == "val" and cfg.data.get("val_split", "val") == cfg.data.get("test_split", "test"):
        split, cfg.data.val_split = "test", "val"  # the older spelling, data.val_split=test: the test split, as test
    out_dir = run_dir / f"eval_{split}"
    cfg.callbacks.evaluation.output_dir = str(out_dir)
    # this version's evaluation callback (not a model setting: a checkpoint saved before a module moved still runs)
    cfg.callbacks.evaluation._target_ = f"{RolloutEvaluation.__module__}.{RolloutEvaluation.__qualname__}"
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loggers = []
    if cfg.get("logger"):
        for name in list(cfg.logger):
            cfg.logger[name].save_dir = str(out_dir)
            if name == "wandb":
                cfg.logger[name].job_type = "eval"
        loggers = instantiate_list(cfg.logger)
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                        strategy=cfg.trainer.get("strategy", "auto"), num_nodes=cfg.trainer.get("num_nodes", 1),
                        logger=loggers or False, callbacks=[instantiate(cfg.callbacks.evaluation)],
                        use_distributed_sampler=False, default_root_dir=str(out_dir))
    (trainer.test if split == "test" else trainer.validate)(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary.setdefault("evaluation", {})[split] = {"checkpoint": str(ckpt_path), "metrics": metrics,
                                                       "overrides": overrides, "sampling": sampling}
        write_json_atomic(summary_path, summary)
    finish_wandb(loggers)
    return metrics


MODEL_KEYS = ("model", "core", "codec", "head", "stages")  # what the checkpoint's weights were trained as


def refuse_model_changes(saved: dict, cfg: DictConfig, overrides: list[str]) -> None:
    """Evaluation scores the checkpoint's own model: an override that would change it is refused (it would be
    ignored, and the summary would record a model that was not evaluated). Sampling settings are allowed."""
    saved, ours = without_sampling(saved), without_sampling(OmegaConf.to_container(cfg, resolve=True))
    changed = [key for key in MODEL_KEYS if saved.get(key) != ours.get(key)]
    if changed:
        asked = [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0] in changed]
        raise UserError(f"evaluate scores the checkpoint's own model; {', '.join(asked or changed)} would change its "
                        f"{', '.join(changed)}: refused (train a run with those settings and evaluate that)")


def without_sampling(config: dict) -> dict:
    """A copy of a resolved run config without the sampling settings (``sampling.EVALUATE_KEYS``): evaluation may
    change those, they are not weights."""
    config = copy.deepcopy(config)
    for key in EVALUATE_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` overrides of a run's config; ``group=option`` (e.g. ``logger=csv``) re-chooses a config group."""
    for override in overrides:
        key, _, value = override.partition("=")
        if "." not in key and (CONFIG_DIR / key / f"{value}.yaml").is_file():
            cfg[key] = compose_train_config(override)[key]
        else:
            cfg.merge_with_dotlist([override])
    return cfg


TASK_KEYS = ("ckpt_path", "split", "experiment", "snap", "snap_pooled", "snap_feedback")  # evaluate's own keys;
# the others change the run's config


def with_run_experiment(argv: list[str]) -> list[str]:
    """``argv`` plus ``experiment=NAME`` of the checkpoint's run (from its run folder's ``config.yaml``), so that
    Hydra checks the overrides against the keys the run has (its data set's ``data.generator.*``, say), not only
    against the default training config's. ``experiment=`` chooses nothing else: the run's saved config is used."""
    ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt_path=")), None)
    if ckpt is None or any(a.split("=", 1)[0].lstrip("+~") == "experiment" for a in argv):
        return argv
    saved = Path(ckpt).resolve().parent.parent / "config.yaml"
    try:
        name = OmegaConf.load(saved).get("name") if saved.is_file() else None
    except Exception:  # noqa: BLE001 - an unreadable file: Hydra checks against the default config
        name = None
    if name and (CONFIG_DIR / "experiment" / f"{name}.yaml").is_file():
        return [*argv, f"experiment={name}"]
    return argv


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    overrides = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in TASK_KEYS]
    with user_errors():  # a user's mistake: one line, exit status 2
        metrics = evaluate(cfg.ckpt_path, overrides, split=cfg.split, snap=cfg.snap, snap_pooled=cfg.snap_pooled,
                           snap_feedback=cfg.snap_feedback)
    for key, value in sorted(metrics.items()):
        print(f"{key:40s} {value:.6g}")


if __name__ == "__main__":
    sys.argv[1:] = with_run_experiment(sys.argv[1:])
    main()
