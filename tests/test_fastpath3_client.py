"""The `openai:` client times each attempt with aiohttp's own timer (no second asyncio timer per request), from the
retry policy in force when the attempt starts."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from skillweave.errors import ModelCallError
from skillweave.providers import core
from skillweave.providers.core import ChatRequest, OpenAIProvider, RetryPolicy

REPLY = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


async def _server(hang: bool):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                if hang:
                    await asyncio.sleep(30)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(REPLY), REPLY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
def counted_timeouts(monkeypatch):
    calls = []
    real = asyncio.timeout

    def counting(delay):
        if delay is not None:  # aiohttp's own uses (its unset connect and read timeouts) pass None
            calls.append(delay)
        return real(delay)

    monkeypatch.setattr(core.asyncio, "timeout", counting)
    return calls


def _request() -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=5, n=1)


def test_a_reply_takes_no_asyncio_timer_of_its_own(monkeypatch, counted_timeouts):
    async def main():
        server, port = await _server(hang=False)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
        provider = OpenAIProvider("m", retry=RetryPolicy(max_attempts=1, timeout=10))
        try:
            result, attempts = await provider.chat(_request())
        finally:
            await provider.aclose()
            server.close()
        return result, attempts

    result, attempts = asyncio.run(main())
    assert result.texts == ["hello"] and attempts == 1
    assert counted_timeouts == []  # the one timer per attempt is aiohttp's


def test_the_policy_in_force_bounds_each_attempt_even_after_the_session_opened(monkeypatch, counted_timeouts):
    """The session is opened under a 10 s policy; a run then sets 0.3 s (`--timeout`): a hanging server is given
    up on after about 0.3 s per attempt, retried as a timeout."""
    async def main():
        fast, fast_port = await _server(hang=False)
        slow, slow_port = await _server(hang=True)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{fast_port}/v1")
        provider = OpenAIProvider("m", retry=RetryPolicy(max_attempts=2, base_delay=0.01, timeout=10))
        try:
            await provider.chat(_request())  # opens the session with the 10 s policy
            provider.retry = provider.policy({"timeout": 0.3})
            provider.url = f"http://127.0.0.1:{slow_port}/v1/chat/completions"
            start = time.perf_counter()
            with pytest.raises(ModelCallError) as caught:
                await provider.chat(_request())
            return time.perf_counter() - start, caught.value
        finally:
            await provider.aclose()
            fast.close()
            slow.close()

    elapsed, error = asyncio.run(main())
    assert error.attempts == 2 and "gave up after 2 attempts" in str(error) and "Timeout" in str(error)
    assert 0.5 < elapsed < 5
    assert counted_timeouts == []


def test_other_providers_still_get_the_policy_timeout(counted_timeouts):
    from skillweave.providers.core import FakeProvider

    provider = FakeProvider("x", retry=RetryPolicy(max_attempts=1, timeout=7.0))
    asyncio.run(provider.chat(_request()))
    assert counted_timeouts == [7.0]
