"""One config per stage: each field declared once, every layer derives from it, old saved
configs still read, bad values are one line naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from w4s.config import CollectConfig, OptimizeConfig, SandboxLimits, build_config
from w4s.errors import ConfigError
from w4s.sandbox.types import SandboxSettings
from w4s.stage_config import (
    STAGE_CONFIGS,
    DatasetConfig,
    EvaluateConfig,
    FitConfig,
    GateConfig,
    NightlyConfig,
)

ROOT = Path(__file__).resolve().parents[2]


def test_one_name_pattern_and_every_field_described():
    for stage, model in STAGE_CONFIGS.items():
        assert model.__name__ == f"{stage.capitalize()}Config"
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


def test_the_sandbox_defaults_are_declared_once():
    record = {f.name: f.default for f in dataclasses.fields(SandboxSettings)}
    for model in (OptimizeConfig, CollectConfig, EvaluateConfig):
        assert issubclass(model, SandboxLimits)
        for name in ("item_timeout_s", "code_timeout_s", "concurrency", "reuse_outcomes"):
            assert model.model_fields[name].default == record[name], (model, name)
    assert (record["item_timeout_s"], record["code_timeout_s"], record["concurrency"]) == (
        60.0, 5.0, 4)


def test_the_nightly_embeds_the_stage_configs():
    fields = NightlyConfig.model_fields
    assert fields["dataset"].annotation is DatasetConfig
    assert fields["fit"].annotation is FitConfig
    assert fields["gate"].annotation is GateConfig
    assert fields["evaluate"].annotation == EvaluateConfig | None
    assert fields["collect"].annotation is CollectConfig
    assert fields["optimize"].annotation is OptimizeConfig


def test_old_defaults_are_kept():
    fit = FitConfig()
    assert (fit.base, fit.epochs, fit.lr, fit.lora_r, fit.lora_alpha, fit.lora_dropout,
            fit.target_modules, fit.batch_tokens, fit.step_samples, fit.max_grad_norm,
            fit.estimator, fit.checkpoint_every, fit.keep_checkpoints, fit.share_prefix) == (
        "embedded", 1, 1e-4, 8, 16, 0.05, ("q_proj", "v_proj"), 4096, 16, 1.0,
        "self_normalized", 50, 1, True)
    data = DatasetConfig()
    assert (data.tau, data.repaired, data.window_nights, data.include_skipped) == (
        0.4, "conversation", 1, False)
    assert EvaluateConfig(benchmark="arithmetic").val_size == 10


@pytest.mark.parametrize("path", sorted((ROOT / "deployments").glob("nightly-*.yaml")))
def test_saved_nightly_configs_still_read(path):
    cfg = build_config(yaml.safe_load(path.read_text()), NightlyConfig)
    assert cfg.fit.base and cfg.evaluate_config().split in ("test", "validation", "all", None)


def test_a_bad_value_is_one_line_naming_the_field():
    with pytest.raises(ConfigError, match=r"^`lora_dropout`: Input should be less than 1, "
                                          r"but received 1.5$"):
        build_config({"lora_dropout": 1.5}, FitConfig)
    with pytest.raises(ConfigError, match="`states`"):
        build_config({"states": 0}, GateConfig)
    with pytest.raises(ConfigError, match="`fit.estimator`"):
        build_config({"collect": {}, "optimize": {}, "fit": {"estimator": "sum"}},
                     NightlyConfig)
    with pytest.raises(ConfigError, match="`dataset.runs` is chosen by the chain"):
        build_config({"collect": {}, "optimize": {}, "dataset": {"runs": ["r1"]}},
                     NightlyConfig)


def test_clipping_off_has_one_spelling():
    assert FitConfig(max_grad_norm=0).max_grad_norm is None
    assert FitConfig(max_grad_norm=0.5).hyperparameters()["max_grad_norm"] == 0.5


def test_the_configuration_page_holds_every_table_as_generated():
    from w4s.stage_config import markdown_tables

    text = (ROOT / "docs" / "configuration.md").read_text()
    begin, end = "<!-- config tables: begin -->\n", "<!-- config tables: end -->"
    section = text[text.index(begin) + len(begin):text.index(end)]
    assert section == markdown_tables(), "rerun `python -m w4s.stage_config` into the page"
    for model in STAGE_CONFIGS.values():
        for name in model.model_fields:
            assert f"| `{name}` |" in section


def test_the_fit_config_is_generated_from_the_trainers_fields():
    from w4s.trainer_config import TrainerConfig

    trainer = {f.name: f for f in dataclasses.fields(TrainerConfig)}
    assert set(FitConfig.model_fields) == set(trainer) | {"base", "force"}
    for name, spec in trainer.items():
        info = FitConfig.model_fields[name]
        assert info.default == spec.default and info.description == spec.metadata["description"]
    assert FitConfig(lr=0.5, base="x").trainer() == TrainerConfig(lr=0.5)
    with pytest.raises(ConfigError, match="`lr`: Input should be greater than 0"):
        build_config({"lr": 0}, FitConfig)  # the bounds come along
