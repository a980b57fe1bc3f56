"""The registry's champion: the last promoted adapter, or the base model when none is, and
`adapter: champion` wherever an adapter is named."""

from __future__ import annotations

import pytest
from adapter_folders import make_adapter_folder

from w4s.config import CollectConfig, OptimizeConfig
from w4s.errors import W4SError
from w4s.flows.cli_common import with_resolved_adapter
from w4s.flows.config_cli import Given
from w4s.flows.optimize_cmd import load_with_adapter
from w4s.storage import adapters

BASE = "smollm2-135m-instruct"


def _config(adapter: str | None) -> OptimizeConfig:
    return OptimizeConfig.model_validate({"meta_agent": {"kind": "embedded",
                                                         "adapter": adapter}})


def test_champion_is_the_base_model_until_an_adapter_is_promoted(tmp_path):
    one = adapters.register(make_adapter_folder(tmp_path / "one"), base_model=BASE)
    assert adapters.champion() is None and adapters.resolve_spec("champion") is None
    assert with_resolved_adapter(_config("champion")).meta_agent.adapter is None
    with pytest.raises(W4SError, match="no adapter has been promoted") as e:
        adapters.resolve("champion")
    assert "\n" not in str(e.value)
    assert adapters.resolve("latest").id == one.id  # latest is unchanged: the newest fit


def test_champion_resolves_to_the_last_promoted_adapter(tmp_path):
    one = adapters.register(make_adapter_folder(tmp_path / "one"), base_model=BASE)
    two = adapters.register(make_adapter_folder(tmp_path / "two"), base_model=BASE)
    three = adapters.register(make_adapter_folder(tmp_path / "three"), base_model=BASE)
    adapters.promote(two, gate={"verdict": "promoted"})
    assert adapters.champion().id == two.id
    assert adapters.resolve("champion").id == two.id != adapters.resolve("latest").id
    assert with_resolved_adapter(_config("champion")).meta_agent.adapter == two.path
    cfg = load_with_adapter(Given(overrides={"meta_agent": {"kind": "embedded",
                                                            "adapter": "champion"}}),
                            CollectConfig)
    assert cfg.meta_agent.adapter == two.path  # a config file or --adapter champion
    adapters.promote(one, previous=two.id)
    assert adapters.champion().id == one.id
    events = adapters.promotions()
    assert [e["adapter_id"] for e in events] == [two.id, one.id]
    assert events[1]["previous"] == two.id and events[0]["previous"] == "base"
    assert events[0]["gate"] == {"verdict": "promoted"}
    # promotions live beside the records, never listed as adapters
    assert [r.id for r in adapters.list_adapters()] == [one.id, two.id, three.id]


def test_a_champion_whose_record_is_gone_is_an_error(tmp_path):
    one = adapters.register(make_adapter_folder(tmp_path / "one"), base_model=BASE)
    adapters.promote(one)
    (adapters.adapters_dir() / f"{one.id}.json").unlink()
    with pytest.raises(W4SError, match="has no record"):
        adapters.champion()


def test_w4s_adapters_marks_the_champion_and_promotes_by_hand(tmp_path, capsys):
    from w4s.flows.cli import main

    one = adapters.register(make_adapter_folder(tmp_path / "one"), base_model=BASE)
    assert main(["adapters"]) == 0
    assert "champion: the base model" in capsys.readouterr().out
    assert main(["adapters", "--promote", one.id]) == 0
    assert capsys.readouterr().out.strip() == f"champion: {one.id} (was base)"
    assert adapters.champion().id == one.id
    assert main(["adapters"]) == 0
    assert f"*{one.id}" in capsys.readouterr().out
