"""Prefix-shared packing: one copy of a state's prompt per row, the same loss and gradients."""

from __future__ import annotations

import pytest
import torch

from w4s.models import packing, rlao
from w4s.trainer_config import TrainerConfig

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
STATES = [  # two states with three and two candidates, and a state with one
    ("What is 2+3?", ["The answer is 5.", "5", "def solver(question): return answer"]),
    ("the quick brown fox", ["jumps over the lazy dog", "0123"]),
    ("solo", ["alone"]),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.models.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("packing-tiny"))


def rows_of(states=STATES) -> list[dict]:
    weights = [12.18, 1.0, 3.49, 0.78]
    return [
        {
            "prompt": [SYSTEM, {"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": answer}],
            "weight": weights[(i + j) % len(weights)],
        }
        for i, (user, answers) in enumerate(states)
        for j, answer in enumerate(answers)
    ]


def lora_model(tiny, attn: str = "sdpa"):
    """The tiny Llama with a LoRA whose B is random, so both A and B get gradients."""
    model, tok = rlao.load_base(tiny)
    model.set_attn_implementation(attn)
    model = rlao.add_lora(model, TrainerConfig(lora_dropout=0.0, lora_r=4))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return model, tok


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = rlao.forward_loss(model, batch)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_rows_give_the_unshared_loss_and_lora_gradients(tiny, attn):
    model, tok = lora_model(tiny, attn)
    samples, _ = rlao.tokenize_rows(tok, rows_of(), 512)
    rows = [samples[:4], samples[4:]]  # a state split across rows, one row with two states
    shared = packing.collate_shared_rows(rows, tok.pad_token_id)
    unshared = rlao.collate_packed_rows(rows, tok.pad_token_id)
    assert packing.computed_tokens(shared) < sum(len(s.input_ids) for s in samples)
    loss_s, grads_s = loss_and_grads(model, shared)
    loss_u, grads_u = loss_and_grads(model, unshared)
    assert loss_s == pytest.approx(loss_u, rel=1e-5)
    assert all(g.abs().sum() > 0 for g in grads_u)  # A and B both carry signal
    for a, b in zip(grads_s, grads_u, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_without_the_block_mask_candidates_would_see_each_other(tiny):
    """The equality above rests on the mask: the same shared row under transformers' own
    mask from the position ids (one causal sequence) gives another loss."""
    model, tok = lora_model(tiny)
    samples, _ = rlao.tokenize_rows(tok, rows_of(STATES[:1]), 512)
    shared = packing.collate_shared_rows([samples], tok.pad_token_id)
    with torch.no_grad():
        masked = rlao.forward_loss(model, shared).item()
        unmasked = {k: v for k, v in shared.items() if k not in ("segment_ids", "document_ids")}
        leaky = rlao.forward_loss(model, unmasked).item()
    assert abs(masked - leaky) > 1e-3


def test_layout_holds_each_prompt_once_with_restarting_positions(tiny):
    _, tok = rlao.load_base(tiny)
    samples, _ = rlao.tokenize_rows(tok, rows_of(STATES[:1]), 512)
    prompt = packing.prompt_length(samples[0].input_ids, samples[0].labels)
    batch = packing.collate_shared_rows([samples], tok.pad_token_id)
    completions = [len(s.input_ids) - prompt for s in samples]
    # the prompt less its last token once, then each candidate: that token and its completion
    assert batch["input_ids"].shape[1] == prompt - 1 + sum(c + 1 for c in completions)
    pos = batch["position_ids"][0].tolist()
    seg = batch["segment_ids"][0].tolist()
    for j, c in enumerate(completions, start=1):
        span = [p for p, s in zip(pos, seg, strict=True) if s == j]
        assert span == list(range(prompt - 1, prompt + c))  # the last prompt token, then c
    trained = (batch["labels"] != rlao.IGNORE).sum().item()
    assert trained == sum(s.completion_tokens for s in samples)


def test_dense_mask_lets_a_candidate_see_its_prompt_and_itself_only():
    doc = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    seg = torch.tensor([[0, 0, 1, 1, 2, 0, 1, 0]])
    m = packing.dense_mask(doc, seg)[0, 0]
    assert m[3].tolist() == [True, True, True, True, False, False, False, False]
    assert m[4].tolist() == [True, True, False, False, True, False, False, False]
    assert m[6].tolist() == [False] * 5 + [True, True, False]
    assert m[7].tolist() == [False] * 7 + [True]  # the pad tail sees only itself


def test_flex_mask_mod_equals_the_dense_mask(tiny):
    """The BlockMask path (flex attention; its backward needs a GPU) applies the same rule."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import create_mask

    _, tok = rlao.load_base(tiny)
    samples, _ = rlao.tokenize_rows(tok, rows_of(), 512)
    batch = packing.collate_shared_rows([samples[:4], samples[4:]], tok.pad_token_id)
    doc, seg = batch["document_ids"], batch["segment_ids"]
    R, L = doc.shape
    flex = create_mask(packing.mask_mod(doc, seg), R, 1, L, L, device="cpu")
    assert torch.equal(flex, packing.dense_mask(doc, seg))
    assert packing.block_mask(doc, seg).shape[-2:] == (L, L)


def test_pack_shared_counts_a_prompt_once_per_row_and_splits_long_groups():
    def sample(prompt: list[int], n: int) -> rlao.Sample:
        return rlao.Sample(prompt + [9] * n, [rlao.IGNORE] * len(prompt) + [9] * n, 1.0)

    p, q = [1, 2, 3, 4, 5], [6, 7, 8, 4, 5]
    samples = [sample(p, 2), sample(p, 2), sample(p, 2), sample(q, 2)]
    # a shared group costs prefix 4 + segments of 3: 4 + 3 + 3 = 10 for two candidates
    assert packing.shared_length(samples, [0, 1, 2]) == 13
    assert packing.pack_shared(samples, 10) == [[0, 1], [2], [3]]
    assert packing.pack_shared(samples, 19) == [[0, 1, 2], [3]]
    assert rlao.pack([len(s.input_ids) for s in samples], 19) == [[0, 1], [2, 3]]


def test_grouped_order_keeps_a_state_together_and_is_seeded():
    samples = []
    for prompt in ([1, 2], [3, 4], [5, 6], [7, 8]):
        for _ in range(3):
            samples.append(rlao.Sample(prompt + [9], [rlao.IGNORE, rlao.IGNORE, 9], 1.0))
    order = packing.grouped_order(samples, seed=3)
    assert order == packing.grouped_order(samples, seed=3)
    assert sorted(order) == list(range(12))
    firsts = [samples[i].input_ids[0] for i in order]
    assert all(firsts[k] == firsts[k - k % 3] for k in range(12))


def test_the_schedule_puts_a_states_candidates_in_one_row():
    samples = [
        rlao.Sample(prompt + [9, 9], [rlao.IGNORE] * 3 + [9, 9], 1.0)
        for prompt in ([1, 2, 3], [4, 5, 6], [7, 8, 9])
        for _ in range(4)
    ]
    # shared, one state takes 2 + 4 x 3 = 14 tokens; unshared 4 x 5 = 20
    config = TrainerConfig(batch_tokens=64, row_tokens=14, max_steps=6)
    for step in rlao.schedule(samples, config):
        for rows in step:
            for r in rows:
                assert len({samples[i].input_ids[0] for i in r}) == 1 and len(r) == 4
    off = TrainerConfig(batch_tokens=64, row_tokens=20, max_steps=6, share_prefix=False)
    assert any(
        len({samples[i].input_ids[0] for i in r}) > 1
        for step in rlao.schedule(samples, off)
        for rows in step
        for r in rows
    )


def test_one_fit_step_shared_equals_unshared(tiny, tmp_path):
    """The trainer's own path: a step over every sample moves the adapter the same way."""
    results = {}
    for share in (True, False):
        model, tok = lora_model(tiny)
        samples, _ = rlao.tokenize_rows(tok, rows_of(), 512)
        config = TrainerConfig(
            lora_dropout=0.0,
            lora_r=4,
            max_steps=1,
            batch_tokens=4096,
            checkpoint_every=0,
            max_grad_norm=None,
            lr=1e-2,
            share_prefix=share,
            cpu_bf16=False,  # an exact comparison: fp32 (bf16 rounds each layout differently)
        )
        state, _ = rlao.train(model, samples, config, tmp_path / str(share))
        params = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        results[share] = (state.losses[0], params)
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    for a, b in zip(results[True][1], results[False][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_state_too_long_for_a_row_is_split_with_one_warning(caplog):
    samples = [rlao.Sample([1, 2, 3, 4] + [9] * 3, [rlao.IGNORE] * 4 + [9] * 3, 1.0)] * 3
    with caplog.at_level("WARNING", logger="w4s.models.packing"):
        assert packing.pack_shared(samples, 11) == [[0, 1], [2]]
        packing.pack_shared(samples, 11)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "1 of 1 states" in warnings[0] and "of 15 tokens" in warnings[0]


def test_the_cpus_default_row_holds_the_longest_state_shared():
    """On the CPU a row is the longest state laid out shared (its dense mask makes attention
    grow with the row's square), bounded by batch_tokens and max_seq_len."""

    def sample(prompt: list[int], completion: list[int]) -> rlao.Sample:
        return rlao.Sample(prompt + completion, [rlao.IGNORE] * len(prompt) + completion, 1.0)

    a, b = [1] * 10, [2] * 4
    samples = [sample(a, [5] * 3), sample(a, [6] * 5), sample(b, [7] * 20)]
    # state a: its 9-token prefix once, then segments of 1 + 3 and 1 + 5; state b alone: 24
    assert rlao.cpu_row_tokens(samples, TrainerConfig(batch_tokens=4096)) == 24
    samples.append(sample(a, [8] * 9))  # state a now: 9 + 4 + 6 + 10 = 29
    assert rlao.cpu_row_tokens(samples, TrainerConfig(batch_tokens=4096)) == 29
    assert rlao.cpu_row_tokens(samples, TrainerConfig(batch_tokens=16)) == 16
    assert rlao.cpu_row_tokens(samples, TrainerConfig(max_seq_len=20)) == 20
    unshared = TrainerConfig(share_prefix=False)
    assert rlao.cpu_row_tokens(samples, unshared) == 24  # the longest sample
