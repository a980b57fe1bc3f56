"""Every test writes under a temporary W4S_HOME; nothing touches the user's runs or caches.
The dequantized embedded model is the one exception: its folder is shared by the session
(a symlink in each test's home) so the real model is converted once, not once per test.
Every test also starts and ends with no built model in the process (one reset, here)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("shared-models")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, shared_models_dir):
    home = tmp_path / "w4s-home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "models").symlink_to(shared_models_dir, target_is_directory=True)
    monkeypatch.setenv("W4S_HOME", str(home))
    yield


@pytest.fixture(autouse=True)
def _fresh_models():
    """Models are cached per process by config: a scripted model's position in its replies
    or a loaded adapter must not leak from one test into the next."""
    from w4s.models.factory import clear_model_cache  # lazily: some tests check imports

    clear_model_cache()
    yield
    clear_model_cache()
