"""RLAO datasets: trajectory rows -> a reward-weighted Parquet file in TRL's layout.

Everything is DuckDB SQL over the runs' trajectory Parquet files, so a dataset is exactly
what its query says and the card can account for every row it left out.

Sample construction follows the paper: for turn i and candidate j the prompt is the
conversation of the best actions and their feedback up to turn i-1 and the completion is
candidate (i, j)'s reply. That conversation is the row's stored state (`prompt_json`, the
messages the candidate was sampled from: `State.messages()`, whose user message carries the
chosen workflows and their feedback), so it is taken as stored, never rebuilt.

A repaired candidate's reply was sampled from a longer conversation: the state, each failed
attempt, its error and the repair request (`conversation_json`). `repaired` chooses its
sample: `conversation` (default: train on what was sampled), `drop` (leave it out) or
`state` (the old pairing of the final reply with the original state, which teaches "the
error was ..." analyses in a context that holds no error). A repaired row whose file
predates `conversation_json` is excluded (`no_conversation`) under `conversation`.

The weight is `w4s.reward.rwr_weight`, registered as a DuckDB function: one formula.

One optimization run is one episode (a multi-turn trajectory from a seed state), so
`episode` is the run id until collection runs several episodes per run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from w4s import reward as reward_formula
from w4s.errors import W4SError
from w4s.hashing import file_sha256
from w4s.paths import location
from w4s.stage_config import DatasetConfig
from w4s.storage.files import atomic_write, connect, publish_file, staging_file

STATUSES = ("ok", "skipped", "budget_exceeded", "infra_error")
# budget_exceeded / infra_error rows have no reward: nothing the meta-agent did explains
# them, so no option can include them.
NEVER_TRAINED = ("budget_exceeded", "infra_error")
MESSAGES_TYPE = '[{"role":"VARCHAR","content":"VARCHAR"}]'
# columns a trajectory file may predate, and what they read as there
_LATER_COLUMNS = {"conversation_json": "CAST(NULL AS VARCHAR)", "repairs": "0"}

_message = pa.struct([("role", pa.string()), ("content", pa.string())])
DATASET_SCHEMA = pa.schema([
    ("prompt", pa.list_(_message)),
    ("completion", pa.list_(_message)),
    ("weight", pa.float64()),
    ("reward", pa.float64()),
    ("run_id", pa.string()),
    ("episode", pa.string()),
    ("turn", pa.int32()),
    ("candidate", pa.int32()),
    ("benchmark", pa.string()),
])
"""The output columns (TRL's conversational prompt-completion layout plus provenance)."""


@dataclass
class DatasetResult:
    """What `build_dataset` wrote: the Parquet path, its card path and the card itself
    (local paths, or `upath.UPath`s for a URL)."""

    path: Any
    card_path: Any
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.card["counts"]["included"]

    def summary_line(self) -> str:
        w, tau = self.card["weights"], self.card["tau"]
        how = "sft" if self.card["sft"] else f"tau {tau:g}"
        return f"{self.rows} rows, weights {w['min']:.4g}..{w['max']:.4g} ({how}), {self.path}"


def _utc(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise W4SError(f"`{name}` is not an ISO 8601 date or time: {value!r}") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def _check(q: DatasetConfig) -> tuple[datetime | None, datetime | None, tuple[str, ...]]:
    """Validate a query; returns (since, until, allowed statuses)."""
    unknown = [s for s in q.statuses if s not in STATUSES]
    if unknown:
        raise W4SError(f"`status` {unknown[0]!r} is unknown; choose from: {', '.join(STATUSES)}")
    never = [s for s in q.statuses if s in NEVER_TRAINED]
    if never:
        raise W4SError(f"`status` {never[0]!r} rows have no reward and are never in a dataset")
    if "skipped" in q.statuses and not q.include_skipped:
        raise W4SError("`status` 'skipped' needs include_skipped (--include-skipped)")
    if q.min_reward is not None and q.max_reward is not None and q.min_reward > q.max_reward:
        raise W4SError(f"`min_reward` {q.min_reward} is above `max_reward` {q.max_reward}")
    since, until = _utc("since", q.since), _utc("until", q.until)
    if since is not None and until is not None and since >= until:
        raise W4SError(f"`since` {q.since!r} is not before `until` {q.until!r}")
    allowed = ("ok", "skipped") if q.include_skipped else ("ok",)
    return since, until, tuple(q.statuses) or allowed


def trajectory_files(runs_dir: str | Path, runs: tuple[str, ...] = ()) -> list[str]:
    """The trajectory Parquet files of the chosen runs (every run when `runs` is empty)."""
    runs_dir = location(runs_dir)
    if not runs_dir.is_dir():
        raise W4SError(f"`runs_dir` {str(runs_dir)!r} does not exist")
    if not runs:
        files = sorted(runs_dir.glob("*/trajectories/iter-*.parquet"))
        if not files:
            raise W4SError(f"`runs_dir` {str(runs_dir)!r} holds no trajectory rows")
        return [str(p) for p in files]
    out = []
    for run in dict.fromkeys(runs):
        files = sorted((runs_dir / run / "trajectories").glob("iter-*.parquet"))
        if not files:
            raise W4SError(f"`run` {run!r} has no trajectory rows under {str(runs_dir)!r}")
        out += [str(p) for p in files]
    return out


# Each row gets the first reason that excludes it (NULL: included); the card counts them.
_REASONED = """
CREATE TEMP TABLE reasoned AS
SELECT *, CASE
    WHEN kind IS DISTINCT FROM 'action' THEN 'seed'
    WHEN status IN ('budget_exceeded', 'infra_error') THEN status
    WHEN status IS NULL OR status NOT IN ('ok', 'skipped') THEN 'unfinished'
    WHEN len(CAST($benchmarks AS VARCHAR[])) > 0
         AND NOT list_contains(CAST($benchmarks AS VARCHAR[]), benchmark)
         AND NOT list_contains(CAST($benchmarks AS VARCHAR[]),
                               regexp_replace(benchmark, ' \\(synthetic\\)$', ''))
         THEN 'benchmark'
    WHEN CAST($since AS TIMESTAMPTZ) IS NOT NULL
         AND coalesce(TRY_CAST(created_at AS TIMESTAMPTZ) < CAST($since AS TIMESTAMPTZ), true)
         THEN 'date'
    WHEN CAST($until AS TIMESTAMPTZ) IS NOT NULL
         AND coalesce(TRY_CAST(created_at AS TIMESTAMPTZ) >= CAST($until AS TIMESTAMPTZ), true)
         THEN 'date'
    WHEN status = 'skipped' AND NOT $include_skipped THEN 'skipped'
    WHEN NOT list_contains(CAST($statuses AS VARCHAR[]), status) THEN 'status'
    WHEN reward IS NULL THEN 'no_reward'
    WHEN repairs > 0 AND $repaired = 'drop' THEN 'repaired'
    WHEN repairs > 0 AND $repaired = 'conversation' AND conversation_json IS NULL
         THEN 'no_conversation'
    WHEN reply IS NULL OR coalesce(json_type(TRY_CAST(sample_prompt AS JSON)), '') <> 'ARRAY'
         THEN 'bad_text'
    WHEN reward < CAST($min_reward AS DOUBLE) OR reward > CAST($max_reward AS DOUBLE)
         THEN 'reward'
END AS excluded
FROM (
    SELECT *, CASE WHEN repairs > 0 AND $repaired = 'conversation' THEN conversation_json
                   ELSE prompt_json END AS sample_prompt
    FROM (SELECT *{later} FROM read_parquet($files, union_by_name = true))
)
"""

_SAMPLES = f"""
SELECT from_json(sample_prompt, '{MESSAGES_TYPE}') AS prompt,
       [{{'role': 'assistant', 'content': reply}}] AS completion,
       CAST(CASE WHEN $sft THEN 1.0 ELSE rwr_weight(reward, $tau) END AS DOUBLE) AS weight,
       CAST(reward AS DOUBLE) AS reward,
       run_id, run_id AS episode, CAST(iteration AS INTEGER) AS turn,
       CAST(candidate AS INTEGER) AS candidate, benchmark
FROM reasoned WHERE excluded IS NULL
ORDER BY run_id, turn, candidate
"""


def _rwr_weight(reward: float, tau: float) -> float:
    return reward_formula.rwr_weight(reward, tau)  # looked up per call: one source


def _reasoned_sql(con: duckdb.DuckDBPyConnection, files: list[str]) -> str:
    """_REASONED, with NULL/0 for the columns that files written before them lack."""
    names = {r[0] for r in con.execute(
        "DESCRIBE SELECT * FROM read_parquet($files, union_by_name = true)",
        {"files": files}).fetchall()}
    later = "".join(f", {v} AS {k}" for k, v in _LATER_COLUMNS.items() if k not in names)
    return _REASONED.replace("{later}", later)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[tuple]:
    return con.execute(sql, params or {}).fetchall()


def build_dataset(runs_dir: str | Path, out: str | Path,
                  query: DatasetConfig | None = None, *,
                  window: dict[str, Any] | None = None) -> DatasetResult:
    """Select trajectory rows by `query`, write them as one RLAO Parquet file plus its card.

    Every input error is one W4SError raised before anything is written. The Parquet file
    and the card (`<name>.card.json` beside it) are each written whole: a rerun replaces
    both, a crash leaves the old pair or a new file whose hash the old card does not match.
    `runs_dir` and `out` are local paths or fsspec URLs. `window`: the collections the runs
    came from (`w4s.storage.collections.last_nights`), recorded in the card.
    """
    q = query or DatasetConfig()
    since, until, statuses = _check(q)
    runs_dir, out = location(runs_dir), location(out)
    files = trajectory_files(runs_dir, q.runs)
    params = {
        "files": files, "benchmarks": list(q.benchmarks),
        "since": since and since.isoformat(), "until": until and until.isoformat(),
        "include_skipped": q.include_skipped, "statuses": list(statuses),
        "min_reward": q.min_reward, "max_reward": q.max_reward, "repaired": q.repaired,
    }
    with connect([runs_dir]) as con:
        con.create_function("rwr_weight", _rwr_weight, ["DOUBLE", "DOUBLE"], "DOUBLE")
        try:
            reasoned = _reasoned_sql(con, files)
            con.execute(reasoned, params)
        except duckdb.Error as e:
            raise W4SError(f"`runs_dir`: cannot read the trajectory rows: "
                           f"{str(e).splitlines()[0]}") from e
        considered = _rows(con, "SELECT count(*) FROM reasoned")[0][0]
        if considered == 0:
            raise W4SError(f"`runs_dir` {str(runs_dir)!r} holds no trajectory rows")
        excluded = dict(_rows(con, "SELECT excluded, count(*) FROM reasoned "
                                  "WHERE excluded IS NOT NULL GROUP BY 1 ORDER BY 1"))
        included = considered - sum(excluded.values())
        if included == 0:
            why = ", ".join(f"{k} {v}" for k, v in excluded.items())
            raise W4SError(f"the selection is empty: {considered} rows considered, "
                           f"all excluded ({why})")
        hist = _rows(con, "SELECT reward, count(*) FROM reasoned WHERE excluded IS NULL "
                         "GROUP BY 1 ORDER BY 1")
        sources = _rows(con, """
            SELECT run_id, any_value(benchmark), any_value(meta_model),
                   any_value(config_hash), count(*)
            FROM reasoned WHERE excluded IS NULL GROUP BY 1 ORDER BY 1""")
        repaired = _rows(con, "SELECT count(*) FROM reasoned WHERE excluded IS NULL "
                             "AND repairs > 0")[0][0]
        sample_params = {"sft": q.sft, "tau": float(q.tau)}
        wmin, wmax = _rows(con, f"SELECT min(weight), max(weight) FROM ({_SAMPLES})",
                          sample_params)[0]
        tmp = staging_file(out)
        try:
            con.execute(f"COPY ({_SAMPLES}) TO '{tmp.replace(chr(39), chr(39) * 2)}' "
                        "(FORMAT parquet)", sample_params)
            digest = file_sha256(tmp)
            publish_file(tmp, out)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, duckdb.Error):
                raise W4SError(f"`out`: cannot write {str(out)!r}: "
                               f"{str(e).splitlines()[0]}") from e
            raise
    card = {
        "dataset": out.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": digest,
        "query": {**q.model_dump(mode="json", exclude={"window_nights"}),
                  "runs_dir": str(runs_dir), "statuses": list(statuses),
                  "since": params["since"], "until": params["until"]},
        "sql": " ".join((reasoned + ";" + _SAMPLES).split()),
        "tau": q.tau, "sft": q.sft,
        "weight": "1.0 (sft)" if q.sft else f"w4s.reward.rwr_weight: exp(reward / {q.tau:g})",
        "repaired": {"option": q.repaired, "included": repaired,
                     "prompt": {"conversation": "the conversation the reply was sampled from",
                                "drop": "left out", "state": "the original state"}[q.repaired]},
        "episode": "the run id: one optimization run is one episode",
        "window": window and {"nights": window["nights"],
                              "collections": window["collections"]},
        "source_runs": [{"run_id": r, "benchmark": b, "meta_model": m, "config_hash": h,
                         "rows": n} for r, b, m, h, n in sources],
        "counts": {"considered": considered, "included": included, "excluded": excluded},
        "reward_histogram": {repr(float(r)): n for r, n in hist},
        "weights": {"min": wmin, "max": wmax},
        "schema": {f.name: str(f.type) for f in DATASET_SCHEMA},
    }
    card_path = card_path_for(out)
    atomic_write(card_path, json.dumps(card, indent=1, ensure_ascii=False))
    return DatasetResult(out, card_path, card)


def card_path_for(dataset: str | Path) -> Any:
    """`D.parquet` -> `D.card.json`, beside it."""
    p = location(dataset)
    return p.with_name(p.stem + ".card.json") if p.suffix == ".parquet" else \
        p.with_name(p.name + ".card.json")
