"""Scale-out: the real `self_check` task on a local two-worker Dask cluster (separate worker
processes), and the task-runner specs."""

from __future__ import annotations

import os
import sys

import pytest
from configs import run_config
from prefect import flow, task
from replies import GOOD_CODE, RAISES_CODE

from w4s.errors import ConfigError
from w4s.flows.runners import task_runner
from w4s.mdp import Candidate
from w4s.storage.run_store import RunStore
from w4s.tasks.self_check import self_check
from w4s.tasks.stages import prepare_run


@task
def self_check_where(run_dir: str, iteration: int, index: int) -> tuple[str, int]:
    """The real self_check task (run nested, in this worker), and the worker's pid."""
    return self_check(run_dir, iteration, index), os.getpid()


@flow
def check_candidates(run_dir: str, iteration: int, indices: list[int]) -> list:
    futures = [self_check_where.submit(run_dir, iteration, j) for j in indices]
    return [f.result() for f in futures]


def test_self_checks_run_in_two_dask_worker_processes(tmp_path, monkeypatch):
    pytest.importorskip("prefect_dask")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    cfg = run_config(tmp_path, ["unused"], "7", iterations=1, candidates=4, val_size=2,
                     test_size=2, max_repairs=0, use_cache=False)
    run_dir = prepare_run(cfg, tmp_path / "runs", "dask-run")
    store = RunStore(run_dir)
    codes = [GOOD_CODE, RAISES_CODE, GOOD_CODE, GOOD_CODE]
    for j, code in enumerate(codes):
        store.save_candidate(Candidate(run_id="dask-run", iteration=1, index=j, kind="action",
                                       prompt=[], reply=f"```python\n{code}```", code=code))
    runner = task_runner("dask:2")
    results = check_candidates.with_options(task_runner=runner)(run_dir, 1, [0, 1, 2, 3])

    statuses, pids = zip(*results, strict=True)
    expected = ["skipped" if code == RAISES_CODE else "ok" for code in codes]
    assert list(statuses) == expected, [c.error for c in store.candidates(1)]
    assert [c.status for c in store.candidates(1)] == expected  # written by the workers
    assert "boom" in store.load_candidate(1, 1).error
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_task_runner_specs():
    from prefect.task_runners import ThreadPoolTaskRunner

    threads = task_runner("threads:3")
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    pytest.importorskip("prefect_dask")
    assert task_runner("dask:tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    local = task_runner("dask:3")
    assert local.address is None and local.cluster_kwargs["n_workers"] == 3
    for spec, words in (("ray:2", "unknown"), ("dask:0", "positive"), ("threads:x", "positive")):
        with pytest.raises(ConfigError, match=words) as e:
            task_runner(spec)
        assert "\n" not in str(e.value)


DOUBLED: list[int] = []


@task(persist_result=True, cache_key_fn=lambda ctx, params: f"double-{params['x']}")
def double(x: int) -> int:
    DOUBLED.append(x)
    return 2 * x


@flow
def doubles(xs: list[int]) -> list[int]:
    return [double(x) for x in xs]


def test_task_results_persist_to_shared_storage_from_a_block_setting():
    """`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK` naming a RemoteFileSystem block (any fsspec
    URL; `memory://` here, `s3://bucket/prefect-results` on several hosts) sends results
    there, where a rerun on any host finds them."""
    import fsspec
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings

    tag = os.urandom(4).hex()
    RemoteFileSystem(basepath=f"memory://results-{tag}").save(f"w4s-results-{tag}")
    with temporary_settings({PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK:
                             f"remote-file-system/w4s-results-{tag}"}):
        assert doubles([3, 4]) == [6, 8]
        fs = fsspec.filesystem("memory")
        stored = fs.ls(f"/results-{tag}", detail=False)
        assert {"double-3", "double-4"} <= {p.rsplit("/", 1)[-1] for p in stored}
        assert doubles([3, 4]) == [6, 8]  # served from the stored results, not recomputed
        assert sorted(DOUBLED) == [3, 4]


def test_cli_task_runner_flag_refuses_a_bad_spec_before_any_run(tmp_path, capsys):
    from w4s.flows.cli import main

    runs = tmp_path / "runs"
    assert main(["optimize", "--task-runner", "ray:2", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "`task_runner` 'ray:2' is unknown" in err and len(err.splitlines()) == 1
    assert not runs.exists()
