"""W&B dashboards as code: built offline from the key registry; every key a real run logs is shown in a panel and
every panel key is logged by the code. Nothing here reaches a W&B server."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from wandb.plot import CustomChart

from lightning_ssmvid import dashboard
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.fvd import fvd_key
from lightning_ssmvid.model import VideoModel
from lightning_ssmvid.train import train
from tests.helpers import LONG_MEMORY_TINY, compose_config

# a joint-training SSM core with rollouts on both gap bins: every kind of key (pixel losses, recall, half-lives)
TINY = [*LONG_MEMORY_TINY, "core=s4d", "callbacks.evaluation.n_clips=2", "callbacks.evaluation.context=8",
        "callbacks.evaluation.horizon=24", "callbacks.evaluation.max_events_per_clip=2", "data.generator.n_val=2",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv",
        "+logger.recorder._target_=tests.test_dashboard.WandbLogger", "arm=cue"]  # the cue arm logs cue_ce too
LIGHTNING = {"epoch", "step"}  # Lightning's own columns, not metrics


class WandbLogger(LightningWandbLogger):
    """Records what a W&B logger is sent, reaching nothing: a ``WandbLogger``, so evaluation media go to it too."""

    sent: dict = {}  # on the class: Hydra instantiates the logger inside train()

    def __init__(self):
        Logger.__init__(self)  # not WandbLogger's: it would start a W&B run
        self._recorder = SimpleNamespace(log=self.sent.update)

    experiment = property(lambda self: self._recorder)
    name = property(lambda self: "recorder")
    version = property(lambda self: "0")
    save_dir = property(lambda self: None)

    def log_metrics(self, metrics, step=None):
        self.sent.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_video(self, key, videos, **kwargs):
        self.sent[key] = videos

    def after_save_checkpoint(self, checkpoint_callback):
        pass

    def finalize(self, status):
        pass


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any request to W&B fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach W&B")

    monkeypatch.setattr(wandb, "Api", refuse)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    WandbLogger.sent.clear()
    out = tmp_path_factory.mktemp("dashboard_run")
    cfg = compose_config(out, data_dir, *TINY)
    train(cfg)
    GlobalHydra.instance().clear()
    return SimpleNamespace(cfg=cfg, sent=dict(WandbLogger.sent), dir=out / "run")


@pytest.fixture(scope="module")
def protocols():
    return dashboard.family_protocols(list(dashboard.FAMILIES))


def shown(panels) -> set[str]:
    return {key for panel in panels for key in dashboard.panel_keys(panel)}


def workspace_panels(workspace: ws.Workspace) -> list:
    return [panel for section in workspace.sections for panel in section.panels]


def registry(p: dashboard.Protocol) -> set[str]:
    """The registry's keys as panels name them (a chart by its table)."""
    return set(p.scalars()) | {keys.chart_table(k) if k in keys.CHART_COLUMNS else k for k in p.media()}


def test_workspaces_and_report_are_built_offline_from_the_registry(protocols):
    for family, p in protocols.items():
        assert p.gap_bins and p.horizon_bins and p.fvd  # read from the experiments' configs
        workspace = dashboard.build_workspace("entity", "project", "views", family, p)
        assert shown(workspace_panels(workspace)) == registry(p)  # nothing spelled by hand, nothing left out
        runset = workspace._to_model().spec.section.run_sets[0]  # the spec W&B would be sent
        assert [(k.section, k.name) for k in runset.grouping] == [("config", "name.value")]
        names = runset.filters["filters"][0]["value"]
        assert names == dashboard.experiment_names(family) and len(names) >= 10
        assert all(name.endswith(f"_{family}") for name in names)
    report = dashboard.build_report("entity", "project", "title", "| the table |", protocols)
    assert any(isinstance(b, wr.MarkdownBlock) and b.text == "| the table |" for b in report.blocks)
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == len(protocols)
    for grid, p in zip(grids, protocols.values()):
        keys_shown = shown(grid.panels)
        assert keys_shown <= registry(p)
        assert {f"val/{keys.RECALL_GAP.format(gap=g)}" for g in p.gap_bins} <= keys_shown
        assert {keys.TRAIN_FRAMES_PER_S, keys.PEAK_RSS_MB, keys.chart_table(keys.PSNR_CURVE)} <= keys_shown
        for panel in grid.panels:
            panel._to_model()  # (a report's run sets need the server to serialise; its panels do not)


def test_every_logged_key_is_shown_and_every_shown_key_is_logged(tiny_run):
    p = dashboard.protocol(tiny_run.cfg)
    panel_keys = shown(workspace_panels(dashboard.build_workspace("entity", "project", "views", "long", p)))
    scalars = {k for k, v in tiny_run.sent.items() if isinstance(v, (int, float))} - LIGHTNING
    media = set()
    for key, value in tiny_run.sent.items():
        if isinstance(value, CustomChart):  # W&B stores a chart's data as a table under its own key
            value.set_key(key)
            media.add(value.spec.table_key)
        elif key not in scalars | LIGHTNING:
            media.add(key)
    with open(tiny_run.dir / "csv" / "metrics.csv") as handle:
        assert set(next(csv.reader(handle))) - LIGHTNING == scalars  # the CSV and W&B loggers see the same
    assert {keys.MEMORY_HALFLIFE_HISTOGRAM, keys.SAMPLE.format(i=0), keys.chart_table(keys.RECALL_CURVE)} <= media

    assert not (scalars | media) - panel_keys, "logged but shown in no panel"
    conditional = {keys.TRAIN_SKIPPED_NONFINITE, *(f"val/{keys.FVD.format(n=n, t=t)}" for n, t in p.fvd)}
    assert panel_keys - scalars - media == conditional, "shown but never logged"
    summary = json.loads((tiny_run.dir / "summary.json").read_text())
    assert {keys.TRAIN_FRAMES_PER_S, keys.PEAK_RSS_MB} <= set(summary) & scalars  # summary.json and loggers alike


def test_conditional_keys_are_the_ones_the_code_logs(protocols):
    for n, t in protocols["long"].fvd:  # logged only with the I3D weights
        assert fvd_key("val", n, t) == f"val/{keys.FVD.format(n=n, t=t)}"
    logged = []  # logged only after a non-finite loss
    model = SimpleNamespace(skipped_nonfinite=0, nonfinite_in_a_row=0, stream_state=None, max_nonfinite_steps=5,
                            log=lambda key, value, **kwargs: logged.append(key),
                            _zero_loss=lambda: torch.zeros(()))
    VideoModel._skip_nonfinite(model, batch_idx=0)
    assert logged == [keys.TRAIN_SKIPPED_NONFINITE]


def test_chart_panels_query_what_log_to_wandb_sends(tiny_run):
    charts = {panel.query["summaryTable"]["tableKey"]: panel
              for panel in workspace_panels(dashboard.build_workspace("e", "p", "v", "long",
                                                                      dashboard.protocol(tiny_run.cfg)))
              if isinstance(panel, wr.CustomChart)}
    sent = {key: value for key, value in tiny_run.sent.items() if isinstance(value, CustomChart)}
    assert len(sent) == len(charts) == 3
    for key, value in sent.items():
        value.set_key(key)
        panel = charts[value.spec.table_key]
        assert panel.chart_name == value.spec.spec_name
        assert panel.chart_fields == {k: v for k, v in value.spec.fields.items() if v is not None}
        assert set(panel.chart_fields.values()) <= set(value.table.columns)


def refuse_to_build_or_save(monkeypatch) -> list:
    calls = []
    for owner, name in ((ws.Workspace, "save"), (ws.Workspace, "save_as_new_view"), (wr.Report, "save"),
                        (dashboard, "build_workspace"), (dashboard, "build_report"), (dashboard, "saved_views")):
        monkeypatch.setattr(owner, name, lambda *args, name=name, **kwargs: calls.append(name))
    return calls


def test_without_credentials_it_says_what_to_set_and_creates_nothing(tiny_run, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    calls = refuse_to_build_or_save(monkeypatch)
    for command in (["workspace"], ["report", "--logs", str(tiny_run.dir)]):
        with pytest.raises(SystemExit) as exit:
            dashboard.main([*command, "--entity", "e", "--project", "p"])
        message = exit.value.code
        assert isinstance(message, str)  # printed to stderr, exit status 1
        for hint in ("WANDB_API_KEY", "wandb login", "wandb sync logs/*/runs/*/wandb/offline-run-*", "nothing"):
            assert hint in message
    assert calls == []


def test_when_the_api_does_not_answer_it_says_so_and_creates_nothing(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)

    def no_network(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(wandb, "Api", no_network)
    calls = refuse_to_build_or_save(monkeypatch)
    with pytest.raises(SystemExit) as exit:
        dashboard.main(["workspace", "--entity", "e"])
    assert "did not answer (network is unreachable)" in exit.value.code and "network" in exit.value.code
    assert calls == []


def test_saving_updates_the_view_of_the_same_name_else_creates_it(protocols, monkeypatch):
    import wandb_workspaces._graphql as graphql

    monkeypatch.setattr(graphql, "execute_graphql", lambda *args: {"project": None})
    with pytest.raises(SystemExit, match="no W&B project e/p"):
        dashboard.saved_views(None, "e", "p", "project-view")
    edges = [{"node": {"id": "VIEW1", "name": "nw-abc-v", "displayName": "views (long)"}}]
    monkeypatch.setattr(graphql, "execute_graphql", lambda *args: {"project": {"allViews": {"edges": edges}}})
    existing = dashboard.saved_views(None, "e", "p", "project-view")
    assert existing == {"views (long)": edges[0]["node"]}

    saved = []
    monkeypatch.setattr(dashboard, "connect", lambda: SimpleNamespace(default_entity="me"))
    monkeypatch.setattr(dashboard, "saved_views", lambda *args: existing)
    monkeypatch.setattr(dashboard, "family_protocols", lambda families: {f: protocols[f] for f in families})
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append((self.name, self._internal_id)) or self)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: self.name))
    assert dashboard.main(["workspace", "--name", "views"]) == ["views (long)", "views (short)"]
    assert saved == [("views (long)", "VIEW1"), ("views (short)", "")]


def test_a_flow_head_with_the_self_rollout_loss_logs_the_losses_its_protocol_shows(compose_cfg):
    from hydra.utils import instantiate

    cfg = compose_cfg("experiment=smoke", "head=flow", "model.rollout_loss_steps=2", "data.frame_size=16",
                      "core.d_model=8", "codec.width=4", "head.width=8")
    p = dashboard.protocol(cfg)
    model = instantiate(cfg.model).train()
    logged = {f"train/{name}" for name in model.losses({"frames": torch.rand(2, 5, 3, 16, 16)})[0]}
    shown = {k for k in keys.loss_keys(p.pixels, p.recon, p.cue, p.head_losses, p.rollout) if k.startswith("train/")}
    assert logged == shown and {"train/flow_mse", "train/rollout_flow_mse", keys.TRAIN_ROLLOUT_PIXEL_MSE} <= shown
