"""W&B goes online only with credentials: an API key, or a `wandb login` netrc entry for the server in use."""

from __future__ import annotations

import pytest

from lightning_ssmvid.utils.loggers import wandb_has_credentials, wandb_mode


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


@pytest.mark.parametrize("host, base_url, found", [
    ("api.wandb.ai", None, True),
    ("wandb.example.org", "https://wandb.example.org", True),
    ("ml.example.org", "https://ml.example.org", True),       # a private server under any name
    ("ml.example.org", "https://other.example.org", False),   # credentials for another server
    ("api.wandb.ai", "https://ml.example.org", False),
])
def test_netrc_entry_for_the_server_in_use_counts(no_key, monkeypatch, host, base_url, found):
    no_key.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    if base_url:
        monkeypatch.setenv("WANDB_BASE_URL", base_url)
    assert wandb_has_credentials() is found
    assert wandb_mode() == ("online" if found else "offline")


def test_no_key_and_no_netrc_is_offline(no_key):
    assert not wandb_has_credentials() and wandb_mode() == "offline"


def test_api_key_or_explicit_mode_wins(no_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
