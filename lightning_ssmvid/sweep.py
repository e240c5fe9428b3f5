"""W&B sweeps over the Hydra configs: specs in ``sweeps/NAME.yaml``, validated offline before W&B sees them.

    python -m lightning_ssmvid.sweep check [NAME ...]                      (validate; print a trial's command)
    python -m lightning_ssmvid.sweep create NAME [--entity E --project P]  (make sweep sweep=NAME)
    python -m lightning_ssmvid.sweep agent ENTITY/PROJECT/ID [--count N]   (make agent id=... count=N)

A spec's parameters are config keys, passed to ``python -m lightning_ssmvid.train`` as ``key=value``
(``${args_no_hyphens}``); ``check`` proposes a parameter set with W&B's own sweep engine (``sweeps``), exactly as
the W&B server would, and composes the config the trial would run, so a misspelt key fails here, not in every run.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import yaml
from hydra.errors import ConfigCompositionException

from lightning_ssmvid.utils.config import PROJECT_ROOT, compose_train_config
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.loggers import WANDB_PROJECT, wandb_has_credentials

SWEEP_DIR = PROJECT_ROOT / "sweeps"  # W&B sweep specs, not Hydra configs: beside conf/, not in it
TRAIN_MODULE = "lightning_ssmvid.train"


def available_sweeps() -> list[str]:
    """The names of the specs in ``sweeps/``."""
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def load_spec(name: str) -> dict:
    """The sweep spec ``sweeps/NAME.yaml`` (or a path to a YAML file)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else SWEEP_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no sweep spec {name!r}; available: {', '.join(available_sweeps())}")
    return yaml.safe_load(path.read_text())


def propose(spec: dict) -> dict:
    """One parameter set ``{key: value}`` as W&B's sweep engine would propose it first."""
    with warnings.catch_warnings():  # sweeps' pydantic-v1 style config: a warning that is not ours to fix
        warnings.simplefilter("ignore", UserWarning)
        try:
            import sweeps
        except ImportError:  # pragma: no cover - the Makefile installs it
            raise UserError("validating a sweep needs the `sweeps` extra: pip install -e '.[sweeps]' "
                            "(make sweep installs it)") from None

    violations = sweeps.schema_violations_from_proposed_config(spec)
    if violations:
        raise ValueError("invalid sweep spec: " + "; ".join(violations))
    try:
        run = sweeps.next_run(spec, [], validate=True)
    except ValueError as error:  # e.g. a Bayesian search without a metric
        raise ValueError(f"invalid sweep spec: {error}") from error
    return {key: entry["value"] for key, entry in run.config.items()}


def trial_command(spec: dict, params: dict, interpreter: str = "python") -> list[str]:
    """The command W&B's agent runs for ``params`` (its macros substituted the way ``wandb agent`` does)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    args = create_sweep_command_args({"args": {key: {"value": value} for key, value in params.items()}})
    macros = {"${env}": [], "${interpreter}": [interpreter], "${args_no_hyphens}": args["args_no_hyphens"],
              "${args}": args["args"]}
    command = []
    for part in map(str, spec.get("command") or []):
        command += macros.get(part, [part])
    if TRAIN_MODULE not in command:
        raise ValueError(f"a sweep's command must run `-m {TRAIN_MODULE}`; got {command}")
    return command


def train_overrides(command: list[str]) -> list[str]:
    """The Hydra overrides a trial command passes to the training module."""
    return command[command.index(TRAIN_MODULE) + 1 :]


def validate(name: str) -> list[str]:
    """Check spec ``name`` offline: its schema, and that the config composes for the proposed parameter set and for
    every listed value of every parameter (a misspelt key or experiment fails here). Returns a trial's overrides."""
    spec = load_spec(name)
    params = propose(spec)
    variants = [{**params, key: value} for key, entry in spec.get("parameters", {}).items()
                for value in entry.get("values", []) if value != params.get(key)]
    for trial in [params, *variants]:
        try:
            compose_train_config(*train_overrides(trial_command(spec, trial)))
        except ConfigCompositionException as error:
            keys = ", ".join(spec.get("parameters", {}))
            raise ValueError(f"sweep {name!r}: its parameters ({keys}) must be keys of the train config and their "
                             f"values valid choices: {error}") from error
    return train_overrides(trial_command(spec, params))


def create(name: str, entity: str | None, project: str) -> str:
    """Validate spec ``name``, create the W&B sweep and return ``ENTITY/PROJECT/ID``."""
    spec = load_spec(name)
    validate(name)
    require_credentials()
    import wandb

    sweep_id = wandb.sweep(spec, entity=entity, project=project)
    entity = entity or wandb.Api().default_entity
    return f"{entity}/{project}/{sweep_id}"


def require_credentials() -> None:
    """Exit with what to set when there is no W&B API key (sweeps live on the W&B server)."""
    if not wandb_has_credentials():
        raise SystemExit("W&B sweeps need an account: set WANDB_API_KEY or run `.venv/bin/wandb login`, then retry. "
                         "Offline, search with Optuna instead: make experiment=NAME args=\"hparams_search=optuna\"")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_ssmvid.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate specs offline and print a trial's command")
    check.add_argument("names", nargs="*", help=f"default: all of {SWEEP_DIR}")
    make = sub.add_parser("create", help="validate a spec and create the sweep on W&B")
    make.add_argument("name")
    make.add_argument("--entity", default=None)
    make.add_argument("--project", default=WANDB_PROJECT)
    agent = sub.add_parser("agent", help="run a W&B agent on this machine")
    agent.add_argument("sweep_id", help="ENTITY/PROJECT/ID, as `create` printed it")
    agent.add_argument("--count", type=int, default=None, help="runs before the agent stops (default: until done)")
    args = parser.parse_args(argv)

    try:
        if args.action == "check":
            for name in args.names or available_sweeps():
                print(f"{name}: ok; a trial runs: python -m {TRAIN_MODULE} {' '.join(validate(name))}")
        elif args.action == "create":
            sweep = create(args.name, args.entity, args.project)
            print(f"created sweep {sweep}\nrun agents with: make agent id={sweep} [count=N]")
        else:
            require_credentials()
            import wandb

            wandb.agent(args.sweep_id, count=args.count)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
