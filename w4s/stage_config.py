"""The configs of the stages after optimize/collect: dataset, fit, gate, evaluate, and the
nightly chain that embeds them all. Each field is declared once, here, with its description;
the trainer, the Prefect flows (their parameter form), the nightly and the CLI derive from
these models. `w4s.config.build_config(data, Model)` turns a bad value into one ConfigError
line naming the field."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, create_model, field_validator, model_validator

from w4s.config import (
    BackendConfig,
    CollectConfig,
    OptimizeConfig,
    SandboxLimits,
    _Frozen,
    hash_json,
)
from w4s.embedded_model import EMBEDDED_MODEL_ID
from w4s.gate import GateRule
from w4s.reward import TAU
from w4s.trainer_config import TrainerConfig

Stage = Literal["collect", "dataset", "fit", "gate", "optimize", "evaluate"]
STAGES: tuple[str, ...] = ("collect", "dataset", "fit", "gate", "optimize", "evaluate")
REPAIRED = ("conversation", "drop", "state")


class DatasetConfig(_Frozen):
    """Which trajectory rows become RLAO samples, and how they are weighted. `since` <=
    created_at < `until` is half-open, so consecutive ranges never overlap."""

    runs: tuple[str, ...] = Field(
        (), description="only these run ids (default: every run under the runs folder; the "
        "nightly chooses them itself)")
    benchmarks: tuple[str, ...] = Field(
        (), description="only these benchmarks, as stored, with or without ' (synthetic)'")
    since: str | None = Field(None, description="created_at >= this ISO date/time (UTC if no "
                              "offset)")
    until: str | None = Field(None, description="created_at < this ISO date/time (UTC if no "
                              "offset)")
    min_reward: float | None = Field(None, description="reward >= this")
    max_reward: float | None = Field(None, description="reward <= this")
    statuses: tuple[str, ...] = Field(
        (), description="only these statuses: ok, or skipped with include_skipped")
    include_skipped: bool = Field(
        False, description="also candidates that failed their self-check after the repairs")
    tau: float = Field(TAU, gt=0, description="weight = exp(reward / tau)")
    sft: bool = Field(False, description="every weight 1.0 (the SFT ablation)")
    repaired: Literal["conversation", "drop", "state"] = Field(
        "conversation", description="a repaired candidate's prompt: the conversation its "
        "reply was sampled from, left out (drop the row), or its original state")
    window_nights: int = Field(1, ge=1, description="the nightly: learn from the last N "
                               "nights' collections (tonight's included)")


class _FitBase(_Frozen):
    """One LoRA fit of the meta-agent (models/rlao.py); recorded whole in metrics.json. The
    trainer's fields (w4s/trainer_config.py) minus the length of the run (epochs, max_steps,
    checkpointing) must match for a checkpoint to be resumed."""

    base: str = Field("embedded", description="`embedded` (SmolLM2-135M-Instruct) or a local "
                      "Hugging Face folder")
    force: bool = Field(False, description="fit even when no row has a positive reward "
                        "(the stage skips otherwise)")

    @field_validator("max_grad_norm", check_fields=False)
    @classmethod
    def _clipping_off(cls, value: float | None) -> float | None:
        return None if value == 0 else value  # one spelling of "off" in metrics.json

    def hyperparameters(self) -> dict[str, Any]:
        """What metrics.json and the adapter registry record: every field, as JSON."""
        return self.model_dump(mode="json")

    def trainer(self) -> TrainerConfig:
        """The trainer's part, for models/rlao.py."""
        return TrainerConfig(**{f.name: getattr(self, f.name) for f in fields(TrainerConfig)})


def _trainer_fields() -> dict[str, Any]:
    hints = get_type_hints(TrainerConfig)
    return {f.name: (hints[f.name], Field(f.default, description=f.metadata["description"],
                                          **f.metadata["bounds"]))
            for f in fields(TrainerConfig)}


FitConfig = create_model("FitConfig", __base__=_FitBase, __module__=__name__,
                         **_trainer_fields())
FitConfig.__doc__ = _FitBase.__doc__


class EvaluateConfig(SandboxLimits):
    """Where a workflow is scored: a benchmark's split, or every item of a file."""

    benchmark: str = Field(..., description="a benchmark name or file:PATH")
    benchmark_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the benchmark, e.g. path, scorer")
    split: Literal["validation", "test", "all"] | None = Field(
        None, description="the items scored: the seeded validation or test split, or all; "
        "default: all for a file: benchmark, else validation (the nightly: test)")
    val_size: int | None = Field(10, ge=1, description="items of the seeded validation split")
    test_size: int | None = Field(
        None, ge=1, description="items of the test split; None: every item not in validation")
    split_seed: int = Field(0, description="seed of the validation/test split")
    executor: BackendConfig = Field(default_factory=BackendConfig,
                                    description="the model the workflow calls")

    def resolved_split(self, default: str = "validation") -> str:
        return self.split or ("all" if self.benchmark.startswith("file:") else default)


class GateConfig(_Frozen):
    """How the gate compares a new adapter with the champion (docs/rlao.md, The gate)."""

    enabled: bool = Field(True, description="off: optimize uses the new adapter unmeasured, "
                                            "nothing is promoted")
    states: int = Field(4, ge=1, le=256, description="k fresh states")
    candidates: int = Field(4, ge=1, le=64, description="m candidates per state and policy")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="meta-agent temperature")
    split_seed: int | None = Field(
        None, description="first split seed of the fresh states; default: derived from the "
                          "challenger's id, far above any collection's")
    reward_tolerance: float = Field(0.05, ge=0, description="promoted if the paired mean "
                                    "reward difference is >= -this")
    margin_tolerance: float = Field(0.05, ge=0, description="and the margin difference "
                                    "(nats per token) is >= -this, when measured")
    margin: bool = Field(True, description="measure the offline log-likelihood margin")

    @property
    def rule(self) -> GateRule:
        return GateRule(self.reward_tolerance, self.margin_tolerance)


class NightlyConfig(_Frozen):
    """One nightly chain: collect -> dataset -> fit -> gate -> optimize -> evaluate, each
    stage's config embedded; the Prefect UI shows them as one form."""

    collect: CollectConfig = Field(..., description="RLAO collection (episodes)")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig,
                                   description="which rows of the collections are learned from")
    fit: FitConfig = Field(default_factory=FitConfig, description="the LoRA fit")
    gate: GateConfig = Field(default_factory=GateConfig,
                             description="the new adapter is promoted only if not worse")
    optimize: OptimizeConfig = Field(
        ..., description="the optimization run; its meta-agent gets the new adapter")
    evaluate: EvaluateConfig | None = Field(
        None, description="where the best workflow is scored; default: the optimize "
                          "benchmark's held-out test split with the optimize executor")
    routing: Literal["local", "deployments"] = Field(
        "local", description="local: every stage in this process; deployments: stages run "
                             "as deployment runs on the gpu and cpu pools")
    timeouts: dict[Stage, float] = Field(
        default_factory=dict, description="seconds per stage, e.g. {fit: 7200}")
    timezone: str = Field("UTC", description="the timezone of the nightly id's date")
    adapters_dir: str | None = Field(
        None, description="where the fitted adapter folders go (default: beside the runs "
                          "folder, in adapters/)")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (an IANA name such as "
                             "Europe/Berlin)") from None
        return value

    @field_validator("timeouts")
    @classmethod
    def _timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"timeouts must be positive seconds, but received {bad}")
        return value

    @model_validator(mode="after")
    def _adapter_fits(self) -> NightlyConfig:
        meta = self.optimize.meta_agent
        if not isinstance(self.optimize.benchmark, str):
            raise ValueError("`optimize.benchmark`: the nightly chain optimizes one benchmark")
        if self.dataset.runs:
            raise ValueError("`dataset.runs` is chosen by the chain (the collections of the "
                             "last `dataset.window_nights` nights); leave it empty")
        if meta.adapter is not None:
            raise ValueError("`optimize.meta_agent.adapter` is set by the chain (the adapter "
                             "it fits); leave it empty")
        if meta.kind == "openai":
            return self  # a vLLM server loads the adapter at runtime
        if self.fit.base == "embedded":
            ok = meta.kind in ("embedded", "llamacpp") and meta.model in (
                None, EMBEDDED_MODEL_ID)
        else:  # a local base folder: transformers or an in-process vLLM engine loads it
            ok = meta.kind in ("transformers", "vllm") and meta.model is not None and (
                Path(meta.model).expanduser().resolve()
                == Path(self.fit.base).expanduser().resolve())
        if not ok:
            raise ValueError(f"`optimize.meta_agent` ({meta.label}) cannot load an adapter "
                             f"fitted on `fit.base` {self.fit.base!r}")
        return self

    def config_hash(self) -> str:
        return hash_json(self.model_dump(mode="json"))

    def evaluate_config(self) -> EvaluateConfig:
        """The evaluation, defaulting to the optimize run's own held-out split."""
        if self.evaluate is not None:
            return self.evaluate
        o = self.optimize
        limits = {name: getattr(o, name) for name in SandboxLimits.model_fields
                  if name not in ("budget_usd", "budget_tokens", "reuse_outcomes")}
        return EvaluateConfig(
            benchmark=str(o.benchmark), benchmark_options=o.benchmark_options, split="test",
            val_size=o.val_size, test_size=o.test_size, split_seed=o.split_seed,
            executor=o.executor, **limits)


LOCAL_KINDS = ("embedded", "transformers", "llamacpp", "vllm")  # served in this process


def on_gpu(*backends: BackendConfig) -> bool:
    """Whether a stage with these models needs a GPU host: a model served in-process on a
    GPU. A model behind an OpenAI-compatible server (vLLM) runs wherever that server is."""
    return any(b.kind == "vllm" or (b.kind in LOCAL_KINDS and b.device != "cpu")
               for b in backends)


STAGE_CONFIGS: dict[str, type[_Frozen]] = {
    "optimize": OptimizeConfig, "collect": CollectConfig, "dataset": DatasetConfig,
    "fit": FitConfig, "gate": GateConfig, "evaluate": EvaluateConfig,
    "nightly": NightlyConfig,
}


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return re.sub(r"[\w.]+\.(\w+Config)\b", r"\1", text).replace("|", "or")


def _default(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, _Frozen):
        return "see its table" if value == type(value)() else "`" + json_text(value) + "`"
    return "`" + json_text(value) + "`"


def json_text(value: Any) -> str:
    import json

    if isinstance(value, _Frozen):
        value = value.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(value, default=str).replace("|", "\\|")


def markdown_tables() -> str:
    """Every stage config as a markdown table (docs/configuration.md holds this text;
    regenerate it with `python -m w4s.stage_config`)."""
    models = {"BackendConfig": BackendConfig, **{m.__name__: m for m in STAGE_CONFIGS.values()}}
    out = []
    for name, model in models.items():
        out += [f"### {name}", "", " ".join((model.__doc__ or "").split("\n\n")[0].split()),
                "", "| field | type | default | description |", "|---|---|---|---|"]
        for field_name, info in model.model_fields.items():
            text = (info.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{field_name}` | {_type_name(info.annotation)} | {_default(info)} "
                       f"| {text} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    from w4s.stage_config import markdown_tables as tables  # the module, not this __main__

    print(tables(), end="")
