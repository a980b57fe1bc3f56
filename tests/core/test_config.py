import pytest

from w4s.config import OptimizeConfig, build_config, load_config_file
from w4s.errors import ConfigError


def test_wrong_type_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^`iterations`: .*'three'"):
        build_config({"iterations": "three"})


def test_unknown_backend_names_the_nested_field():
    with pytest.raises(ConfigError, match=r"^`executor.kind`"):
        build_config({"executor": {"kind": "gpt5-magic"}})


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match="itertions"):
        build_config({"itertions": 3})


def test_openai_backend_requires_model():
    with pytest.raises(ConfigError, match="model"):
        build_config({"executor": {"kind": "openai"}})


def test_yaml_and_toml_files_with_overrides(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("benchmark: arithmetic\niterations: 4\nexecutor:\n  max_new_tokens: 32\n")
    t = tmp_path / "run.toml"
    t.write_text('benchmark = "arithmetic"\niterations = 4\n[executor]\nmax_new_tokens = 32\n')
    a = load_config_file(y, {"candidates": 2})
    b = load_config_file(t, {"candidates": 2})
    assert a == b and a.iterations == 4 and a.candidates == 2
    assert a.config_hash() == b.config_hash() != OptimizeConfig().config_hash()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("iterations = [")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config_file(bad)


def test_benchmark_lists_split_into_single_runs():
    cfg = build_config({"benchmark": ["gsm_plus", "mgsm"], "iterations": 2})
    singles = cfg.per_benchmark()
    assert [c.benchmark for c in singles] == ["gsm_plus", "mgsm"]
    assert all(c.iterations == 2 for c in singles)
    assert build_config({}).per_benchmark()[0].benchmark == "arithmetic"
    with pytest.raises(ConfigError, match="at least one"):
        build_config({"benchmark": []})
    with pytest.raises(ConfigError, match="twice"):
        build_config({"benchmark": ["svamp", "svamp"]})


def test_overrides_merge_into_nested_blocks_of_the_file(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("executor: {kind: openai, model: gpt-4o-mini, api_key_env: KEY}\n"
                   "benchmark_options: {path: data.jsonl}\n")
    cfg = load_config_file(run, {"executor": {"max_new_tokens": 256},
                                 "benchmark_options": {"scorer": "numeric"}})
    assert cfg.executor.kind == "openai" and cfg.executor.model == "gpt-4o-mini"
    assert cfg.executor.api_key_env == "KEY" and cfg.executor.max_new_tokens == 256
    assert cfg.benchmark_options == {"path": "data.jsonl", "scorer": "numeric"}
    # a non-mapping value still replaces, e.g. a key set back to null
    cfg = load_config_file(run, {"executor": {"api_key_env": None}})
    assert cfg.executor.api_key_env is None and cfg.executor.kind == "openai"


def test_deep_merge_leaves_its_inputs_alone():
    from w4s.config import deep_merge

    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    extra = {"a": {"c": {"f": 3}}, "e": [2]}
    assert deep_merge(base, extra) == {"a": {"b": 1, "c": {"d": 2, "f": 3}}, "e": [2]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]} and extra["a"] == {"c": {"f": 3}}


def test_collect_config_refuses_the_temperature_it_would_ignore():
    import pytest

    from w4s.config import CollectConfig
    from w4s.errors import ConfigError

    with pytest.raises(ConfigError, match="min_temperature"):
        build_config({"meta_temperature": 0.7}, CollectConfig)
    spread = [c.meta_temperature for c in CollectConfig(episodes=3).episode_configs()]
    assert spread == [0.5, 0.75, 1.0]
