"""Every test writes under a temporary W4S_HOME; nothing touches the user's runs or caches,
except the dequantized embedded model, which is shared across tests to load it only once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("W4S_HOME", str(tmp_path / "w4s-home"))
    yield
