"""The trajectory row schema: one row per candidate action, carrying its full state."""

from __future__ import annotations

import pyarrow as pa

TRAJECTORY_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("iteration", pa.int32()),
    ("candidate", pa.int32()),
    ("kind", pa.string()),  # seed | action
    ("seed_name", pa.string()),
    ("benchmark", pa.string()),
    ("prompt_hash", pa.string()),
    ("prompt_json", pa.string()),  # the full state as messages (RLAO input)
    ("reply", pa.string()),  # the final meta-agent reply (RLAO target)
    ("analysis", pa.string()),
    ("code", pa.string()),
    ("code_hash", pa.string()),
    # ok | skipped | budget_exceeded | infra_error (storage.dataset.STATUSES)
    ("status", pa.string()),
    ("error", pa.string()),
    ("repairs", pa.int32()),
    ("repair_log_json", pa.string()),
    ("val_accuracy", pa.float64()),
    ("failures_json", pa.string()),
    ("reward", pa.float64()),
    ("chosen", pa.bool_()),
    ("best_so_far", pa.float64()),
    ("last_accuracy", pa.float64()),
    ("meta_prompt_tokens", pa.int64()),
    ("meta_completion_tokens", pa.int64()),
    ("executor_calls", pa.int64()),
    ("executor_prompt_tokens", pa.int64()),
    ("executor_completion_tokens", pa.int64()),
    ("cost_usd", pa.float64()),
    ("cache_hits", pa.int64()),
    ("meta_model", pa.string()),
    ("executor_model", pa.string()),
    ("config_hash", pa.string()),
    # provenance for RLAO: the conversation `reply` was sampled from (the prompt, or after
    # repairs the prompt plus each failed attempt and its error), the sampling temperature,
    # the meta-agent's adapter and the prompt template
    ("conversation_json", pa.string()),
    ("meta_temperature", pa.float64()),
    ("meta_adapter", pa.string()),
    ("prompt_version", pa.string()),
    ("created_at", pa.string()),
    ("finished_at", pa.string()),
])
