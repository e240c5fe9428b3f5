"""W&B dashboards as code: a saved workspace view per experiment family and a comparison report.

``python -m lightning_ssmvid.dashboard workspace --entity E [--project P] [--name NAME] [--family long short]``
creates or updates (same name) one saved view per family: runs of the family's experiments grouped by core.
``python -m lightning_ssmvid.dashboard report --entity E [--project P] [--logs logs]`` creates or updates (same
title) a report with the comparison table of ``make table`` and the key plots.

Every panel takes its keys from ``lightning_ssmvid.metrics.keys`` for the bins of the family's experiment configs, so
a renamed metric fails tests/test_dashboard.py instead of leaving a panel empty. Nothing is built or saved before the
credentials are found and the W&B API has answered.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

try:  # an optional extra
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
except ImportError:  # pragma: no cover - the Makefile installs it
    raise SystemExit("error: dashboards need the `dashboards` extra: pip install -e '.[dashboards]' "
                     "(make dashboard installs it)") from None

from lightning_ssmvid.heads import head_loss_name
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.temporal import default_horizon_bins
from lightning_ssmvid.utils.config import CONFIG_DIR, PROJECT_ROOT, compose_train_config
from lightning_ssmvid.utils.loggers import WANDB_PROJECT, wandb_has_credentials

FAMILIES = ("long", "short")
PROJECT = WANDB_PROJECT
# one group per experiment, i.e. per core within a family: core.name would merge transformer_window (the memoryless
# control, core.name "transformer") with the full transformer. train() logs the resolved config as the run config.
GROUP_BY_CORE = "name"
REPORT_SECTIONS = ("Recall vs gap", "Quality vs horizon", "FVD", "Memory horizon", "Throughput and memory")
LINE, BAR = ("wandb/line/v0", ("x", "y")), ("wandb/bar/v0", ("label", "value"))  # wandb.plot.line / .bar specs

NO_CREDENTIALS = """no W&B credentials found, so nothing was created.
Set WANDB_API_KEY (from https://wandb.ai/authorize) or run `wandb login`, then run this again.
Runs trained without credentials were logged offline: upload them first with
    wandb sync logs/*/runs/*/wandb/offline-run-*"""
NO_API = """the W&B API did not answer ({error}), so nothing was created.
Check the network (and WANDB_BASE_URL for a private server) and the API key (`wandb login --relogin`)."""


@dataclass(frozen=True)
class Protocol:
    """The settings that decide which keys runs log, merged over a family's experiments."""

    pixels: bool  # joint training scores pixels; two-stage training sees only cached latents
    recon: bool
    horizon_bins: tuple[tuple[int, int], ...]
    gap_bins: tuple[int, ...]
    fvd: tuple[tuple[int, int], ...]  # (clips, frames) of the FVD key, when the I3D detector is given
    n_samples: int
    cue: bool = False  # the memory arm's cue head (model.cue_weight > 0)
    head_losses: tuple[str, ...] = ("latent_mse",)  # the heads' loss names (head=flow: flow_mse)
    rollout: bool = False  # the self-rollout loss (model.rollout_loss_steps > 0)

    def scalars(self) -> list[str]:
        return keys.scalar_keys(self.pixels, self.recon, self.horizon_bins, self.gap_bins, self.fvd, cue=self.cue,
                                head_losses=self.head_losses, rollout=self.rollout)

    def media(self) -> list[str]:
        return keys.media_keys(self.n_samples, recall=bool(self.gap_bins)) if self.horizon_bins else []


def protocol(cfg: DictConfig) -> Protocol:
    """What a run of the train config ``cfg`` logs."""
    evaluation = cfg.callbacks.get("evaluation")
    horizon = evaluation.horizon if evaluation is not None and evaluation.n_clips > 0 else 0
    pixels = cfg.stages.mode == "joint"
    fvd_frames = evaluation.fvd_frames if horizon else 0
    return Protocol(
        pixels=pixels,
        recon=pixels and bool(cfg.model.recon_weight),
        # a bin past the horizon is never seen, so summarise() names it by the horizons it reached
        horizon_bins=tuple((lo, min(hi, horizon)) for lo, hi in default_horizon_bins(horizon)),
        gap_bins=tuple(evaluation.gap_bins or ()) if horizon else (),
        fvd=((evaluation.n_clips, fvd_frames),) if fvd_frames and horizon >= fvd_frames else (),
        n_samples=min(evaluation.n_samples, evaluation.n_clips) if horizon else 0,
        cue=bool(cfg.model.get("cue_weight", 0)),
        head_losses=(head_loss_name(cfg.model.head.name),),
        rollout=bool(cfg.model.get("rollout_loss_steps", 0)),
    )


def merge(protocols: list[Protocol]) -> Protocol:
    """One protocol showing every key any of ``protocols`` logs."""
    union = lambda field: tuple(sorted({v for p in protocols for v in getattr(p, field)}))  # noqa: E731
    return Protocol(pixels=any(p.pixels for p in protocols), recon=any(p.recon for p in protocols),
                    horizon_bins=union("horizon_bins"), gap_bins=union("gap_bins"), fvd=union("fvd"),
                    n_samples=max(p.n_samples for p in protocols), cue=any(p.cue for p in protocols),
                    head_losses=union("head_losses"), rollout=any(p.rollout for p in protocols))


def experiment_names(family: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / "experiment").glob(f"*_{family}.yaml"))


def experiment_configs(names: list[str]) -> list[DictConfig]:
    """The train configs of experiments ``names``, as ``make train experiment=NAME`` composes them."""
    return [compose_train_config(f"experiment={name}") for name in names]


# ------------------------------------------------------------------------------------------------------ panels
def chart(key: str, kind: tuple[str, tuple[str, str]], title: str) -> wr.CustomChart:
    """The panel of a chart logged with ``wandb.plot`` as ``key``: its Vega spec fed the table's two columns."""
    spec, fields = kind
    return wr.CustomChart(query={"summaryTable": {"tableKey": keys.chart_table(key)}}, chart_name=spec,
                          chart_fields=dict(zip(fields, keys.CHART_COLUMNS[key])), chart_strings={"title": title})


def bars(title: str, metrics: list[str]) -> wr.BarPlot:
    """The latest value of each metric per core (runs are grouped by core)."""
    return wr.BarPlot(title=title, metrics=metrics, orientation="v", groupby_aggfunc="mean",
                      groupby_rangefunc="stderr")


def sections(p: Protocol) -> dict[str, list]:
    """Panels by section title, each showing the keys of ``p`` it is about; empty panels and sections are left out."""
    scalars, media = set(p.scalars()), p.media()
    val = lambda names: [f"val/{n}" for n in names if f"val/{n}" in scalars]  # noqa: E731
    losses = [k for k in keys.loss_keys(p.pixels, p.recon, p.cue, p.head_losses, p.rollout) if k in scalars]
    gaps, horizons = p.gap_bins, p.horizon_bins
    out = {
        "Losses": [
            wr.LinePlot(title="Training losses", y=[k for k in losses if k.startswith("train/")]),
            wr.LinePlot(title="Validation losses", y=[k for k in losses if k.startswith("val/")]),
            wr.LinePlot(title="Next-frame PSNR (teacher-forced)", y=[k for k in [keys.VAL_PSNR_NEXT] if k in scalars]),
            wr.LinePlot(title="Skipped non-finite steps", y=[keys.TRAIN_SKIPPED_NONFINITE]),
        ],
        "Recall vs gap": [
            bars("Cue recall per gap (frames hidden)", val(keys.RECALL_GAP.format(gap=g) for g in gaps)),
            bars("Recall vs chance, controls and codec ceiling",
                 val([keys.RECALL, keys.RECALL_CHANCE, keys.RECALL_COPY_LAST, keys.RECALL_ORACLE, keys.RECALL_CODEC])),
            bars("Object not drawn at the reveal, per gap", val(keys.RECALL_ABSENT_GAP.format(gap=g) for g in gaps)),
            bars("State read-out per gap (linear probe on the core output)",
                 val([*(keys.PROBE_RECALL_GAP.format(gap=g) for g in gaps), keys.PROBE_CHANCE, keys.PROBE_SHUFFLED])),
            bars("Cue recall per gap, free rollout through the gap",
                 val([*(keys.RECALL_ROLLOUT_GAP.format(gap=g) + s for g in gaps for s in ("", "_lo", "_hi")),
                      keys.RECALL_ROLLOUT])),
            bars("Free rollout: object not drawn", val([*(f"{keys.RECALL_ROLLOUT}_absent_gap{g}" for g in gaps),
                                                        f"{keys.RECALL_ROLLOUT}_absent"])),
            bars("95% bootstrap intervals over clips (pixel recall, state read-out)",
                 val([t.format(gap=g) for g in gaps for t in (*keys.RECALL_GAP_CI, *keys.PROBE_RECALL_GAP_CI)])),
            bars("Object not drawn at the reveal (all gaps); worst-colour codec ceiling; "
                 "read-out on its training events",
                 val([keys.RECALL_ABSENT, keys.RECALL_CODEC_WORST, keys.PROBE_RECALL, keys.PROBE_TRAIN])),
            bars("Scored events per gap", val(keys.RECALL_EVENTS_GAP.format(gap=g) for g in gaps)),
            wr.LinePlot(title="Cue recall during training", y=val([keys.RECALL])),
        ],
        "Quality vs horizon": [
            bars("PSNR per horizon bin", val(keys.PSNR_BIN.format(lo=lo, hi=hi) for lo, hi in horizons)),
            bars("SSIM per horizon bin", val(keys.SSIM_BIN.format(lo=lo, hi=hi) for lo, hi in horizons)),
            bars("Copy-last-frame baseline: PSNR and SSIM per horizon bin",
                 val(f"{keys.COPY_LAST}_{t}".format(lo=lo, hi=hi) for t in (keys.PSNR_BIN, keys.SSIM_BIN)
                     for lo, hi in horizons)),
            bars("Foreground persistence and motion, generated / real (1 = like the data; 0 = empty / frozen)",
                 val(t.format(lo=lo, hi=hi) for t in (keys.FOREGROUND_RATIO_BIN, keys.MOTION_RATIO_BIN)
                     for lo, hi in horizons)),
            bars("Flicker (generated vs real)", val(keys.FLICKER)),
            bars("Warping error (generated vs real)", val(keys.WARP_ERROR)),
        ],
        "FVD": [bars("FVD", val(keys.FVD.format(n=n, t=t) for n, t in p.fvd))],
        "Memory horizon": [bars("SSM memory half-life quantiles (frames)",
                                val(f"{keys.MEMORY_HALFLIFE}_p{q}" for q in keys.MEMORY_HALFLIFE_QUANTILES))],
        "Throughput and memory": [bars("Training throughput (frames/s)", [keys.TRAIN_FRAMES_PER_S]),
                                  bars("Peak RSS (MB)", [keys.PEAK_RSS_MB])],
        "Samples (real | generated)": [],
    }
    for key, title in ((keys.PSNR_CURVE, "PSNR vs horizon"), (keys.SSIM_CURVE, "SSIM vs horizon")):
        if key in media:
            out["Quality vs horizon"].append(chart(key, LINE, title))
    if keys.RECALL_CURVE in media:
        out["Recall vs gap"].append(chart(keys.RECALL_CURVE, BAR, "Recall vs gap"))
    if keys.MEMORY_HALFLIFE_HISTOGRAM in media:  # a histogram key plots as its distribution over steps
        out["Memory horizon"].append(wr.LinePlot(title="Half-lives, log10 frames", y=[keys.MEMORY_HALFLIFE_HISTOGRAM]))
    videos = [k for k in media if k.startswith(keys.SAMPLES + "/")]
    if videos:
        out["Samples (real | generated)"].append(wr.MediaBrowser(title="Rollouts: real | generated (context in red)",
                                                                 media_keys=videos, gallery_axis="step"))
    out = {title: [panel for panel in panels if panel_keys(panel)] for title, panels in out.items()}
    return {title: panels for title, panels in out.items() if panels}


def panel_keys(panel: Any) -> list[str]:
    """The logged keys a panel shows (a chart's table key for custom charts)."""
    if isinstance(panel, wr.LinePlot):
        return list(panel.y)
    if isinstance(panel, wr.BarPlot):
        return list(panel.metrics)
    if isinstance(panel, wr.MediaBrowser):
        return list(panel.media_keys)
    if isinstance(panel, wr.CustomChart):
        return [panel.query["summaryTable"]["tableKey"]]
    raise TypeError(f"no key accessor for {type(panel).__name__}")  # a new panel type must say what it shows


def family_filter(family: str) -> ws.And:
    """Runs of the family's experiments (W&B group = experiment name)."""
    return ws.And(ws.Metric("Group").isin(experiment_names(family)))


def build_workspace(entity: str, project: str, name: str, family: str, p: Protocol) -> ws.Workspace:
    """The saved view of one family: its runs grouped by core, one section per panel group."""
    return ws.Workspace(
        entity=entity, project=project, name=f"{name} ({family})",
        sections=[ws.Section(name=title, panels=panels, is_open=True) for title, panels in sections(p).items()],
        runset_settings=ws.RunsetSettings(filters=family_filter(family), groupby=[ws.Config(GROUP_BY_CORE)]),
    )


def build_report(entity: str, project: str, title: str, table: str, protocols: dict[str, Protocol]) -> wr.Report:
    """The comparison table (``make table``) and, per family, the key plots of its runs grouped by core."""
    blocks = [wr.P("Sequence cores compared on long-memory video: the same data, codec, budget and evaluation; only "
                   "the core differs. Table: final validation values per experiment (mean ± std over seeds), built "
                   "from the runs' summary.json by `make table`."),
              wr.H2("Comparison"), wr.MarkdownBlock(text=table)]
    for family, p in protocols.items():
        panels = [panel for section, panels in sections(p).items() if section in REPORT_SECTIONS for panel in panels]
        for i, panel in enumerate(panels):  # three panels a row
            panel.layout = wr.Layout(x=8 * (i % 3), y=6 * (i // 3), w=8, h=6)
        runset = wr.Runset(entity=entity, project=project, name=f"{family} protocol", filters=family_filter(family),
                           groupby=[f"config.{GROUP_BY_CORE}"])
        blocks += [wr.H2(f"{family} protocol"), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(project=project, entity=entity, title=title, description="generated by make wandb-report",
                     blocks=blocks)


def family_protocols(families: list[str]) -> dict[str, Protocol]:
    return {family: merge([protocol(cfg) for cfg in experiment_configs(experiment_names(family))])
            for family in families}


def comparison_table(logs: Path, bench: Path) -> str:
    """The markdown table of ``make table`` for the finished runs under ``logs``."""
    from lightning_ssmvid.report import build_rows, find_runs, load_generation, markdown_table

    runs = find_runs(logs)
    if not runs:
        raise SystemExit(f"no finished run (summary.json with status 'finished') under {logs}: nothing to report")
    header, rows, _ = build_rows(runs, load_generation(bench))
    return markdown_table(header, rows)


# -------------------------------------------------------------------------------------------------------- W&B
VIEWS = """query Views($entityName: String, $name: String, $viewType: String) {
  project(name: $name, entityName: $entityName) {
    allViews(viewType: $viewType) { edges { node { id name displayName } } }
  }
}"""


def connect() -> Any:
    """A ``wandb.Api`` that has answered; exits with what to set when there are no credentials or no answer."""
    if not wandb_has_credentials():
        raise SystemExit(NO_CREDENTIALS)
    import wandb

    try:
        api = wandb.Api(timeout=20)
        api.viewer  # noqa: B018 (a request: checks the network and the key)
    except Exception as error:  # no network, a rejected key, a server error: all end here
        raise SystemExit(NO_API.format(error=error)) from None
    return api


def saved_views(api: Any, entity: str, project: str, view_type: str) -> dict[str, dict]:
    """Saved views of a project by display name (``project-view``: workspaces, ``runs``: reports)."""
    from wandb_workspaces._graphql import execute_graphql  # the SDK's transport, old and new

    try:
        found = execute_graphql(api, VIEWS, {"entityName": entity, "name": project, "viewType": view_type})
    except Exception as error:
        raise SystemExit(NO_API.format(error=error)) from None
    if found.get("project") is None:
        raise SystemExit(f"no W&B project {entity}/{project} (or no access): log runs to it first (make train with "
                         "credentials, or wandb sync logs/*/runs/*/wandb/offline-run-*); nothing was created")
    return {edge["node"]["displayName"]: edge["node"] for edge in found["project"]["allViews"]["edges"]}


def save_workspace(workspace: ws.Workspace, existing: dict[str, dict]) -> str:
    """Update the saved view with the workspace's name, else create it; returns its URL."""
    view = existing.get(workspace.name)
    if view is not None:  # save() upserts by id: the same view, now as built here
        workspace._internal_name, workspace._internal_id = view["name"], view["id"]
    return workspace.save().url


def save_report(report: wr.Report, existing: dict[str, dict]) -> str:
    """Update the report with the same title, else create it; returns its URL."""
    if report.title in existing:
        report.id = existing[report.title]["id"]
    return report.save().url


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    workspace = commands.add_parser("workspace", help="create or update the saved workspace views")
    workspace.add_argument("--name", default=PROJECT, help="view name; the family is appended")
    report = commands.add_parser("report", help="create or update the comparison report")
    report.add_argument("--title", default=f"{PROJECT}: sequence cores on long-memory video")
    report.add_argument("--logs", type=Path, default=PROJECT_ROOT / "logs")
    report.add_argument("--bench", type=Path, default=PROJECT_ROOT / "reports" / "bench")
    for command in (workspace, report):
        command.add_argument("--entity", default=None, help="W&B user or team (default: yours)")
        command.add_argument("--project", default=PROJECT)
        command.add_argument("--family", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    args = parser.parse_args(argv)
    table = comparison_table(args.logs, args.bench) if args.command == "report" else None  # local input first
    api = connect()
    entity = args.entity or api.default_entity
    if not entity:
        raise SystemExit("no default W&B entity for this API key: pass --entity (make dashboard entity=...)")
    existing = saved_views(api, entity, args.project, "project-view" if args.command == "workspace" else "runs")
    protocols = family_protocols(args.family)
    if args.command == "workspace":  # all built before any is saved: a build error leaves nothing half-done
        views = [build_workspace(entity, args.project, args.name, family, p) for family, p in protocols.items()]
        urls = [save_workspace(view, existing) for view in views]
    else:
        urls = [save_report(build_report(entity, args.project, args.title, table, protocols), existing)]
    print("\n".join(urls))
    return urls


if __name__ == "__main__":
    main()
