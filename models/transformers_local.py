"""A local Hugging Face causal LM as a ChatModel, batching concurrent callers into one generate.

The sandbox harness calls `complete` from many threads at once. On a CPU a batched generate
costs little more per step than a single one, so requests that arrive together are padded on
the left and decoded in one `model.generate`. No background thread: the first caller to find
the model idle becomes the leader, waits a few milliseconds for others to queue, and runs
batches until its own request is served; waiting callers then elect the next leader.

Sampling is done per row by a logits processor with its own `torch.Generator`, so requests
with different temperatures share a batch and a seeded request gives the same sample whether
it ran alone or beside others (up to float rounding of padded batches).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w4s.errors import BackendError, ConfigError, one_line
from w4s.models.lora_gguf import (
    ADAPTER_WEIGHTS,
    LORA_KEY,
    adapted_model_id,
    adapter_digest,
    check_adapter_dir,
    read_adapter_config,
)
from w4s.protocols import Completion, Message

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchStats:
    """Counters a benchmark or test reads to see how well concurrent calls were batched."""

    generate_calls: int = 0
    rows: int = 0
    largest_batch: int = 0


@dataclass(eq=False, slots=True)
class _Request:
    prompt_ids: list[int]
    n: int
    temperature: float
    max_tokens: int
    seed: int | None
    done: bool = False
    texts: tuple[str, ...] = ()
    completion_tokens: int = 0
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        # greedy samples are identical: decode once, return it n times
        return 1 if self.temperature <= 0 else self.n


class TransformersChatModel:
    """ChatModel over a loaded model + tokenizer; see the module docstring for the batching.

    `json_mode` is best effort: there is no constrained decoding, and nothing is added to the
    prompt (the agent layer asks for JSON in its own instructions). `max_tokens` is capped at
    `max_new_tokens` and at what the context window leaves. Completion tokens count each
    returned text up to and including its end-of-sequence token, so n greedy copies cost n
    times, as an API would bill them.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        max_new_tokens: int = 512,
        batch_window_s: float = 0.005,
        max_batch_rows: int = 32,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"`max_batch_rows` must be at least 1, but received {max_batch_rows}")
        self.model_id = model_id
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_window_s = batch_window_s
        self.max_batch_rows = max_batch_rows
        self.stats = BatchStats()
        self._eos_ids = _stop_token_ids(model, tokenizer)
        if not self._eos_ids:
            raise ConfigError(f"`model`: {model_id!r} has no end-of-sequence token to stop at")
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids)
        self._context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._busy = False

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        gguf_file: str | None = None,
        model_id: str | None = None,
        device: str = "cpu",
        max_new_tokens: int = 512,
        field_prefix: str = "",
        adapter: str | Path | None = None,
        **kwargs: Any,
    ) -> TransformersChatModel:
        """Load a local folder (safetensors, or a GGUF file in it); never contacts a hub.

        `adapter`: a PEFT LoRA folder applied on top; the id then names the adapter too."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = f"{path}/{gguf_file}" if gguf_file else str(path)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), gguf_file=gguf_file, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(path), gguf_file=gguf_file, dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"`{field_prefix}model`: cannot load a local model from {where!r}: {one_line(e)}"
            ) from e
        model.to(device)
        log.info("loaded %s in %.1fs", where, time.perf_counter() - start)
        model_id = model_id or Path(str(path)).name
        if adapter is not None:
            model, model_id = apply_adapter(
                model, adapter, model_id=model_id, field=f"{field_prefix}adapter"
            )
        return cls(
            model,
            tokenizer,
            model_id=model_id,
            max_new_tokens=max_new_tokens,
            **kwargs,
        )

    def complete(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion:
        if n < 1:
            raise ValueError(f"`n` must be at least 1, but received {n!r}")
        if temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, but received {temperature!r}")
        prompt_ids = self._encode(messages)
        max_tokens = min(max_tokens, self.max_new_tokens)
        if self._context is not None:
            room = self._context - len(prompt_ids)
            if room < 1:
                raise BackendError(
                    f"prompt of {len(prompt_ids)} tokens fills the {self._context}-token context",
                    model=self.model_id,
                    infrastructure=False,  # the request's fault: it fails the same way again
                )
            max_tokens = min(max_tokens, room)
        req = _Request(prompt_ids, n, temperature, max(max_tokens, 1), seed)
        with self._cond:
            self._pending.append(req)
            while self._busy and not req.done:
                self._cond.wait()
            lead = not req.done
            if lead:
                self._busy = True
        if lead:
            try:
                self._lead(req)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        return Completion(
            texts=req.texts,
            prompt_tokens=len(prompt_ids),
            completion_tokens=req.completion_tokens,
            model=self.model_id,
        )

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        from jinja2 import TemplateError

        tok = self.tokenizer
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            else:  # a base model: a plain transcript is the best we can do
                text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant: "
            return list(tok(text, add_special_tokens=False)["input_ids"])
        except (TemplateError, ValueError, TypeError, KeyError) as e:
            msg = f"cannot render the chat prompt: {one_line(e)}"  # e.g. roles out of order
            raise BackendError(msg, model=self.model_id, infrastructure=False) from e

    def _lead(self, own: _Request) -> None:
        """Run batches (others' requests too) until `own` is served."""
        while not own.done:
            with self._cond:
                queued = sum(r.rows for r in self._pending)
            if self.batch_window_s > 0 and queued < self.max_batch_rows:
                time.sleep(self.batch_window_s)  # let callers that arrive together join
            with self._cond:
                batch = self._take_batch()
            self._run_batch(batch)

    def _take_batch(self) -> list[_Request]:
        batch = [self._pending.popleft()]
        rows = batch[0].rows
        while self._pending and rows + self._pending[0].rows <= self.max_batch_rows:
            req = self._pending.popleft()
            batch.append(req)
            rows += req.rows
        return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        results: list[tuple[tuple[str, ...], int]] | None = None
        message, cause = "generation was interrupted", None
        try:
            results = self._generate(batch)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            message, cause = f"generation failed: {one_line(e)}", e
        finally:
            with self._cond:
                for i, req in enumerate(batch):
                    if results is not None:
                        req.texts, req.completion_tokens = results[i]
                    else:  # one error object per caller: each thread raises its own
                        req.error = BackendError(message, model=self.model_id,
                                                 infrastructure=True)
                        req.error.__cause__ = cause
                    req.done = True
                self._cond.notify_all()

    def _generate(self, batch: list[_Request]) -> list[tuple[tuple[str, ...], int]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        rows = [(req, j) for req in batch for j in range(req.rows)]
        width = max(len(req.prompt_ids) for req in batch)
        device = self.model.device
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (req, _) in enumerate(rows):  # left padding: every prompt ends at column width
            ids[i, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            mask[i, width - len(req.prompt_ids) :] = 1
        limits = [req.max_tokens for req, _ in rows]
        sampler = _RowSampler(
            [req.temperature for req, _ in rows],
            [_row_generator(req, j, device) for req, j in rows],
        )
        gen_config = GenerationConfig(
            do_sample=False,  # argmax over the scores _RowSampler perturbed (Gumbel-max)
            max_new_tokens=max(limits),
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self._pad_id,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=gen_config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([_RowLimits(width, limits)]),
            )
        new = out[:, width:].tolist()

        texts: dict[int, list[str]] = {id(req): [] for req in batch}
        counts: dict[int, int] = {id(req): 0 for req in batch}
        for (req, _), tokens, limit in zip(rows, new, limits, strict=True):
            tokens = tokens[:limit]
            end = next((k for k, t in enumerate(tokens) if t in self._eos_ids), None)
            used = tokens if end is None else tokens[: end + 1]
            text = self.tokenizer.decode(
                tokens if end is None else tokens[:end], skip_special_tokens=True
            )
            copies = req.n if req.rows == 1 else 1
            texts[id(req)].extend([text] * copies)
            counts[id(req)] += len(used) * copies
        self.stats.generate_calls += 1
        self.stats.rows += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        return [(tuple(texts[id(req)]), counts[id(req)]) for req in batch]


def apply_adapter(
    model: Any, adapter: str | Path, *, model_id: str, field: str = "adapter"
) -> tuple[Any, str]:
    """`model` wrapped in the PEFT LoRA at `adapter` (eval mode) and the adapted model's id.

    PEFT injects its layers into `model` in place, so pass a model no other ChatModel uses.
    The adapter's tensor shapes are checked against `model` first, so one fitted on another
    base fails in one line naming `field` rather than with peft's size-mismatch dump.
    """
    from peft import PeftModel
    from safetensors import safe_open

    folder = check_adapter_dir(adapter, field=field)
    read_adapter_config(folder, field=field)
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as f:
        for key in f.keys():
            m = LORA_KEY.match(key)
            if m is None:
                continue  # modules_to_save and the like: peft checks them itself
            shape = tuple(f.get_slice(key).get_shape())
            try:
                weight = model.get_submodule(m["module"]).weight
            except AttributeError:
                raise ConfigError(
                    f"`{field}`: the adapter was fitted on another base: {model_id!r} has no "
                    f"module {m['module']}"
                ) from None
            dim = 1 if m["ab"] == "A" else 0  # A: r x in, B: out x r
            if shape[dim] != weight.shape[dim]:
                raise ConfigError(
                    f"`{field}`: the adapter was fitted on another base: {m['module']} is "
                    f"{tuple(weight.shape)} in {model_id!r}, the adapter's lora_{m['ab']} "
                    f"is {shape}"
                )
    try:
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ConfigError(f"`{field}`: cannot load the adapter: {one_line(e)}") from e
    return peft_model.eval(), adapted_model_id(model_id, adapter_digest(folder))


def _row_generator(req: _Request, j: int, device: Any) -> torch.Generator | None:
    """A generator per sampled row: seeded from (seed, j) when asked, else fresh randomness."""
    import torch

    if req.temperature <= 0:
        return None
    seed = (req.seed * 1_000_003 + j) % 2**63 if req.seed is not None else random.getrandbits(63)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class _RowSampler:
    """Gumbel-max sampling per row: argmax(logits / T + Gumbel noise) is a draw from softmax.

    Greedy rows (T == 0) pass through untouched, so one greedy `generate` serves both kinds.
    """

    def __init__(self, temps: list[float], gens: list[torch.Generator | None]) -> None:
        self.temps = temps
        self.gens = gens

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if all(t <= 0 for t in self.temps):
            return scores
        scores = scores.clone()
        for i, (temp, gen) in enumerate(zip(self.temps, self.gens, strict=True)):
            if gen is None:
                continue
            u = torch.rand(scores.shape[1], generator=gen, device=scores.device)
            gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
            scores[i] = scores[i].float() / temp + gumbel
        return scores


class _RowLimits:
    """Stops each row at its own `max_tokens`, so requests with different caps share a batch."""

    def __init__(self, prompt_width: int, limits: list[int]) -> None:
        self.prompt_width = prompt_width
        self.limits = limits
        self._limits_tensor: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        import torch

        if self._limits_tensor is None:
            self._limits_tensor = torch.tensor(self.limits, device=input_ids.device)
        return (input_ids.shape[1] - self.prompt_width) >= self._limits_tensor


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids from the generation config and tokenizer, plus ChatML's <|im_end|> if present."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end >= 0:
        ids.add(im_end)
    return ids

