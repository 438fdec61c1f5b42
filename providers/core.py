"""Model providers behind one spec string: `local`, `fake`, `openai:<model>`, `anthropic:<model>`.

Messages use the OpenAI chat shape; an image is a content part `{"type": "image", "data": <base64>,
"mime": "image/png"}` that each provider translates. Retries (exponential backoff with full jitter,
`Retry-After` honoured on 429), timeouts and a per-provider concurrency bound live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skillweave.errors import ConfigError, ModelCallError
from skillweave.providers.local_engine import local_torch_threads
from skillweave.providers.plugins import load_provider_class, plugin_providers

try:  # a faster JSON codec for the HTTP bodies, when installed (LangGraph's langgraph-sdk and langsmith need it)
    import orjson
except ImportError:  # pragma: no cover - the standard library's codec does the same, slower
    orjson = None

SPEC_HELP = ("local, fake, openai:<model>, anthropic:<model>, replay:<recordings>, langchain:<model> or a name "
             "from the models file")


@dataclass
class ChatRequest:
    messages: list[dict]
    temperature: float = 0.7
    max_tokens: int = 512
    n: int = 1
    meta: dict = field(default_factory=dict)  # e.g. the template's scripted reply for the fake provider
    # Provider options passed through where supported: `json` (JSON mode), `seed`, `top_p`.
    options: dict = field(default_factory=dict)


@dataclass
class ChatResult:
    texts: list[str]
    input_tokens: int | None = None
    output_tokens: int | None = None


class RetryableError(Exception):
    """A transient failure (rate limit, timeout, 5xx): retried with backoff."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    """How a provider retries: attempts per call, backoff base, the longest wait between attempts (a server's
    `Retry-After` is capped by it too) and the timeout of one attempt (None: no timeout)."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float | None = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and math.isfinite(retry_after):  # nan/inf never reach asyncio.sleep
            return max(0.0, min(retry_after, self.max_delay))
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


# `--timeout`, `--max-attempts`, `--max-retry-wait` (run/resume) and a run config's "retry" map use these names.
POLICY_FIELDS = {"timeout": "timeout", "max_attempts": "max_attempts", "max_retry_wait": "max_delay"}


def policy_overrides(retry_config: dict | None, spec: str) -> dict:
    """RetryPolicy fields for one model spec from a run config's "retry" map: `{"*": {...}, "<spec>": {...}}`,
    the spec's own entry winning over "*". Keys are those of POLICY_FIELDS."""
    merged = {**((retry_config or {}).get("*") or {}), **((retry_config or {}).get(spec) or {})}
    return {POLICY_FIELDS[k]: v for k, v in merged.items() if k in POLICY_FIELDS}


class Provider:
    """Base class: subclasses implement `_chat`; `chat` adds the bound, timeout and retries."""

    provider = "base"
    uses_fake_replies = False  # only the fake provider (and dry runs) get a template's test `fake_replies`
    # True where `_chat` itself ends an attempt after `self.retry.timeout` (the `openai:` client's aiohttp timeout):
    # `chat` then adds no second timer of its own per attempt
    times_out_itself = False

    def __init__(self, model: str, *, max_concurrency: int = 64, retry: RetryPolicy | None = None):
        self.model = model
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self.default_retry = self.retry
        self._semaphores: dict[int, asyncio.Semaphore] = {}

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def policy(self, overrides: dict) -> RetryPolicy:
        """The default policy with `overrides` (RetryPolicy fields) applied; the same object for the same overrides."""
        if not overrides:
            return self.default_retry
        key = tuple(sorted(overrides.items()))
        policies = self.__dict__.setdefault("_policies", {})
        if key not in policies:
            policies[key] = dataclasses.replace(self.default_retry, **overrides)
        return policies[key]

    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._semaphores:
            self._semaphores[loop_id] = asyncio.Semaphore(self.max_concurrency)
        return self._semaphores[loop_id]

    def _per_loop(self, factory):
        """An SDK client per event loop: its connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        clients = self.__dict__.setdefault("_clients", {})
        if clients.get("loop") is not loop:
            clients.clear()
            clients.update(loop=loop, client=factory())
        return clients["client"]

    async def aclose(self) -> None:
        """Close the client opened on the running loop, if any (before the loop ends, not at garbage collection)."""
        clients = self.__dict__.get("_clients") or {}
        if clients.get("loop") is asyncio.get_running_loop():
            close = getattr(clients["client"], "close", None)
            if close is not None:
                await close()
            clients.clear()

    async def _chat(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def chat(self, request: ChatRequest) -> tuple[ChatResult, int]:
        """Returns (result, attempts). Raises ModelCallError after the last failed attempt; its `attempts`
        says how many attempts were made."""
        attempt = 0
        policy = self.retry
        while True:
            attempt += 1
            try:
                async with self._semaphore(), \
                        _NO_TIMEOUT if self.times_out_itself else asyncio.timeout(policy.timeout):
                    result = await self._chat(request)
                if not result.texts or not all(isinstance(t, str) and t.strip() for t in result.texts):
                    raise RetryableError(f"reply without text ({len(result.texts)} sample(s), some empty)")
                return result, attempt
            except (RetryableError, TimeoutError) as exc:
                if attempt >= policy.max_attempts:
                    error = ModelCallError(f"{self.spec}: gave up after {attempt} attempts: {_describe(exc)}",
                                           retryable=True)
                    error.attempts = attempt
                    raise error from exc
                await asyncio.sleep(policy.delay(attempt, getattr(exc, "retry_after", None)))
            except ModelCallError as exc:
                exc.attempts = attempt
                raise
            except Exception as exc:  # a fatal provider error: no retry
                error = ModelCallError(f"{self.spec}: {_describe(exc)}")
                error.attempts = attempt
                raise error from exc


_NO_TIMEOUT = contextlib.nullcontext()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _has_images(messages: list[dict]) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image" for p in m["content"])
               for m in messages)


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


# ---- fake ----------------------------------------------------------------------------------------
FakeScript = Callable[[ChatRequest], "str | list[str] | Exception"]


class FakeProvider(Provider):
    """Deterministic scripted replies for tests and dry runs.

    Reply order: a script function (tests), else the template's `fake_replies` entry, else a reply derived
    from a hash of the request. `fake:fail` always fails; `fake:flaky` fails each request's first attempt.
    """

    provider = "fake"
    uses_fake_replies = True

    def __init__(self, model: str = "default", script: FakeScript | None = None, latency: float | None = None,
                 **kw):
        super().__init__(model, **kw)
        self.script = script
        # $SKILLWEAVE_FAKE_LATENCY (seconds per call) makes dry runs behave like a slow remote model.
        self.latency = float(os.environ.get("SKILLWEAVE_FAKE_LATENCY", 0)) if latency is None else latency
        self.calls: list[ChatRequest] | None = []  # what it served, for tests; None: keeps nothing
        self._seen: set[str] = set()

    async def _chat(self, request: ChatRequest) -> ChatResult:
        if self.calls is not None:
            self.calls.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        digest = hashlib.blake2b(repr(request.messages).encode(), digest_size=8).hexdigest()
        if self.model == "fail":
            raise RuntimeError("scripted failure (fake:fail)")
        if self.model == "flaky" and digest not in self._seen:
            self._seen.add(digest)
            raise RetryableError("scripted transient failure (fake:flaky)", retry_after=0.0)
        reply = self.script(request) if self.script else request.meta.get("fake_reply")
        if isinstance(reply, Exception):
            raise reply
        if reply is None:
            reply = f"fake reply {digest}"
        texts = reply if isinstance(reply, list) else [reply] * request.n
        prompt_words = sum(len(message_text(m).split()) for m in request.messages)
        return ChatResult(texts=texts, input_tokens=prompt_words, output_tokens=sum(len(t.split()) for t in texts))


# ---- local (embedded SmolLM2, batched) -------------------------------------------------------------
class LocalProvider(Provider):
    """The embedded model (or a local HF folder), loaded once per process; concurrent requests are batched."""

    provider = "local"

    def __init__(self, model: str = "local", *, batch_size: int = 8, gather_seconds: float = 0.05, **kw):
        kw.setdefault("retry", RetryPolicy(max_attempts=1, timeout=None))
        super().__init__(model, **kw)
        self.batch_size = batch_size
        self.gather_seconds = gather_seconds
        self._pending: list[tuple[ChatRequest, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._lock = None
        from skillweave.providers.local_engine import check_dtype_setting, start_loading

        check_dtype_setting()  # a bad $SKILLWEAVE_LOCAL_DTYPE is a ConfigError here, not at the first request
        # the load overlaps the caller's set-up; the first request waits for it (None: nothing started)
        self._loading = start_loading(self.model, self.batch_size)

    @property
    def spec(self) -> str:
        return "local" if self.model == "local" else f"local:{self.model}"

    async def _chat(self, request: ChatRequest) -> ChatResult:
        if _has_images(request.messages):
            raise ConfigError("the local model reads text only; use openai:<vision model> or anthropic:<model>")
        engine = await self._engine()
        if engine is not None:
            return await self._chat_engine(engine, request)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _engine(self):
        """The continuous-batching engine (providers/local_engine.py), or None where the folder needs transformers."""
        if "_fast" not in self.__dict__:
            from skillweave.providers.local_engine import load_engine

            # SKILLWEAVE_LOCAL_ENGINE=transformers keeps transformers' generate (static batches), for comparison.
            self._fast = None if os.environ.get("SKILLWEAVE_LOCAL_ENGINE") == "transformers" else (
                await asyncio.to_thread(load_engine, self.model, self.batch_size))
        return self._fast

    async def _chat_engine(self, engine, request: ChatRequest) -> ChatResult:
        from skillweave.providers.local_engine import GenRequest, scheduler

        tokenizer = engine.tokenizer
        ids = tokenizer.encode(tokenizer.chat_prompt(
            [{"role": m["role"], "content": message_text(m)} for m in request.messages]))
        if len(ids) >= engine.model.max_positions:
            raise ValueError(f"prompt of {len(ids)} tokens exceeds the model's {engine.model.max_positions} positions")
        job = await scheduler(engine).submit(GenRequest(
            ids, n=request.n, max_tokens=request.max_tokens, temperature=request.temperature,
            seed=request.options.get("seed")))
        return ChatResult(texts=[tokenizer.decode(out).strip() for out in job.outputs],
                          input_tokens=len(ids) * request.n, output_tokens=sum(len(out) for out in job.outputs))

    async def _drain(self) -> None:
        import torch

        from skillweave.providers.local_model import load_causal_lm

        torch.set_num_threads(local_torch_threads(torch.get_num_threads()))
        await asyncio.to_thread(load_causal_lm, self.model)  # load (or reuse) off the event loop
        while self._pending:
            await asyncio.sleep(self.gather_seconds)  # let concurrent threads queue up a full batch
            batch, rows = [], 0
            while self._pending and rows < self.batch_size:
                request, future = self._pending.pop(0)
                batch.append((request, future))
                rows += request.n
            try:
                results = await asyncio.to_thread(self._generate, [r for r, _ in batch])
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    def _generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        import torch

        from skillweave.providers.local_model import load_causal_lm

        model, tokenizer = load_causal_lm(self.model)
        prompts, owners = [], []
        for i, request in enumerate(requests):
            text = tokenizer.apply_chat_template(
                [{"role": m["role"], "content": message_text(m)} for m in request.messages],
                add_generation_prompt=True, tokenize=False,
            )
            prompts += [text] * request.n
            owners += [i] * request.n
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        temperature = max(r.temperature for r in requests)
        max_new = max(r.max_tokens for r in requests)
        with torch.no_grad():
            output = model.generate(
                **encoded, max_new_tokens=max_new, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        results = [ChatResult(texts=[], input_tokens=0, output_tokens=0) for _ in requests]
        for row, owner in enumerate(owners):
            tokens = new_tokens[row]
            ids = tokens[tokens != tokenizer.pad_token_id][: requests[owner].max_tokens]
            results[owner].texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
            results[owner].input_tokens += int(encoded["attention_mask"][row].sum())
            results[owner].output_tokens += len(ids)
        return results


# ---- OpenAI-compatible ---------------------------------------------------------------------------------
class OpenAIProvider(Provider):
    """OpenAI chat completions; honours OPENAI_BASE_URL, so vLLM, Ollama or llama.cpp servers work unchanged.

    Requests go straight to `POST {base}/chat/completions` over aiohttp rather than through the openai SDK: the
    SDK spends ~2.5-3.5 ms of CPU per request building and validating typed objects, aiohttp ~0.3 ms, and at
    concurrency 64 against a fast local server that CPU is what limits a 2-core machine
    (benchmarks/pipeline_throughput.py, docs/benchmarks.md). Retry semantics follow the SDK's: 408, 409, 429 and
    5xx, timeouts and connection errors are retried (429 honours Retry-After); other statuses fail at once with
    the server's error message.
    """

    provider = "openai"
    RETRY_STATUSES = frozenset({408, 409, 429})
    times_out_itself = True  # aiohttp's total timeout per request, the retry policy's (see `_chat`)

    def __init__(self, model: str, **kw):
        super().__init__(model, **kw)
        base_url = os.environ.get("OPENAI_BASE_URL")
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key and not base_url:
            raise ConfigError(f"openai:{model} needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)")
        self.url = (base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key or 'no-key'}"}
        if os.environ.get("OPENAI_ORG_ID"):
            self._headers["OpenAI-Organization"] = os.environ["OPENAI_ORG_ID"]
        self._proxy = _env_proxy(self.url)

    def _timeout(self):
        """aiohttp's per-request timeout for the current retry policy (one object per timeout value)."""
        timeouts = self.__dict__.setdefault("_timeouts", {})
        value = self.retry.timeout
        if value not in timeouts:
            import aiohttp

            timeouts[value] = aiohttp.ClientTimeout(total=value)
        return timeouts[value]

    def _session(self):
        import aiohttp

        # The proxy (HTTP(S)_PROXY / NO_PROXY) is looked up once in __init__: aiohttp's trust_env would look it
        # up, and read ~/.netrc, in a worker thread on every request.
        # Request bodies are encoded with orjson where installed (a tenth of `json.dumps`'s time for a prompt;
        # the same JSON value, compact and UTF-8: the server parses the same request). The stored request (the
        # call key's input) is encoded by the store, not here, so it does not change with the codec.
        extra = {"json_serialize_bytes": _dumps} if orjson is not None else {}
        return aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(
            limit=self.max_concurrency), timeout=aiohttp.ClientTimeout(total=self.retry.timeout), **extra)

    @staticmethod
    def _content(message: dict):
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append({"type": "image_url",
                              "image_url": {"url": f"data:{part.get('mime', 'image/png')};base64,{part['data']}"}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        return parts

    def _body(self, request: ChatRequest) -> dict:
        """The chat-completions request body: messages, sampling, and the options turned into API fields (`json`
        -> JSON mode; `json_schema` -> structured output with that schema, which wins over JSON mode)."""
        options = dict(request.options)
        if options.pop("json", False):
            options["response_format"] = {"type": "json_object"}
        if schema := options.pop("json_schema", None):
            options["response_format"] = {"type": "json_schema", "json_schema": schema}
        return {"model": self.model, "messages": [{"role": m["role"], "content": self._content(m)}
                                                  for m in request.messages],
                "temperature": request.temperature, "max_tokens": request.max_tokens, "n": request.n, **options}

    async def _chat(self, request: ChatRequest) -> ChatResult:
        import aiohttp

        body = self._body(request)
        try:
            # the attempt's timeout is aiohttp's own timer, set from the policy in force (`--timeout` may change it
            # after the session was opened); aiohttp raises TimeoutError (or, connecting, a ClientError): retried
            async with self._per_loop(self._session).post(self.url, json=body, proxy=self._proxy,
                                                          timeout=self._timeout()) as response:
                if response.status >= 400:
                    message = f"HTTP {response.status} from {self.url}: {_error_message(await response.text())}"
                    if response.status in self.RETRY_STATUSES or response.status >= 500:
                        raise RetryableError(message, retry_after=_retry_after(response))
                    raise ModelCallError(f"{self.spec}: {message}")
                raw = await response.read()
        except aiohttp.ClientError as exc:  # connection refused or reset, truncated body, bad response framing
            raise RetryableError(_describe(exc)) from exc
        return openai_reply(raw, self.url)


def openai_reply(raw: bytes, url: str) -> ChatResult:
    """The result of an HTTP 200 chat-completions body, or RetryableError when it is not JSON (or not UTF-8) or
    holds nothing usable. Shared by every OpenAI-compatible provider (`openai:` and the models file's fleets)."""
    try:
        reply = _loads(raw)
    except ValueError:  # a broken reply, retried like a 5xx
        raise RetryableError(f"HTTP 200 from {url} with a body that is not JSON: {raw[:120]!r}") from None
    return _openai_result(reply, url)


def _dumps(value) -> bytes:
    """A request body as JSON bytes through orjson; a value orjson refuses (a dict key that is not a string, an
    integer past 64 bits) is encoded by `json.dumps` as before."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def _loads(raw: bytes):
    """`json.loads`, through orjson where installed; a body orjson refuses (NaN, integers past 64 bits, which the
    standard library accepts) is decoded by `json.loads`, so what parses and what raises does not change."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except ValueError:
            pass
    return json.loads(raw)


def _openai_result(reply, url: str) -> ChatResult:
    """The texts of a chat-completions reply, or RetryableError when it holds nothing usable: no choices, a
    choice without text content, or an error object. Such a reply is never stored as a success."""
    if not isinstance(reply, dict):
        raise RetryableError(f"unexpected reply from {url}: {str(reply)[:200]}")
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        detail = _error_message(json.dumps(reply["error"])) if reply.get("error") else "no choices"
        raise RetryableError(f"unusable reply from {url} ({detail}): {str(reply)[:200]}")
    texts = []
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            raise RetryableError(f"unusable reply from {url}: choice {i} has no text content"
                                 + (f" (finish_reason {reason})" if reason else ""))
        texts.append(content)
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    return ChatResult(texts=texts, input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"))


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY, NO_PROXY honoured), if any."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


def _error_message(text: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return text[:300]


def _retry_after(response) -> float | None:
    """Seconds from a Retry-After header; None when absent, not a number, negative or not finite (nan, inf)."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


# ---- Anthropic -----------------------------------------------------------------------------------------
class AnthropicProvider(Provider):
    provider = "anthropic"

    def __init__(self, model: str, **kw):
        super().__init__(model, **kw)
        import anthropic

        if not os.environ.get("ANTHROPIC_API_KEY") and not os.environ.get("ANTHROPIC_BASE_URL"):
            raise ConfigError(f"anthropic:{model} needs ANTHROPIC_API_KEY")
        self._anthropic = anthropic

    @staticmethod
    def _content(message: dict):
        content = message.get("content")
        if isinstance(content, str):
            return content
        return [
            {"type": "image", "source": {"type": "base64", "media_type": p.get("mime", "image/png"), "data": p["data"]}}
            if p.get("type") == "image" else {"type": "text", "text": p["text"]}
            for p in content
        ]

    async def _one(self, request: ChatRequest):
        an = self._anthropic
        system = "\n".join(message_text(m) for m in request.messages if m["role"] == "system")
        kwargs = {"system": system} if system else {}
        # The SDK (1.x) dropped temperature/top_p from its signature; the API still takes them in the body.
        sampling = {"temperature": request.temperature}
        if "top_p" in request.options:  # Anthropic has no JSON mode or seed; the prompt asks for JSON instead
            sampling["top_p"] = request.options["top_p"]
        try:
            client = self._per_loop(lambda: an.AsyncAnthropic(max_retries=0, timeout=self.retry.timeout))
            return await client.messages.create(
                model=self.model, max_tokens=request.max_tokens, extra_body=sampling,
                messages=[{"role": m["role"], "content": self._content(m)} for m in request.messages
                          if m["role"] != "system"],
                **kwargs,
            )
        except an.RateLimitError as exc:
            raise RetryableError(str(exc), retry_after=_retry_after(exc.response)) from exc
        except (an.APITimeoutError, an.APIConnectionError, an.InternalServerError,
                an.APIResponseValidationError) as exc:
            raise RetryableError(str(exc)) from exc

    async def _chat(self, request: ChatRequest) -> ChatResult:
        replies = await asyncio.gather(*(self._one(request) for _ in range(request.n)))
        texts = ["".join(b.text for b in r.content or [] if getattr(b, "type", "") == "text") for r in replies]
        for text, reply in zip(texts, replies, strict=True):
            if not text.strip():  # no text block: a failed call, never an empty success
                raise RetryableError(f"{self.spec}: reply without text content "
                                     f"(stop_reason {getattr(reply, 'stop_reason', None)})")
        return ChatResult(
            texts=texts,
            input_tokens=sum(r.usage.input_tokens for r in replies),
            output_tokens=sum(r.usage.output_tokens for r in replies),
        )


# ---- registry ------------------------------------------------------------------------------------------
_CACHE: dict[tuple, Provider] = {}


# Kinds implemented in modules of their own, named as "module:attr" (each of those modules imports this one, so
# this one never imports them): kind -> (spec checker, factory `(kind, model, max_concurrency=) -> Provider`).
MODULE_KINDS: dict[str, tuple[str | None, str]] = {
    "replay": ("skillweave.providers.replay:parse_replay_spec", "skillweave.providers.replay:make_provider"),
    "named": (None, "skillweave.providers.model_config:build_provider"),
    "langchain": (None, "skillweave.providers.model_config:build_provider"),
}


def _attr(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_spec(spec: str) -> tuple[str, str]:
    """'openai:gpt-4o' -> ('openai', 'gpt-4o'); 'local' -> ('local', 'local'); 'fake' -> ('fake', 'default')."""
    spec = (spec or "").strip()
    kind, _, model = spec.partition(":")
    if kind == "local":
        return "local", model or "local"
    if kind == "fake":
        return "fake", model or "default"
    if kind in ("openai", "anthropic") and model:
        return kind, model
    if kind == "replay" and model:  # recorded replies instead of a model: providers/replay.py
        _attr(MODULE_KINDS["replay"][0])(model)
        return kind, model
    if kind in plugin_providers():  # a provider from another package (entry point group skillweave.providers)
        return kind, model or "default"
    # models-file names and the langchain: kind (providers/model_config.py, docs/models.md)
    if (extra := _attr("skillweave.providers.model_config:parse_extra_spec")(spec)) is not None:
        return extra
    raise ConfigError(f"unknown model spec '{spec}'; expected {SPEC_HELP}")


def get_provider(spec: str, *, max_concurrency: int = 64, retry: dict | None = None) -> Provider:
    """One provider instance per (spec, bound) per process, so the local model loads once. `retry` overrides
    fields of the provider's default RetryPolicy (`timeout`, `max_attempts`, `max_delay`) for this run."""
    kind, model = parse_spec(spec)
    key = (kind, model, max_concurrency)
    if key not in _CACHE:
        if kind in MODULE_KINDS:  # implemented in its own module (replay, models file, langchain)
            _CACHE[key] = _attr(MODULE_KINDS[kind][1])(kind, model, max_concurrency=max_concurrency)
        else:
            cls = {"local": LocalProvider, "fake": FakeProvider, "openai": OpenAIProvider,
                   "anthropic": AnthropicProvider}.get(kind) or load_provider_class(kind)
            if not (isinstance(cls, type) and issubclass(cls, Provider)):
                raise ConfigError(f"provider '{kind}' is not a skillweave.providers.core.Provider subclass")
            _CACHE[key] = cls(model, max_concurrency=max_concurrency)
            if cls is FakeProvider:  # a --model fake run keeps no request: memory stays flat over 10^5 items
                _CACHE[key].calls = None
    provider = _CACHE[key]
    if retry is not None:
        provider.retry = provider.policy(retry)
    return provider


def register_provider(spec: str, provider: Provider, *, max_concurrency: int = 64) -> None:
    """Install a provider instance for a spec (tests: a FakeProvider with a script)."""
    kind, model = parse_spec(spec)
    _CACHE[(kind, model, max_concurrency)] = provider


def clear_providers() -> None:
    _CACHE.clear()


async def close_clients() -> None:
    """Close the clients the registered providers opened on the running loop."""
    for provider in _CACHE.values():
        await provider.aclose()


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
