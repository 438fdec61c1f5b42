"""Named OpenAI-compatible models from the models file: endpoint fleets and client-side rate limits.

A fleet is one model name with several base URLs (e.g. vLLM replicas). Each request goes to the healthy
endpoint with the fewest requests in flight (ties rotate). An endpoint that fails with a connection error, a
5xx or an HTTP 200 without usable content (the `openai:` provider's `openai_reply` decides) is taken out for a cool-down (doubling on each further failure, up to 16x); the failed request is retried
at once on another endpoint, so the run goes on. After the cool-down the endpoint gets one probe request at a
time until one succeeds, then its full share again.

Rate limits (requests and tokens per minute) are token buckets refilled continuously, holding one second's
worth (at least one request). A 429 pauses every request of the model for its `Retry-After` (1 s without
one) and lowers the request rate by a quarter (to at most a tenth of the configured rate); each success
gives back 2% of the configured rate.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass

from skillweave.errors import ConfigError, ModelCallError
from skillweave.providers.core import (
    ChatRequest,
    ChatResult,
    OpenAIProvider,
    Provider,
    RetryableError,
    _describe,
    _env_proxy,
    _error_message,
    _retry_after,
    openai_reply,
)


@dataclass
class Endpoint:
    base_url: str
    url: str
    proxy: str | None
    in_flight: int = 0
    sent: int = 0
    failed: int = 0
    failures_in_row: int = 0
    down_until: float = 0.0

    def available(self, now: float) -> bool:
        if self.down_until > now:
            return False
        return self.failures_in_row == 0 or self.in_flight == 0  # after a failure: one probe at a time


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets, paused by 429s (see the module docstring)."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 clock=time.monotonic):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.clock = clock
        self.rate = requests_per_minute  # current request rate (lowered by 429s)
        now = clock()
        self._requests = max(1.0, (self.rpm or 0) / 60)
        self._tokens = max(1.0, (self.tpm or 0) / 60)
        self._stamp = now
        self.paused_until = 0.0
        self.throttled = 0  # 429s seen

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        self._stamp = now
        if self.rpm:
            self._requests = min(max(1.0, self.rate / 60), self._requests + elapsed * self.rate / 60)
        if self.tpm:
            self._tokens = min(max(1.0, self.tpm / 60), self._tokens + elapsed * self.tpm / 60)

    def wait_time(self, tokens: int) -> float:
        """Seconds until a request of `tokens` may go (0: take it now)."""
        now = self.clock()
        self._refill(now)
        wait = max(0.0, self.paused_until - now)
        if self.rpm and self._requests < 1:
            wait = max(wait, (1 - self._requests) * 60 / self.rate)
        if self.tpm:
            need = min(tokens, max(1.0, self.tpm / 60))  # a request bigger than the bucket waits for a full one
            if self._tokens < need:
                wait = max(wait, (need - self._tokens) * 60 / self.tpm)
        if wait == 0:
            self._requests -= 1
            self._tokens -= tokens
        return wait

    async def acquire(self, tokens: int) -> None:
        if not (self.rpm or self.tpm) and self.paused_until <= self.clock():
            return
        while (wait := self.wait_time(tokens)) > 0:
            await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the token bucket by what the server reported; a success also restores the request rate."""
        if self.tpm and actual is not None:
            self._tokens += estimated - actual
        if self.rpm and self.rate < self.rpm:
            self.rate = min(self.rpm, self.rate + 0.02 * self.rpm)

    def throttle(self, retry_after: float | None) -> None:
        self.throttled += 1
        self.paused_until = max(self.paused_until, self.clock() + (1.0 if retry_after is None else retry_after))
        if self.rpm:
            self.rate = max(self.rpm / 10, self.rate * 0.75)


class FleetOpenAIProvider(OpenAIProvider):
    """An OpenAI-compatible named model: its own key variable, one or several base URLs, rate limits."""

    times_out_itself = False  # its session's timeout is `request_timeout`; a run's `--timeout` still bounds `chat`

    def __init__(self, model: str, *, name: str, entry, **kw):
        Provider.__init__(self, model, **kw)
        self.name = name
        if entry.api_key_env:
            api_key = os.environ.get(entry.api_key_env)
            if not api_key:
                raise ConfigError(f"model '{name}' needs ${entry.api_key_env} (its api_key_env in the models file)")
        else:
            api_key = os.environ.get("OPENAI_API_KEY")
        bases = entry.base_urls or [os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"]
        if not api_key and not entry.base_urls and not os.environ.get("OPENAI_BASE_URL"):
            raise ConfigError(f"model '{name}' needs OPENAI_API_KEY, an api_key_env or base_urls in the models file")
        self._headers = {"Authorization": f"Bearer {api_key or 'no-key'}"}
        self.endpoints = [Endpoint(b.rstrip("/"), b.rstrip("/") + "/chat/completions",
                                   _env_proxy(b.rstrip("/") + "/chat/completions")) for b in bases]
        self.url = self.endpoints[0].url
        self.cooldown = 10.0 if entry.cooldown is None else entry.cooldown
        self.limiter = RateLimiter(entry.requests_per_minute, entry.tokens_per_minute)
        # The per-request timeout is aiohttp's (set in _session), so that time waiting for the rate limiter or
        # for a cooled-down fleet is not counted against a request.
        self.request_timeout, self.retry.timeout = self.retry.timeout, None
        self._turn = itertools.count()

    @property
    def spec(self) -> str:
        return self.name

    def _session(self):
        import aiohttp

        return aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(
            limit=self.max_concurrency), timeout=aiohttp.ClientTimeout(total=self.request_timeout))

    async def _pick(self) -> Endpoint:
        while True:
            now = time.monotonic()
            ready = [e for e in self.endpoints if e.available(now)]
            if ready:
                start = next(self._turn) % len(ready)
                ready = ready[start:] + ready[:start]
                return min(ready, key=lambda e: e.in_flight)
            waits = [e.down_until - now for e in self.endpoints if e.down_until > now]
            await asyncio.sleep(min(waits) if waits else 0.01)

    def _fail(self, endpoint: Endpoint, message: str) -> RetryableError:
        """Take a fleet endpoint out for its cool-down; the retry goes to another endpoint at once."""
        endpoint.failed += 1
        if len(self.endpoints) == 1:
            return RetryableError(message)
        endpoint.failures_in_row += 1
        endpoint.down_until = time.monotonic() + self.cooldown * 2 ** min(endpoint.failures_in_row - 1, 4)
        now = time.monotonic()
        soonest = min(max(0.0, e.down_until - now) for e in self.endpoints)
        return RetryableError(f"{message} (endpoint taken out for a cool-down)", retry_after=soonest)

    async def _chat(self, request: ChatRequest) -> ChatResult:
        import aiohttp

        body = self._body(request)
        estimate = 0
        if self.limiter.tpm:
            estimate = len(json.dumps(body["messages"])) // 4 + request.max_tokens * request.n
        await self.limiter.acquire(estimate)
        endpoint = await self._pick()
        endpoint.in_flight += 1
        endpoint.sent += 1
        try:
            async with self._per_loop(self._session).post(endpoint.url, json=body, proxy=endpoint.proxy) as response:
                if response.status >= 400:
                    message = f"HTTP {response.status} from {endpoint.url}: {_error_message(await response.text())}"
                    if response.status == 429:
                        retry_after = _retry_after(response)
                        self.limiter.throttle(retry_after)
                        raise RetryableError(message, retry_after=retry_after)
                    if response.status >= 500:
                        raise self._fail(endpoint, message)
                    if response.status in self.RETRY_STATUSES:
                        raise RetryableError(message)
                    raise ModelCallError(f"{self.spec}: {message}")
                raw = await response.read()
        except TimeoutError:  # slow, not broken (aiohttp's timeout errors are also ClientErrors): no cool-down
            raise
        except aiohttp.ClientError as exc:  # connection refused or reset, bad framing
            raise self._fail(endpoint, f"{endpoint.base_url}: {_describe(exc)}") from exc
        finally:
            endpoint.in_flight -= 1
        try:  # the `openai:` provider's reply validation: a 200 without usable text is a retried failure
            result = openai_reply(raw, endpoint.url)
        except RetryableError as exc:  # a replica answering garbage is taken out like one answering 5xx
            raise self._fail(endpoint, str(exc)) from None
        endpoint.failures_in_row = 0
        actual = None if result.input_tokens is None else result.input_tokens + (result.output_tokens or 0)
        self.limiter.settle(estimate, actual)
        return result

    def stats(self) -> list[dict]:
        now = time.monotonic()
        return [{"base_url": e.base_url, "sent": e.sent, "failed": e.failed, "in_flight": e.in_flight,
                 "down_for_s": round(max(0.0, e.down_until - now), 1)} for e in self.endpoints]
