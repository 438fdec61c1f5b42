"""The `openai:` client's JSON codec (providers/core.py): orjson where installed, with the standard library's
behaviour kept: the server receives the same request value (non-ASCII text, options, content parts), a body
orjson refuses is still sent, and what a reply parses to (or why it is refused) does not change."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import json_server

from skillweave.providers import core
from skillweave.providers.core import ChatRequest, OpenAIProvider, RetryableError, RetryPolicy, openai_reply


@pytest.fixture()
def server(monkeypatch):
    bodies: list[dict] = []
    ok = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Grüße ✓"}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, ensure_ascii=False)

    def respond(body):
        bodies.append(body)
        return 200, ok

    srv, url = json_server(respond)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    yield bodies
    srv.shutdown()


def _chat(request: ChatRequest):
    provider = OpenAIProvider("m", retry=RetryPolicy(max_attempts=1, timeout=10))

    async def go():
        try:
            return await provider.chat(request)
        finally:
            await provider.aclose()

    return provider, asyncio.run(go())


def test_the_server_receives_the_same_request_value(server):
    messages = [{"role": "system", "content": "Réponds en français — « ok »"},
                {"role": "user", "content": [{"type": "text", "text": "naïve 🍰"},
                                             {"type": "image", "mime": "image/png", "data": "aGk="}]}]
    request = ChatRequest(messages=messages, temperature=0.25, max_tokens=7, n=2,
                          options={"seed": 3, "json_schema": {"name": "s", "schema": {"type": "object"}}})
    provider, (result, attempts) = _chat(request)
    assert (result.texts, result.input_tokens, result.output_tokens, attempts) == (["Grüße ✓"], 3, 2, 1)
    assert server == [json.loads(json.dumps(provider._body(request)))]
    assert server[0]["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,aGk="


def test_a_body_orjson_refuses_is_encoded_as_before(server):
    if core.orjson is None:
        pytest.skip("orjson is not installed: the standard library encodes every body")
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], options={"logit_bias": {50256: -100}})
    with pytest.raises(TypeError):
        core.orjson.dumps({50256: -100})  # integer keys: orjson refuses, json.dumps writes "50256"
    _chat(request)
    assert server[0]["logit_bias"] == {"50256": -100}


def test_replies_parse_as_with_the_standard_library():
    body = b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": NaN, "completion_tokens": 1}}'
    assert openai_reply(body, "u").texts == ["x"]  # NaN: orjson refuses, json.loads accepts, so it is accepted
    for broken in (b"<html>502</html>", b'{"choices": [', b"\xff\xfe"):
        with pytest.raises(RetryableError, match="not JSON"):
            openai_reply(broken, "u")
