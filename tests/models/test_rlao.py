"""RLAO trainer: the weighted loss, the prompt mask, packing, adapters, resume, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from w4s.config import build_config
from w4s.errors import W4SError
from w4s.models import rlao
from w4s.stage_config import FitConfig
from w4s.storage import adapters
from w4s.tasks.fit import fit_adapter
from w4s.trainer_config import TrainerConfig

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
MESSAGE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def write_dataset(path: Path, rows: list[dict], drop: str | None = None) -> Path:
    """A Parquet file in the layout `w4s dataset` writes (prompt, completion, weight, reward,
    provenance)."""
    n = len(rows)
    columns = {
        "prompt": pa.array([r["prompt"] for r in rows], type=MESSAGE),
        "completion": pa.array([r["completion"] for r in rows], type=MESSAGE),
        "weight": pa.array([float(r["weight"]) for r in rows], type=pa.float64()),
        "reward": pa.array([float(r.get("reward", 1.0)) for r in rows], type=pa.float64()),
        "run_id": pa.array(["run"] * n),
        "episode": pa.array(list(range(n)), type=pa.int64()),
        "turn": pa.array([0] * n, type=pa.int64()),
        "candidate": pa.array([0] * n, type=pa.int64()),
        "benchmark": pa.array(["arithmetic"] * n),
    }
    if drop:
        del columns[drop]
    pq.write_table(pa.table(columns), path)
    return path


def row(user: str, answer: str, weight: float) -> dict:
    return {
        "prompt": [SYSTEM, {"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": answer}],
        "weight": weight,
    }


ROWS = [
    row("What is 2+3?", "The answer is 5.", 12.18),
    row("Write Python code that prints the value.", "def solver(question): return answer", 1.0),
    row("the quick brown fox", "jumps over the lazy dog", 3.49),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.models.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("rlao-tiny"))


@pytest.fixture
def model_tok(tiny):
    return rlao.load_base(tiny)


def samples_of(tokenizer, rows=ROWS, max_seq_len=512):
    samples, _ = rlao.tokenize_rows(tokenizer, rows, max_seq_len)
    return samples


# --------------------------------------------------------------------------- tokenization


def test_labels_mask_the_prompt_and_the_template_glue(model_tok):
    """The completion ends at <|im_end|>, the token that was sampled; the template's "\n"
    after it is masked (before issue 15 it was trained)."""
    _, tok = model_tok
    r = ROWS[0]
    s = rlao.tokenize_sample(tok, r["prompt"], r["completion"], 2.0, 512)
    prompt_text = tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
    full = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
    assert s.input_ids == tok(full, add_special_tokens=False)["input_ids"]  # nothing cut
    assert s.labels[:n_prompt] == [rlao.IGNORE] * n_prompt
    trained = [t for t in s.labels if t != rlao.IGNORE]
    assert tok.decode(trained) == "The answer is 5.<|im_end|>"
    end = s.labels.index(tok.convert_tokens_to_ids("<|im_end|>"))
    assert s.labels[n_prompt : end + 1] == s.input_ids[n_prompt : end + 1]
    glue = s.input_ids[end + 1 :]
    assert tok.decode(glue) == "\n" and s.labels[end + 1 :] == [rlao.IGNORE] * len(glue)


def test_long_samples_are_dropped_and_counted_never_cut(model_tok):
    _, tok = model_tok
    full = rlao.tokenize_sample(tok, ROWS[0]["prompt"], ROWS[0]["completion"], 1.0, 512)
    n = len(full.input_ids)
    stats = rlao.TokenizeStats()
    kept = rlao.tokenize_sample(tok, ROWS[0]["prompt"], ROWS[0]["completion"], 1.0, n, stats)
    assert kept.input_ids == full.input_ids and stats.dropped_too_long == 0
    dropped = rlao.tokenize_sample(
        tok, ROWS[0]["prompt"], ROWS[0]["completion"], 1.0, n - 1, stats
    )
    assert dropped is None and stats.dropped_too_long == 1 and stats.longest_dropped == n


def test_the_default_max_seq_len_is_the_model_context_and_drops_are_reported(
    tiny, tmp_path, caplog
):
    from w4s.flows.report import fit_report

    long_row = row("What is 2+3? " * 200, "The answer is 5.", 1.0)  # over the 512 context
    data = write_dataset(tmp_path / "d.parquet", [*ROWS, long_row])
    with caplog.at_level("WARNING", logger="w4s.models.rlao"):
        result = fit_adapter(data, str(tiny), tmp_path / "out", max_steps=1, register=False,
                             **FAST)
    m = result.metrics
    assert m["max_seq_len"] == 512 and m["hyperparameters"]["max_seq_len"] == 512
    assert m["samples"] == 3 and m["samples_dropped"] == 1 and m["longest_dropped_tokens"] > 512
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 4 samples dropped" in warnings[0]
    report = fit_report(tmp_path / "out").markdown
    assert "1 dropped: longer than max_seq_len 512 tokens, none cut" in report
    assert "estimator: `self_normalized`; max_grad_norm 1.0" in report
    assert m["estimator"] == "self_normalized" and m["gradient_checkpointing"] is False


# --------------------------------------------------------------------------- the loss


def test_weighted_loss_equals_a_hand_computation(model_tok):
    model, tok = model_tok
    samples = samples_of(tok)[:2]
    batch = rlao.collate_padded(samples, tok.pad_token_id)
    with torch.no_grad():
        loss = rlao.forward_loss(model, batch)
        hand = 0.0
        for s in samples:  # one unpadded forward per sample, by hand
            logits = model(torch.tensor([s.input_ids]), use_cache=False).logits[0]
            ces = [
                F.cross_entropy(logits[t - 1], torch.tensor(s.labels[t])).item()
                for t in range(1, len(s.labels))
                if s.labels[t] != rlao.IGNORE
            ]
            hand += s.weight * sum(ces) / len(ces)
        hand /= sum(s.weight for s in samples)  # self-normalised: by the sum of weights
    assert loss.item() == pytest.approx(hand, rel=1e-5)


def test_prompt_positions_get_zero_gradient(model_tok):
    model, tok = model_tok
    samples = samples_of(tok)
    batch = rlao.collate_packed(samples)
    with torch.no_grad():
        logits = model(
            batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    logits.requires_grad_(True)
    loss = rlao.weighted_loss_from_logits(logits, batch)
    (grad,) = torch.autograd.grad(loss, logits)
    predicts_completion = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_completion[:, :-1] = batch["labels"][:, 1:] != rlao.IGNORE
    assert grad[~predicts_completion].abs().max().item() == 0.0
    assert grad[predicts_completion].abs().sum(-1).min().item() > 0
    # and the fast path (LM head on completion positions only) is the same loss
    with torch.no_grad():
        assert rlao.forward_loss(model, batch).item() == pytest.approx(loss.item(), rel=1e-5)


def test_training_on_prompt_labels_would_change_the_loss(model_tok):
    """The authors' collator (labels = input_ids) trains on prompts; ours keeps the mask."""
    model, tok = model_tok
    batch = rlao.collate_packed(samples_of(tok)[:1])
    trained_on_prompt = dict(batch, labels=batch["input_ids"].clone())
    with torch.no_grad():
        assert rlao.forward_loss(model, trained_on_prompt).item() != pytest.approx(
            rlao.forward_loss(model, batch).item()
        )


def _lora_grads(model, batch) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    rlao.forward_loss(model, batch, 2.0).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_doubling_a_weight_doubles_its_gradient(model_tok):
    model, tok = model_tok
    model = rlao.add_lora(model, TrainerConfig(lora_dropout=0.0))
    with torch.no_grad():  # lora_B starts at zero, so lora_A would get no gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    a, b = samples_of(tok)[:2]

    def grads(wa, wb):
        a.weight, b.weight = wa, wb
        return _lora_grads(model, rlao.collate_packed([a, b]))

    g11, g21, g10 = grads(1.0, 1.0), grads(2.0, 1.0), grads(1.0, 0.0)
    assert torch.allclose(g21 - g11, g10, atol=1e-7, rtol=1e-4)  # a's contribution
    assert torch.allclose(grads(2.0, 0.0), 2 * g10, atol=1e-7, rtol=1e-4)
    assert g10.abs().sum() > 0


def test_packed_equals_unpacked_loss_and_logits(model_tok):
    model, tok = model_tok
    samples = samples_of(tok)
    packed = rlao.collate_packed(samples)
    padded = rlao.collate_padded(samples, tok.pad_token_id)
    with torch.no_grad():
        assert rlao.forward_loss(model, packed).item() == pytest.approx(
            rlao.forward_loss(model, padded).item(), rel=1e-5
        )
        logits = model(
            packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        start = 0
        for s in samples:
            alone = model(torch.tensor([s.input_ids]), use_cache=False).logits[0]
            assert torch.allclose(logits[start : start + len(s.input_ids)], alone, atol=1e-5)
            start += len(s.input_ids)


def test_pack_respects_the_token_budget():
    rows = rlao.pack([5, 5, 5, 12, 3], batch_tokens=10)
    assert rows == [[0, 1], [2], [3], [4]]


# --------------------------------------------------------------------------- fitting

FAST = {"lora_dropout": 0.0, "batch_tokens": 256, "checkpoint_every": 0}


def test_fit_writes_a_peft_adapter_that_reloads_with_identical_logits(tiny, tmp_path):
    from peft import PeftModel

    data = write_dataset(tmp_path / "d.parquet", ROWS)
    result = fit_adapter(data, str(tiny), tmp_path / "out", max_steps=3, lr=1e-2, **FAST)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in (
        "loss_curve",
        "tokens_per_s",
        "samples",
        "tokens_total",
        "tokens_completion",
        "samples_dropped",
        "hyperparameters",
        "base_model",
        "dataset_sha256",
        "seconds",
    ):
        assert key in m
    assert len(m["loss_curve"]) == 3 and m["samples"] == 3 and m["steps"] == 3
    assert m["hyperparameters"]["lora_r"] == 8
    assert result.adapter_id == adapters.resolve("latest").id

    base, tok = rlao.load_base(tiny)
    ids = torch.tensor([samples_of(tok)[0].input_ids])
    with torch.no_grad():
        before = base(ids, use_cache=False).logits
        fitted = PeftModel.from_pretrained(base, tmp_path / "out").eval()
        after = fitted(ids, use_cache=False).logits
        # the same adapter loaded twice gives identical logits, and it changes the model
        again = PeftModel.from_pretrained(rlao.load_base(tiny)[0], tmp_path / "out").eval()
        assert torch.equal(after, again(ids, use_cache=False).logits)
    assert not torch.allclose(before, after)


def test_save_load_round_trip_of_a_trained_adapter(model_tok, tiny, tmp_path):
    from peft import PeftModel

    model, tok = model_tok
    config = TrainerConfig(max_steps=2, lr=1e-2, **FAST)
    model = rlao.add_lora(model, config)
    rlao.train(model, samples_of(tok), config, tmp_path / "ck")
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([samples_of(tok)[1].input_ids])
    model.eval()
    with torch.no_grad():
        mine = model(ids, use_cache=False).logits
        loaded = PeftModel.from_pretrained(rlao.load_base(tiny)[0], tmp_path / "adapter").eval()
        assert torch.equal(mine, loaded(ids, use_cache=False).logits)


def _margin(folder: Path, tiny: Path, prompt, a: str, b: str) -> float:
    """Mean token log-probability of completion a minus that of b."""
    from peft import PeftModel

    base, tok = rlao.load_base(tiny)
    model = PeftModel.from_pretrained(base, folder).eval() if folder else base
    out = []
    for text in (a, b):
        s = rlao.tokenize_sample(tok, prompt, [{"role": "assistant", "content": text}], 1.0, 512)
        batch = rlao.collate_packed([s])
        with torch.no_grad():
            out.append(-rlao.forward_loss(model, batch).item())
    return out[0] - out[1]


def test_weights_move_the_margin_toward_the_heavier_completion(tiny, tmp_path):
    prompt = [SYSTEM, {"role": "user", "content": "What is 2+3?"}]
    a, b = "The answer is 5.", "the lazy dog 0123"
    base_margin = _margin(None, tiny, prompt, a, b)
    margins = {}
    for name, (wa, wb) in {"a": (12.18, 1.0), "b": (1.0, 12.18)}.items():
        rows = [
            {"prompt": prompt, "completion": [{"role": "assistant", "content": a}], "weight": wa},
            {"prompt": prompt, "completion": [{"role": "assistant", "content": b}], "weight": wb},
        ]
        data = write_dataset(tmp_path / f"{name}.parquet", rows)
        fit_adapter(
            data, str(tiny), tmp_path / name, max_steps=8, lr=3e-3, lora_r=4, register=False, **FAST
        )
        margins[name] = _margin(tmp_path / name, tiny, prompt, a, b)
    assert margins["a"] > base_margin > margins["b"], (base_margin, margins)


def test_a_finished_fit_keeps_only_its_final_optimizer_state_unless_asked(tiny, tmp_path):
    data = write_dataset(tmp_path / "d.parquet", ROWS)
    opts = dict(lr=1e-2, batch_tokens=64, checkpoint_every=1, max_steps=3, register=False)
    fit_adapter(data, str(tiny), tmp_path / "one", **opts)
    left = sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert left == ["step-000003"]
    assert (tmp_path / "one" / "checkpoints" / "step-000003" / "optimizer.pt").is_file()
    fit_adapter(data, str(tiny), tmp_path / "all", keep_checkpoints=3, **opts)
    assert len(list((tmp_path / "all" / "checkpoints").iterdir())) == 3


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_fit(tiny, tmp_path):
    data = write_dataset(tmp_path / "d.parquet", ROWS)
    opts = dict(lr=1e-2, lora_dropout=0.1, batch_tokens=64, checkpoint_every=1, register=False)
    straight = fit_adapter(data, str(tiny), tmp_path / "straight", max_steps=4, **opts)
    fit_adapter(data, str(tiny), tmp_path / "resumed", max_steps=2, **opts)
    assert (tmp_path / "resumed" / "checkpoints" / "step-000002").is_dir()
    resumed = fit_adapter(data, str(tiny), tmp_path / "resumed", max_steps=4, **opts)
    assert resumed.metrics["resumed_from_step"] == 2 and resumed.metrics["steps"] == 4
    got = [p["loss"] for p in resumed.metrics["loss_curve"]]
    want = [p["loss"] for p in straight.metrics["loss_curve"]]
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(W4SError, match="another dataset or hyperparameters"):
        fit_adapter(data, str(tiny), tmp_path / "resumed", max_steps=5, **{**opts, "lr": 1e-3})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["empty", "zero", "missing", "base", "no-file"])
def test_bad_input_is_a_one_line_error_before_any_model_loads(case, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(rlao, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    base = str(tiny)
    data = tmp_path / "d.parquet"
    if case == "empty":
        write_dataset(data, [])
    elif case == "zero":
        write_dataset(data, [dict(r, weight=0.0) for r in ROWS])
    elif case == "missing":
        write_dataset(data, ROWS, drop="completion")
    elif case == "base":
        write_dataset(data, ROWS)
        base = str(tmp_path / "no-such-model")
    with pytest.raises(W4SError) as e:
        fit_adapter(data, base, tmp_path / "out")
    text = str(e.value)
    assert "\n" not in text and len(text) < 300
    expected = {
        "empty": "no rows",
        "zero": "weight is zero",
        "missing": "completion",
        "base": "no-such-model",
        "no-file": "does not exist",
    }[case]
    assert expected in text


def test_bad_hyperparameter_is_named():
    with pytest.raises(W4SError, match="`batch_tokens`"):
        build_config({"batch_tokens": 0}, FitConfig)


# --------------------------------------------------------------------------- registry


def test_registry_resolves_latest_id_and_path(tmp_path):
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": "base-x"})
        )
    first = adapters.register(
        tmp_path / "one",
        base_model="base-x",
        dataset_sha256="ab",
        hyperparameters={"lora_r": 8},
        metrics={"steps": 1},
    )
    second = adapters.register(tmp_path / "two", base_model="base-x")
    assert [r.id for r in adapters.list_adapters()] == [first.id, second.id]
    assert adapters.resolve("latest").id == second.id
    assert adapters.resolve(first.id).path == str((tmp_path / "one").resolve())
    assert adapters.resolve(first.id).hyperparameters == {"lora_r": 8}
    assert adapters.resolve(str(tmp_path / "one")).id == first.id
    files = sorted(p.name for p in adapters.adapters_dir().glob("*.json"))
    assert files == sorted(f"{r.id}.json" for r in (first, second))
    for spec, words in (
        ("nope-123", "not a registered id"),
        (str(tmp_path / "missing"), "not a PEFT adapter folder"),
    ):
        with pytest.raises(W4SError, match=words) as e:
            adapters.resolve(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(W4SError, match="fitted on 'base-x'"):
        adapters.check_base(first, "other-base")


def test_latest_with_an_empty_registry_is_an_error():
    with pytest.raises(W4SError, match="no adapter is registered"):
        adapters.resolve("latest")


def test_cli_fit_and_adapters(tiny, tmp_path, capsys):
    from w4s.flows.cli import main

    data = write_dataset(tmp_path / "d.parquet", ROWS)
    assert main(
        [
            "fit",
            "--dataset",
            str(data),
            "--base",
            str(tiny),
            "--out",
            str(tmp_path / "out"),
            "--max-steps",
            "2",
            "--lr",
            "1e-3",
            "--lora-r",
            "4",
            "--target-modules",
            "q_proj,k_proj",
            "--batch-tokens",
            "128",
            "--seed",
            "1",
            "--max-grad-norm",
            "0",
            "--estimator",
            "mean",
            "--step-samples",
            "2",
            "--no-gradient-checkpointing",
        ]
    ) == 0
    captured = capsys.readouterr()
    assert "step 2/2" in captured.err and "fitted " in captured.out
    assert main(["adapters"]) == 0
    assert str((tmp_path / "out").resolve()) in capsys.readouterr().out
    record = adapters.resolve("latest")
    assert record.hyperparameters["target_modules"] == ["q_proj", "k_proj"]
    hyper = record.hyperparameters
    assert (hyper["max_grad_norm"], hyper["estimator"], hyper["step_samples"]) == (None, "mean", 2)
    assert hyper["gradient_checkpointing"] is False and hyper["max_seq_len"] == 512
    assert math.isfinite(record.metrics["final_loss"]) and record.metrics["estimator"] == "mean"


@pytest.mark.slow
def test_fit_on_the_embedded_model(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_dataset(tmp_path / "d.parquet", ROWS[:2])
    result = fit_adapter(
        data,
        "embedded",
        tmp_path / "out",
        max_steps=2,
        lr=1e-3,
        batch_tokens=512,
        checkpoint_every=0,
    )
    assert result.metrics["base_model"] == "smollm2-135m-instruct"
    assert result.metrics["steps"] == 2 and all(
        math.isfinite(p["loss"]) for p in result.metrics["loss_curve"]
    )
    base = AutoModelForCausalLM.from_pretrained(result.metrics["base_path"], dtype=torch.float32)
    PeftModel.from_pretrained(base, tmp_path / "out")


def test_packed_rows_in_one_batch_equal_the_padded_loss(model_tok):
    model, tok = model_tok
    a, b, c = samples_of(tok)
    multi = rlao.collate_packed_rows([[a, b], [c]], pad_id=tok.pad_token_id)
    assert multi["input_ids"].shape[0] == 2 and "attention_mask" not in multi
    padded = rlao.collate_padded([a, b, c], tok.pad_token_id)
    with torch.no_grad():
        assert rlao.forward_loss(model, multi).item() == pytest.approx(
            rlao.forward_loss(model, padded).item(), rel=1e-5
        )


def test_schedule_steps_count_samples_not_rows():
    samples = [rlao.Sample([1] * n, [rlao.IGNORE] + [1] * (n - 1), 1.0) for n in [5] * 40]
    config = TrainerConfig(batch_tokens=20, row_tokens=10, epochs=2, share_prefix=False)
    plan = rlao.schedule(samples, config)
    sizes = [sum(len(r) for rows in step for r in rows) for step in plan]
    assert sizes == [16, 16, 16, 16, 16]  # 80 samples; a step spans micro-batches of 2 rows
    assert all(len(rows) <= 2 and all(len(r) <= 2 for r in rows) for rows in plan[0])
    first = [i for rows in plan[0] for r in rows for i in r]
    assert first != sorted(first) and len(set(first)) == 16  # shuffled, no repeats
    few = rlao.schedule(samples[:3], TrainerConfig(max_steps=5))
    assert len(few) == 5 and all(sorted(i for rows in s for r in rows for i in r) == [0, 1, 2]
                                 for s in few)


# --------------------------------------------------------------------------- issue 15


def _heavy_light_fit(tiny, tmp_path, name, weights) -> float:
    """Fit the heavy (a) and light (b) completions of one prompt with the default clipping;
    each sample fills a micro-batch of its own, as a 7B-scale state does."""
    prompt = [SYSTEM, {"role": "user", "content": "What is 2+3?"}]
    a, b = "The answer is 5.", "the lazy dog 0123"
    rows = [
        {"prompt": prompt, "completion": [{"role": "assistant", "content": text}], "weight": w}
        for text, w in zip((a, b), weights, strict=True)
    ]
    data = write_dataset(tmp_path / f"{name}.parquet", rows)
    fit_adapter(data, str(tiny), tmp_path / name, max_steps=8, lr=1e-2, lora_r=4,
                register=False, lora_dropout=0.0, checkpoint_every=0, batch_tokens=24)
    return _margin(tmp_path / name, tiny, prompt, a, b)


def test_the_weighting_survives_clipping(tiny, tmp_path):
    """Clipping at its default: weights 12.18 / 0.78 move the margin (heavy minus light)
    much further than equal weights. Before, each sample was a step of its own, clipped,
    and RWR came out as SFT."""
    prompt = [SYSTEM, {"role": "user", "content": "What is 2+3?"}]
    base = _margin(None, tiny, prompt, "The answer is 5.", "the lazy dog 0123")
    weighted = _heavy_light_fit(tiny, tmp_path, "rwr", (12.18, 0.78)) - base
    equal = _heavy_light_fit(tiny, tmp_path, "sft", (1.0, 1.0)) - base
    print(f"margin moved: weighted {weighted:.3f}, equal {equal:.3f}")  # docs/rlao.md
    # before issue 15 (one sample per step, each clipped): 0.117 against 0.052; now about
    # 0.21 against 0.01
    assert weighted > equal + 0.1 and weighted > 4 * equal, (weighted, equal)


def test_the_fit_config_is_the_trainers_config_everywhere():
    """One FitConfig (its trainer part declared in w4s/trainer_config.py): the fit flow's
    `options` and the nightly's `fit:`; every keyword of fit_adapter is one of its fields,
    checked by it (no second declaration)."""
    import inspect

    from w4s.flows import stage_flows
    from w4s.stage_config import NightlyConfig

    assert NightlyConfig.model_fields["fit"].annotation is FitConfig
    assert inspect.signature(stage_flows.fit.fn).parameters["options"].annotation in (
        "FitConfig | None", FitConfig | None)
    assert "base" in FitConfig.model_fields and "share_prefix" in FitConfig.model_fields
    with pytest.raises(W4SError, match="`estimator`"):
        build_config({"estimator": "sum"}, FitConfig)
    with pytest.raises(W4SError, match="`max_grad_nrom`: Extra inputs are not permitted"):
        fit_adapter("d.parquet", "embedded", "out", max_grad_nrom=0.5)  # before any file

def test_bf16_autocast_is_the_cpus_default_only_where_it_has_bf16_units(monkeypatch):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not rlao.cpu_has_bf16_matmul()
    assert not rlao.use_bf16_autocast(TrainerConfig(), "cpu")
    assert rlao.use_bf16_autocast(TrainerConfig(cpu_bf16=True), "cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert rlao.cpu_has_bf16_matmul() and rlao.use_bf16_autocast(TrainerConfig(), "cpu")
    assert not rlao.use_bf16_autocast(TrainerConfig(cpu_bf16=False), "cpu")
    assert not rlao.use_bf16_autocast(TrainerConfig(cpu_bf16=True), "cuda")  # bf16 weights


def test_a_bf16_step_runs_its_forward_under_autocast_and_stays_close_to_fp32(tiny, tmp_path):
    """The trainer's matmuls run in bf16 (the LoRA weights and the loss stay fp32): its
    first-step loss is near the fp32 one but not equal, and the fit records that it ran so."""
    losses, dtypes = {}, {}
    for bf16 in (False, True):
        base, tok = rlao.load_base(tiny)
        config = TrainerConfig(max_steps=1, cpu_bf16=bf16, lora_dropout=0.0, checkpoint_every=0)
        model = rlao.add_lora(base, config)
        seen = []
        model.get_decoder().layers[0].self_attn.q_proj.register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.append(out.dtype))
        state, _ = rlao.train(model, samples_of(tok), config, tmp_path / str(bf16))
        losses[bf16], dtypes[bf16] = state.losses[0], set(seen)
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert dtypes == {False: {torch.float32}, True: {torch.bfloat16}}
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    assert losses[True] != losses[False]
    result = fit_adapter(write_dataset(tmp_path / "d.parquet", ROWS), str(tiny), tmp_path / "o",
                         max_steps=1, register=False, cpu_bf16=True, **FAST)
    assert result.metrics["bf16_autocast"] is True
    assert result.metrics["hyperparameters"]["cpu_bf16"] is True


def test_gradient_checkpointing_recomputes_layers_with_equal_gradients(tiny, tmp_path):
    """On by default on a GPU; on, each decoder layer runs again in the backward pass of the
    trainer's own forward path, and the LoRA gradients are unchanged."""
    assert rlao.use_gradient_checkpointing(TrainerConfig(), "cuda")
    assert not rlao.use_gradient_checkpointing(TrainerConfig(), "cpu")
    assert rlao.use_gradient_checkpointing(TrainerConfig(gradient_checkpointing=True), "cpu")

    def grads_and_layer_calls(checkpointing: bool) -> tuple[torch.Tensor, int]:
        base, tok = rlao.load_base(tiny)
        model = rlao.add_lora(base, TrainerConfig(lora_dropout=0.0))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
        if checkpointing:
            rlao.enable_gradient_checkpointing(model)
        calls = []
        # transformers checkpoints a layer's forward: its submodules run again in backward
        model.get_decoder().layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
        model.train()
        rlao.forward_loss(model, rlao.collate_packed(samples_of(tok))).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        return grads, len(calls)

    plain, plain_calls = grads_and_layer_calls(False)
    ckpt, ckpt_calls = grads_and_layer_calls(True)
    assert (plain_calls, ckpt_calls) == (1, 2)
    assert torch.allclose(plain, ckpt, atol=1e-6, rtol=1e-4) and plain.abs().sum() > 0
    result = fit_adapter(write_dataset(tmp_path / "d.parquet", ROWS), str(tiny), tmp_path / "o",
                         max_steps=1, register=False, gradient_checkpointing=True, **FAST)
    assert result.metrics["gradient_checkpointing"] is True


def test_the_fit_stage_runs_without_prefect_and_records_its_config(tiny, tmp_path):
    """`fit_stage` is the fit flow's work, callable with no flow, task or server; metrics.json
    and the registry record the FitConfig it ran, whole (max_seq_len resolved)."""
    from prefect.context import FlowRunContext, TaskRunContext

    from w4s.tasks.fit import fit_stage

    assert FlowRunContext.get() is None and TaskRunContext.get() is None
    config = FitConfig(base=str(tiny), max_steps=2, lr=1e-2, estimator="mean", **FAST)
    steps = []
    result = fit_stage(write_dataset(tmp_path / "d.parquet", ROWS), tmp_path / "out", config,
                       on_step=lambda step, total, *_: steps.append((step, total)))
    hyper = json.loads((tmp_path / "out" / "metrics.json").read_text())["hyperparameters"]
    assert set(hyper) == set(FitConfig.model_fields)
    resolved = ("max_seq_len", "row_tokens", "cpu_bf16")  # left to the fit, recorded as run
    assert hyper == {**config.model_dump(mode="json"), **{k: hyper[k] for k in resolved}}
    assert hyper["max_seq_len"] > 0 and steps == [(1, 2), (2, 2)]
    assert hyper["row_tokens"] > 0 and isinstance(hyper["cpu_bf16"], bool)
    assert adapters.resolve(result.adapter_id).hyperparameters == hyper
    assert not (tmp_path / "out" / "report").exists()  # the report is the caller's (flows/ui)
