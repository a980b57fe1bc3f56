"""Run folders, datasets and the adapter registry at an fsspec URL: `memory://` and a local
S3 (moto's server, read through s3fs), as several hosts would share them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from w4s.config import OptimizeConfig
from w4s.errors import ConfigError
from w4s.mdp import Candidate, State
from w4s.paths import location, runs_dir, storage_root, w4s_home
from w4s.storage import adapters
from w4s.storage.dataset import build_dataset
from w4s.storage.query import iteration_table, list_runs, query_runs
from w4s.storage.run_store import RunStore


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free port, with one bucket; None when moto is not installed."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, aws_access_key_id="test",
                 aws_secret_access_key="test", region_name="us-east-1"
                 ).create_bucket(Bucket="w4s")
    yield url
    server.stop()


@pytest.fixture(params=["memory", "s3"])
def root_url(request, monkeypatch):
    """A fresh storage root URL on each backend."""
    tag = uuid.uuid4().hex[:8]
    if request.param == "memory":
        return f"memory://w4s-{tag}"
    endpoint = request.getfixturevalue("s3_endpoint")
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                 "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    return f"s3://w4s/{tag}"


def _cand(run: str, it: int, j: int, reward: float) -> Candidate:
    return Candidate(run_id=run, iteration=it, index=j, kind="action",
                     prompt=State("t", "q", "a").messages(), reply=f"reply {j}",
                     code=f"def solver(a, t):\n    return {{'answer': {j}}}\n", status="ok",
                     accuracy=0.25 * j, reward=reward, chosen=j == 1,
                     meta_completion_tokens=5, executor_prompt_tokens=2,
                     executor_completion_tokens=1)


def _fill(runs, run="r1") -> RunStore:
    store = RunStore.create(runs, OptimizeConfig(iterations=2), run)
    store.save_split(["v1", "v2"], ["t1"])
    store.save_state(0, State("t", "q", "a"))
    for it in (1, 2):
        for j in range(3):
            store.save_candidate(_cand(run, it, j, reward=[0.0, 1.0, 0.5][j]))
        store.write_trajectory(it, store.candidates(it), benchmark="arithmetic (synthetic)",
                               meta_model="m", executor_model="e")
    return store


def test_run_folder_round_trips_through_a_url(root_url, monkeypatch, tmp_path):
    monkeypatch.setenv("W4S_STORAGE_URL", root_url)
    assert str(runs_dir()) == f"{root_url}/runs"
    store = _fill(runs_dir())
    assert str(store.root) == f"{root_url}/runs/r1" and store.run_id == "r1"

    # another stage (another host) reopens it by its URL string alone
    again = RunStore(str(store.root))
    assert again.exists() and again.split_ids() == {"validation": ["v1", "v2"], "test": ["t1"]}
    assert [c.index for c in again.candidates(2)] == [0, 1, 2]
    assert RunStore.create(runs_dir(), OptimizeConfig(iterations=2), "r1").exists()

    # the same rows as the same run written to a local folder
    local = _fill(tmp_path / "runs")
    remote_table = iteration_table(str(store.root))
    assert remote_table == iteration_table(local.root)
    by = dict(zip(remote_table[0], remote_table[1][0], strict=True))
    assert by["candidates"] == 3 and by["chosen_val"] == 0.25 and by["meta_tokens"] == 15
    assert [r["rows"] for r in list_runs(root_url + "/runs")] == [6]
    assert query_runs(runs_dir(), "SELECT count(*) FROM candidates WHERE chosen")[1] == [(2,)]


def test_dataset_from_and_to_a_url_matches_a_local_build(root_url, tmp_path):
    remote_runs = location(root_url) / "runs"
    _fill(remote_runs, "r1")
    _fill(remote_runs, "r2")
    _fill(tmp_path / "runs", "r1")
    _fill(tmp_path / "runs", "r2")
    remote = build_dataset(remote_runs, f"{root_url}/datasets/d.parquet")
    local = build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    assert remote.rows == local.rows == 12
    assert str(remote.card_path) == f"{root_url}/datasets/d.card.json"
    card = json.loads(remote.card_path.read_text())
    assert card["sha256"] == local.card["sha256"] and card["counts"]["included"] == 12
    with remote.path.open("rb") as f:
        assert pq.read_table(f).equals(pq.read_table(local.path))


def _adapter_folder(path: Path, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "b"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / ".final-x.tmp").write_text("not uploaded")
    (path / "checkpoints" / "step-000002").mkdir(parents=True)
    (path / "checkpoints" / "step-000002" / "optimizer.pt").write_text("not uploaded")
    return path


def test_adapter_registry_at_a_url_uploads_then_downloads_once(root_url, monkeypatch,
                                                                tmp_path):
    monkeypatch.setenv("W4S_STORAGE_URL", root_url)
    fitted = _adapter_folder(tmp_path / "fit-out", os.urandom(4096))
    record = adapters.register(fitted, base_model="b", metrics={"steps": 3})
    assert record.path == f"{root_url}/adapters/{record.id}"
    assert record.source == str(fitted.resolve())
    again = adapters.register(fitted, base_model="b", metrics={"steps": 4})  # a rerun
    assert again.id == record.id
    assert [(r.id, r.metrics["steps"]) for r in adapters.list_adapters()] == [(record.id, 4)]

    got = adapters.resolve("latest")
    assert got.id == record.id and adapters.resolve(record.path).id == record.id
    assert adapters.resolve(str(fitted)).id == record.id  # by the folder it was fitted in
    local = adapters.local_folder(got)
    assert local.parent == w4s_home() / "cache" / "adapters"
    assert (local / "adapter_model.safetensors").read_bytes() == \
        (fitted / "adapter_model.safetensors").read_bytes()
    assert sorted(p.name for p in local.rglob("*")) == [
        "adapter_config.json", "adapter_model.safetensors"]  # no temp files, no checkpoints
    monkeypatch.setattr(type(location(root_url).fs), "get_file",
                        lambda *a, **k: pytest.fail("downloaded twice"))
    assert adapters.local_folder(got) == local


def test_local_paths_stay_plain_pathlib(tmp_path, monkeypatch):
    monkeypatch.delenv("W4S_STORAGE_URL", raising=False)
    assert type(storage_root()) is type(tmp_path) and storage_root() == w4s_home()
    assert type(RunStore(tmp_path / "r").root) is type(tmp_path)
    assert location(f"file://{tmp_path}/runs") == tmp_path / "runs"
    record = adapters.register(_adapter_folder(tmp_path / "a"), base_model="b")
    assert adapters.local_folder(record) == (tmp_path / "a").resolve()  # no copy


def test_bad_storage_settings_are_one_line(monkeypatch):
    monkeypatch.setenv("W4S_HOME", "s3://bucket/w4s")
    with pytest.raises(ConfigError, match="W4S_STORAGE_URL") as e:
        w4s_home()
    assert "\n" not in str(e.value)
    monkeypatch.delenv("W4S_HOME")
    with pytest.raises(ConfigError, match="nosuchproto") as e:
        location("nosuchproto://x/y")
    assert "\n" not in str(e.value)


def test_cli_lists_shows_queries_and_builds_datasets_at_a_url(monkeypatch, capsys):
    from w4s.flows.cli import main

    root = f"memory://w4s-cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("W4S_STORAGE_URL", root)
    store = _fill(runs_dir())
    assert main(["runs"]) == 0 and "r1" in capsys.readouterr().out
    for run in ("r1", str(store.root)):
        assert main(["show", run]) == 0
        out = capsys.readouterr().out
        assert out.startswith("run r1") and len(out.splitlines()) == 5  # header + 2 iterations
    assert main(["query", "SELECT count(*) AS n FROM candidates"]) == 0
    assert "6" in capsys.readouterr().out
    assert main(["dataset", "--out", f"{root}/datasets/d.parquet"]) == 0
    assert f"card: {root}/datasets/d.card.json" in capsys.readouterr().out
    assert location(f"{root}/datasets/d.parquet").is_file()
