"""The gate without Prefect: a new adapter (the challenger) replaces the champion only if
it is not worse.

Both policies, the champion (the last promoted adapter, or the base model) and the
challenger, are measured on the SAME fresh states: k states (split seeds no collection
uses) x m candidates each, sampled through the real environment (a one-turn RLAO collection:
self-check, validation, reward), and the offline log-likelihood margin of positive over
non-positive candidates on the pooled sample. The rule ("not worse", with its tolerances)
is in `w4s.gate`. The verdict goes to `gate.json` in the challenger's adapter folder and
into the registry (`w4s.storage.adapters.promote`) when promoted; the `gate` flow
(flows/gate.py) runs the collections and publishes the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from w4s.config import BackendConfig, CollectConfig
from w4s.errors import InfrastructureError
from w4s.gate import PROMOTED, decide, paired_margin, paired_reward
from w4s.hashing import sha256_text
from w4s.paths import is_url, location
from w4s.stage_config import GateConfig
from w4s.storage import adapters
from w4s.storage.files import atomic_write

log = logging.getLogger("w4s")
GATE_FILE = "gate.json"

PolicyFn = Callable[[str | None], BackendConfig]  # adapter folder (None: base) -> meta-agent
CollectFn = Callable[[CollectConfig, str, str], dict[str, Any]]
LoglikFn = Callable[[dict[str, str | None], list[dict[str, Any]]],
                    dict[str, list[float | None]]]


def fresh_split_seed(challenger_id: str) -> int:
    """Stable for a rerun of the same gate, different per challenger, and far from the seeds
    collections use (`split_seed` + episode)."""
    return 1_000_000 + int(sha256_text(challenger_id)[:6], 16)


def sample_config(env: CollectConfig, options: GateConfig, split_seed: int,
                  runs_dir: str, meta_agent: BackendConfig) -> CollectConfig:
    """One turn of m candidates from each of k states: the same states for every policy."""
    t = options.temperature
    return CollectConfig.model_validate({
        **env.model_dump(mode="json"), "episodes": options.states,
        "candidates": options.candidates, "iterations": 1, "split_per_episode": True,
        "split_seed": split_seed, "min_temperature": t, "max_temperature": t,
        "runs_dir": runs_dir, "meta_agent": meta_agent.model_dump(mode="json")})


def sample_rows(runs_dir: str, collection_id: str, episodes: Sequence[str]) -> list[dict]:
    """The action rows of a gate collection, each with its state (the episode's index)."""
    from w4s.storage.query import query

    root = location(runs_dir)
    files = [str(p) for e in episodes for p in sorted((root / e / "trajectories")
                                                      .glob("iter-*.parquet"))]
    if not files:
        return []
    cols, rows = query(
        "SELECT run_id, candidate, status, reward, reply, "
        "coalesce(conversation_json, prompt_json) AS conversation "
        "FROM read_parquet(?, union_by_name = true) WHERE kind = 'action' "
        "ORDER BY run_id, candidate", [files], on=root)
    out = []
    for r in rows:
        d = dict(zip(cols, r, strict=True))
        d["state"] = d["run_id"].removeprefix(collection_id + "-")
        out.append(d)
    return out


def default_policy(env: CollectConfig) -> PolicyFn:
    return lambda adapter: env.meta_agent.model_copy(update={"adapter": adapter})


def default_logliks(base: str) -> LoglikFn:
    """Each policy's mean token log-probability of each completion, one policy loaded at a
    time (`w4s.models.policy_eval`: the reply through its end-of-turn token, the prompt's
    forward pass shared by the candidates of a state)."""
    def score(policies: dict[str, str | None], rows: list[dict]) -> dict[str, list]:
        import gc

        from w4s.models import policy_eval

        out = {}
        for name, adapter in policies.items():
            model, tokenizer = policy_eval.load_policy(base, adapter)
            out[name] = policy_eval.completion_logprobs(
                model, tokenizer, [r["prompt"] for r in rows],
                [r["completion"][0]["content"] for r in rows])
            del model
            gc.collect()
        return out
    return score


def _margin_measures(champion: str | None, challenger: str, rows: list[dict],
                     logliks: LoglikFn | None) -> dict[str, Any]:
    """The offline margin of each policy on the pooled, rewarded candidates of the states
    that hold both a positive and a non-positive one (the only ones scored)."""
    pool = [r for r in rows if r["reward"] is not None and r["reply"] and r["conversation"]]
    kinds: dict[str, set[bool]] = {}
    for r in pool:
        kinds.setdefault(r["state"], set()).add(r["reward"] > 0)
    scored_pool = [r for r in pool if len(kinds[r["state"]]) == 2]
    out: dict[str, Any] = {"margin_candidates": len(pool),
                           "margin_positive": sum(r["reward"] > 0 for r in pool),
                           **paired_margin([], [], [], [])}
    if logliks is None or not scored_pool:
        return out
    samples = [{"prompt": json.loads(r["conversation"]),
                "completion": [{"role": "assistant", "content": r["reply"]}]}
               for r in scored_pool]
    scored = logliks({"champion": champion, "challenger": challenger}, samples)
    return out | paired_margin(scored["champion"], scored["challenger"],
                               [r["reward"] for r in scored_pool],
                               [r["state"] for r in scored_pool])


def run_gate(challenger: adapters.AdapterRecord, env: CollectConfig, options: GateConfig,
             runs_dir: str, *, collect: CollectFn, policy: PolicyFn | None = None,
             logliks: LoglikFn | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Measure, decide, promote when not worse, write gate.json; returns its document.

    `collect(config, collection_id, name)` runs one collection and returns its summary (the
    `collect` flow, in flows/gate.py). `policy` maps an adapter folder (None: the base model)
    to the meta-agent that serves it (default: `env.meta_agent` with that adapter);
    `logliks` scores completions per policy (None: the margin is not measured). `out`:
    where gate.json goes (default: the challenger's folder). A rerun after the verdict
    returns the verdict already reached.
    """
    folders = _folders(challenger, out)
    done = _previous_verdict(folders, challenger.id)
    if done is not None:
        return done
    champion = adapters.champion()
    champion_id = champion.id if champion else adapters.BASE
    paths = {"champion": str(adapters.local_folder(champion)) if champion else None,
             "challenger": str(adapters.local_folder(challenger))}
    make = policy or default_policy(env)
    seed = options.split_seed if options.split_seed is not None else \
        fresh_split_seed(challenger.id)
    rows, collections = {}, {}
    for name in ("champion", "challenger"):
        cfg = sample_config(env, options, seed, runs_dir, make(paths[name]))
        cid = f"gate-{challenger.id}-{name}"
        summary = collect(cfg, cid, f"gate {name} {challenger.id}")
        rows[name] = sample_rows(runs_dir, cid, summary["episodes"])
        collections[name] = cid
    measures = paired_reward(rows["champion"], rows["challenger"])
    if not measures["states_paired"]:
        raise InfrastructureError(
            f"gate {challenger.id}: no state has a rewarded candidate from both policies "
            f"(lost to budget or infrastructure: champion {measures['champion_lost']}, "
            f"challenger {measures['challenger_lost']}); rerun to retry")
    if logliks is not None and options.margin:
        from w4s.models.factory import clear_model_cache

        clear_model_cache()  # the policies' served models go before the margin loads the base
    measures |= _margin_measures(paths["champion"], paths["challenger"],
                                 rows["champion"] + rows["challenger"],
                                 logliks if options.margin else None)
    verdict, reasons = decide(measures, options.rule)
    if not options.margin:
        reasons = [r if not r.startswith("margin not measured") else
                   "margin not measured (gate.margin is off)" for r in reasons]
    doc = {"verdict": verdict, "champion": champion_id, "challenger": challenger.id,
           "measures": measures, "states": options.states,
           "candidates": options.candidates, "reasons": reasons,
           "rule": {"reward_tolerance": options.reward_tolerance,
                    "margin_tolerance": options.margin_tolerance},
           "split_seed": seed, "collections": collections, "runs_dir": str(runs_dir),
           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if verdict == PROMOTED:  # before gate.json: a rerun finds the verdict in the promotion
        adapters.promote(challenger, previous=champion_id, gate=doc)
    text = json.dumps(doc, indent=1)
    for folder in folders:
        atomic_write(folder / GATE_FILE, text)
    return doc


def _folders(challenger: adapters.AdapterRecord, out: str | Path | None) -> list[Any]:
    """Where gate.json goes: `out`, else the challenger's folder in the registry, and the
    local folder it was fitted into when the registry is remote and that folder is here."""
    if out is not None:
        return [location(out)]
    folders = [location(challenger.path)]
    if is_url(challenger.path) and challenger.source and Path(challenger.source).is_dir():
        folders.append(Path(challenger.source))
    return folders


def _previous_verdict(folders: list[Any], challenger_id: str) -> dict[str, Any] | None:
    for folder in folders:
        try:
            doc = json.loads((folder / GATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("challenger") == challenger_id:
            return doc
    events = adapters.promotions()
    if events and events[-1]["adapter_id"] == challenger_id and events[-1].get("gate"):
        return events[-1]["gate"]
    return None


def gate_markdown(doc: dict[str, Any]) -> str:
    """The gate's report: the verdict, why, and every measure."""
    m = doc["measures"]
    lines = [f"# Gate: {doc['challenger']} vs {doc['champion']}: **{doc['verdict']}**", "",
             f"{doc['states']} fresh states x {doc['candidates']} candidates per policy "
             f"(split seed {doc['split_seed']}).", ""]
    lines += [f"- {r}" for r in doc["reasons"]]
    lines += ["", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in m.items()]
    return "\n".join(lines) + "\n"


def champion_folder() -> str | None:
    """The champion's adapter folder on this host; None while the base model is champion."""
    record = adapters.champion()
    return None if record is None else str(adapters.local_folder(record))
