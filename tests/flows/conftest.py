"""The one Prefect test harness of the suite (session-scoped; nesting kills the server)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home),
                             PREFECT_LOCAL_STORAGE_PATH: str(home / "storage"),
                             PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                             PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


@pytest.fixture
def nightly_home(tmp_path, monkeypatch):
    """A nightly test's W4S_HOME (`tmp_path/home`), and no sandbox pool left by another test."""
    from w4s.tasks import runtime

    monkeypatch.setenv("W4S_HOME", str(tmp_path / "home"))
    runtime.close_all()
    yield
    runtime.close_all()
