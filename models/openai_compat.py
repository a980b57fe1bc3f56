"""Chat completions over the OpenAI HTTP API: OpenAI itself, a vLLM server, llama.cpp's server.

The openai client's own retries are off (max_retries=0); this module retries with exponential
backoff and jitter so the policy is logged, counted in `Completion.extra["retries"]`, and
testable against a local server.

Two transports speak the same API. `http` (default): `w4s.models.http_json`, the standard
library's keep-alive `http.client`, 0.4-0.5 ms of CPU per call under 32 concurrent calls here.
`openai`: the official client (its generic `post`, so no pydantic models are built), 1.9 ms
(benchmarks/bench_http_transport.py); pick it for what only that client does (e.g.
OPENAI_ORG_ID headers).

An `adapter` (a PEFT LoRA folder) is loaded into a vLLM server at construction through
`POST /load_lora_adapter` (vLLM started with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) under a name derived from the adapter's content, so
reloading the same adapter, from any process, finds it already there. The server reads the
folder itself: its path must be readable by the server (same host or shared storage).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from w4s.cancel import current_scope
from w4s.errors import BackendError, ConfigError, one_line
from w4s.models.http_json import HTTPStatusError, HTTPUnreachable, JSONClient
from w4s.models.lora_gguf import adapted_model_id, adapter_digest, check_adapter_dir
from w4s.protocols import Completion, Message

if TYPE_CHECKING:
    import openai

TRANSPORTS = ("http", "openai")
DEFAULT_BASE_URL = "https://api.openai.com/v1"

log = logging.getLogger(__name__)

_NO_KEY = "EMPTY"  # what vLLM and llama.cpp servers accept when they run without a key


def resolve_api_key(api_key_env: str | None, *, field: str = "api_key_env") -> str:
    """The key from the env var named in config; local servers without a key pass None."""
    if api_key_env is None:
        return _NO_KEY
    value = os.environ.get(api_key_env)
    if not value:
        raise ConfigError(
            f"`{field}`: environment variable {api_key_env!r} is not set; export it, "
            "or set `api_key_env: null` for a server that needs no key"
        )
    return value


class OpenAICompatChatModel:
    """A ChatModel backed by `/v1/chat/completions`; thread-safe (the `http` transport keeps
    one keep-alive connection per calling thread, the `openai` one shares the client's pool).

    Retries 408/409/429/5xx, connection errors and timeouts up to `max_retries` times; fails
    at once with a one-line BackendError on other 4xx (bad key, unknown model, bad request).
    `BackendError.infrastructure` is False only for a request the server rejected as such
    (400, 413, 422 and other 4xx but 401/403/404/407, which are the key, model or URL); every
    other failure (unreachable, timeouts, 5xx, 429 after the retries, a malformed reply) is
    True.
    If the server answers `n > 1` with a 400, or returns fewer choices than asked, the rest
    are fetched with single calls from then on (seeds `seed + i`, so seeded samples differ).

    Spend: `usage` covers every choice (OpenAI, vLLM), except on llama.cpp's server (known by
    the `timings` it adds), whose `usage` for n > 1 counts the first choice only: there each
    other choice counts `max_tokens` when cut by the length limit, else its characters at the
    first choice's tokens per character (an estimate; llama.cpp reports nothing per choice).
    Under a `w4s.cancel` scope (the sandbox's calls) a cancelled call stops at once with the
    `http` transport (the request is closed) and before its next retry with `openai`.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        max_new_tokens: int | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        transport: str = "http",
        adapter: str | None = None,
        adapter_field: str = "adapter",
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"`transport` must be one of {TRANSPORTS}, got {transport!r}")
        self.model_id = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._n_supported = True
        self._client: openai.OpenAI | None = None
        self._http: JSONClient | None = None
        if transport == "openai":
            import openai

            self._client = openai.OpenAI(
                api_key=api_key, base_url=self.base_url, timeout=timeout_s, max_retries=0
            )
        else:
            try:
                self._http = JSONClient(self.base_url, timeout_s=timeout_s,
                                        headers={"Authorization": f"Bearer {api_key}"})
            except ValueError as e:
                raise ConfigError(str(e)) from e
        self.served_model = model  # the `model` of each request: the adapter's name, if any
        if adapter is not None:
            self._load_adapter(adapter, adapter_field)

    def _load_adapter(self, adapter: str, field: str) -> None:
        """Load the PEFT folder `adapter` into the server and serve it from then on.

        The served name and `model_id` come from a digest of the adapter's files: the same
        adapter always gets the same name (vLLM's 400 "already been loaded" is then fine),
        and an adapted model's id differs from its base's, which the executor-call cache
        and recorded outcomes key on.
        """
        folder = check_adapter_dir(adapter, field=field).resolve()
        digest = adapter_digest(folder)
        name = f"w4s-lora-{digest[:10]}"
        self.model_id = adapted_model_id(self.model_id, digest)
        body = {"lora_name": name, "lora_path": str(folder)}
        try:
            self._create(body, path="/load_lora_adapter", json_reply=False)
        except BackendError as e:
            cause = e.__cause__
            if not isinstance(cause, HTTPStatusError) or cause.status_code in (401, 403, 407):
                raise  # unreachable, 5xx after the retries, the key: already one line
            text = str(cause).lower()
            status = cause.status_code
            if status == 400 and "already" in text:
                log.info("%s: adapter %s already loaded at %s", self.model_id, name,
                         self.endpoint)
            elif "not enabled" in text or "enable-lora" in text or (
                    status in (404, 405) and "no adapter found" not in text):
                raise BackendError(
                    f"`{field}`: the server at {self.base_url} does not serve LoRA adapters "
                    "(start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
                ) from cause
            elif "no adapter found" in text or str(folder).lower() in text:
                raise BackendError(
                    f"`{field}`: the server at {self.base_url} cannot read the adapter at "
                    f"{str(folder)!r} (it must be readable by the server: same host or shared "
                    f"storage): {one_line(cause)}"
                ) from cause
            else:
                raise BackendError(
                    f"`{field}`: the server at {self.base_url} refused to load the adapter: "
                    f"{one_line(cause)}"
                ) from cause
        else:
            log.info("%s: loaded adapter %s into %s", self.model_id, name, self.endpoint)
        self.served_model = name

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/"

    @property
    def identity(self) -> str:
        """What answers the calls: the model id at this endpoint. The executor-call cache
        and recorded outcomes key on it, so the same name elsewhere shares nothing."""
        return f"{self.model_id}@{self.endpoint}"

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
        """Ask for n replies; `max_tokens` is capped at the config's `max_new_tokens`."""
        if n < 1:
            raise ValueError(f"`n` must be at least 1, but received {n!r}")
        if self.max_new_tokens is not None:
            max_tokens = min(max_tokens, self.max_new_tokens)
        base: dict[str, Any] = {
            "model": self.served_model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if json_mode:
            base["response_format"] = {"type": "json_object"}
        texts: list[str] = []
        finish: list[str | None] = []
        prompt_tokens = completion_tokens = retries = 0
        calls = 0
        while len(texts) < n:
            want = n - len(texts) if self._n_supported else 1
            kwargs = dict(base)
            if want > 1:
                kwargs["n"] = want
            if seed is not None:
                kwargs["seed"] = seed + len(texts)
            try:
                resp, tries = self._create(kwargs)
            except _NRejectedError as e:
                log.info("%s: n=%d rejected (%s); using single calls", self.model_id, want, e)
                self._n_supported = False
                continue
            calls += 1
            retries += tries
            choices, usage = self._parse(resp)
            for text, reason in choices[:want]:
                texts.append(text)
                finish.append(reason)
            prompt_tokens += usage[0]
            if min(want, len(choices)) > 1 and isinstance(resp, dict) and "timings" in resp:
                completion_tokens += _every_choice(choices[:want], usage[1], max_tokens)
            else:
                completion_tokens += usage[1]
            if want > 1 and len(choices) < want:
                # llama.cpp's server ignores n; ask for the rest one at a time
                self._n_supported = False
        return Completion(
            texts=tuple(texts),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=self.model_id,
            extra={"retries": retries, "calls": calls, "finish_reasons": finish},
        )

    def _parse(self, body: Any) -> tuple[list[tuple[str, str | None]], tuple[int, int]]:
        """([(text, finish_reason)], (prompt_tokens, completion_tokens)) from a 200 reply."""
        try:
            choices = [((c.get("message") or {}).get("content") or "", c.get("finish_reason"))
                       for c in body["choices"]]
            usage = body.get("usage") or {}
            tokens = (int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise self._malformed(e) from e
        if not choices:
            raise BackendError(f"no choices returned by {self.endpoint}", model=self.model_id,
                               infrastructure=True)
        if not all(isinstance(t, str) for t, _ in choices):
            raise BackendError(f"non-text message content from {self.endpoint}",
                               model=self.model_id, infrastructure=True)
        return choices, tokens

    def _post(self, kwargs: dict[str, Any], path: str = "/chat/completions",
              json_reply: bool = True) -> Any:
        """One POST (a chat completion by default); both transports raise the same errors."""
        if self._http is not None:
            try:
                return self._http.post(path, kwargs, json_reply=json_reply)
            except ValueError as e:
                raise self._malformed(e) from e
        import httpx
        import openai

        assert self._client is not None
        try:
            resp = self._client.post(path, body=kwargs, cast_to=httpx.Response)
        except openai.APIStatusError as e:
            raise HTTPStatusError(e.status_code, one_line(e), _retry_after_s(e)) from e
        except openai.APIConnectionError as e:  # includes APITimeoutError
            raise HTTPUnreachable(one_line(e),
                                  timed_out=isinstance(e, openai.APITimeoutError)) from e
        if not json_reply:
            return resp.text
        try:
            return resp.json()
        except ValueError as e:
            raise self._malformed(e) from e

    def _malformed(self, e: Exception) -> BackendError:
        return BackendError(f"malformed chat completion from {self.endpoint}: "
                            f"{type(e).__name__}: {one_line(e)}", model=self.model_id,
                            infrastructure=True)

    def _create(self, kwargs: dict[str, Any], path: str = "/chat/completions",
                json_reply: bool = True) -> tuple[Any, int]:
        """One request with our retry loop; returns the reply and how many retries it took."""
        attempt = 0
        scope = current_scope()
        while True:
            if scope is not None:
                scope.check()  # the caller has gone: no new attempt
            try:
                return self._post(kwargs, path, json_reply), attempt
            except HTTPStatusError as e:
                status = e.status_code
                if status == 400 and kwargs.get("n", 1) > 1:
                    # maybe n itself; a single call will surface any other cause
                    raise _NRejectedError(one_line(e)) from e
                if status not in (408, 409, 429) and status < 500:
                    raise BackendError(self._fatal_message(e), model=self.model_id,
                                       infrastructure=status in _CONFIG_STATUSES) from e
                reason, retry_after, err = f"HTTP {status}", e.retry_after, e
            except HTTPUnreachable as e:
                reason = "timed out" if e.timed_out else "unreachable"
                retry_after, err = None, e
            if attempt >= self.max_retries:
                raise BackendError(
                    f"{reason} at {self.endpoint} after {attempt + 1} attempts: {one_line(err)}",
                    model=self.model_id,
                    infrastructure=True,
                ) from err
            delay = self._delay(attempt, retry_after)
            log.warning(
                "%s: %s at %s; retry %d/%d in %.2fs",
                self.model_id,
                reason,
                self.endpoint,
                attempt + 1,
                self.max_retries,
                delay,
            )
            if scope is not None:
                scope.sleep(delay)
            else:
                time.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After replaces it (capped)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay = delay / 2 + random.uniform(0, delay / 2)
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self.max_backoff_s)
        return delay

    def _fatal_message(self, e: HTTPStatusError) -> str:
        status = e.status_code
        where = self.endpoint
        key_hint = (
            f"check {self.api_key_env}"
            if self.api_key_env
            else "the server wants an API key; set `api_key_env`"
        )
        if status == 401:
            return f"authentication failed (401) at {where}: {key_hint}"
        if status == 403:
            return f"permission denied (403) at {where}: {key_hint} and its access to the model"
        if status == 404:
            return (
                f"not found (404) at {where}: check `model` {self.model_id!r} and `base_url` "
                "(it usually ends in /v1)"
            )
        return f"request rejected ({status}) at {where}: {one_line(e)}"


def _every_choice(choices: list[tuple[str, str | None]], first_tokens: int,
                  max_tokens: int) -> int:
    """Completion tokens of all `choices` when `first_tokens` counts the first one only
    (llama.cpp's server): a choice cut by the length limit made `max_tokens`; the others are
    estimated at the first choice's tokens per character."""
    first = choices[0][0]
    per_char = first_tokens / len(first) if first and first_tokens else 0.25
    total = first_tokens
    for text, reason in choices[1:]:
        if reason == "length":
            total += max_tokens
        else:
            total += min(max_tokens, max(1, round(len(text) * per_char)))
    return total


# rejected for the key, the model or the URL: no workflow picks those, the run's config does
_CONFIG_STATUSES = (401, 403, 404, 407)


class _NRejectedError(Exception):
    """The server refused n > 1; the caller falls back to single calls."""


def _retry_after_s(e: Any) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None

