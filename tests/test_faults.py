"""Faults a model server can throw at a run, from a 127.0.0.1 server: each reply that carries no usable text is a
failed, retried call (never a stored success), waits are bounded, attempts are counted truthfully, one thread's
exception never takes the others down, and a 30% fault matrix ends every run finished or resumable."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from skillweave.errors import ModelCallError
from skillweave.providers.core import (
    ChatRequest,
    FakeProvider,
    OpenAIProvider,
    RetryPolicy,
    register_provider,
)
from skillweave.store import Store, jload

STUDENT = "Answer: Sewing is patience, stitched one careful loop at a time. Explanation: metaphor."
JUDGE = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 5 + "| Total | 5 |"

FAULTS = ("429", "500", "reset", "hang", "truncated", "malformed_json", "no_choices", "null_content",
          "empty_content", "garbage")


def _ok_body(body: dict) -> bytes:
    prompt = json.dumps(body.get("messages", []))
    text = JUDGE if "grading" in prompt else STUDENT
    return json.dumps({"choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant",
                                                                                      "content": text}}
                                   for i in range(int(body.get("n") or 1))],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()


class FaultServer:
    """Chat completions on 127.0.0.1; each request gets the next scripted fault, else (with probability `rate`,
    seeded) the next fault kind in turn, else a good reply. `hang` sleeps past the client's timeout; `reset` closes with RST."""

    def __init__(self, rate: float = 0.0, seed: int = 0, faults=FAULTS, hang_seconds: float = 3.0):
        self.rate, self.faults, self.hang_seconds = rate, faults, hang_seconds
        self.random = random.Random(seed)
        self.script: list[str] = []
        self.served: list[str] = []
        self.drawn = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with server.lock:
                    if server.script:
                        fault = server.script.pop(0)
                    elif server.random.random() < server.rate:  # the faults in turn, so every kind occurs
                        fault = server.faults[server.drawn % len(server.faults)]
                        server.drawn += 1
                    else:
                        fault = "ok"
                    server.served.append(fault)
                server.answer(self, fault, body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, handler, fault: str, body: dict) -> None:
        def send(status: int, payload: bytes, headers: dict | None = None, length: int | None = None):
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("content-length", str(len(payload) if length is None else length))
            handler.end_headers()
            handler.wfile.write(payload)

        if fault == "ok":
            send(200, _ok_body(body))
        elif fault.startswith("429"):
            retry_after = fault.partition(":")[2] or "0.01"
            send(429, b'{"error": {"message": "rate limited"}}', {"retry-after": retry_after})
        elif fault == "500":
            send(500, b'{"error": {"message": "internal error"}}')
        elif fault == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            handler.connection.close()
        elif fault == "hang":
            time.sleep(self.hang_seconds)
        elif fault == "truncated":
            payload = _ok_body(body)
            send(200, payload[: len(payload) // 2], length=len(payload))
            handler.close_connection = True
        elif fault == "malformed_json":
            send(200, b'{"choices": [{"message": {"content": "half')
        elif fault == "no_choices":
            send(200, b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}}')
        elif fault == "null_content":
            send(200, b'{"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "stop"}]}')
        elif fault == "empty_content":
            send(200, b'{"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "length"}]}')
        elif fault == "garbage":
            send(200, bytes(random.Random(len(self.served)).randrange(256) for _ in range(64)))
        else:
            raise AssertionError(fault)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_server(monkeypatch):
    servers = []

    def start(**kw) -> FaultServer:
        server = FaultServer(**kw)
        servers.append(server)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        return server

    yield start
    for server in servers:
        server.close()


def _chat(provider, **kw):
    async def go():
        try:
            return await asyncio.wait_for(provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}],
                                                                    **kw)), 20)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def _policy(**kw):
    return RetryPolicy(**{"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.05, "timeout": 10.0, **kw})


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_a_retried_failure_never_a_success(fault_server, fault):
    """One faulty reply, then a good one: the call succeeds on its second attempt with the good text."""
    server = fault_server(hang_seconds=4.0)
    server.script[:] = [fault]
    result, attempts = _chat(OpenAIProvider("m", retry=_policy(timeout=1.0 if fault == "hang" else 10.0)))
    assert (result.texts, attempts) == ([STUDENT], 2)
    assert server.served == [fault, "ok"]


@pytest.mark.parametrize("fault", ["no_choices", "null_content", "empty_content", "malformed_json", "garbage"])
def test_a_reply_without_usable_text_fails_with_its_reason_after_every_attempt(fault_server, fault):
    server = fault_server()
    server.script[:] = [fault] * 3
    with pytest.raises(ModelCallError, match="gave up after 3 attempts") as failure:
        _chat(OpenAIProvider("m", retry=_policy()))
    assert failure.value.retryable and failure.value.attempts == 3
    assert any(word in str(failure.value) for word in ("no choices", "no text content", "not JSON"))


@pytest.mark.parametrize("header", ["nan", "inf", "-5", "3600"])
def test_retry_after_is_finite_and_capped(fault_server, header):
    """`Retry-After: nan` slept forever and 3600 waited an hour: non-finite or negative values fall back to the
    backoff, and every wait is capped by the policy's longest wait."""
    server = fault_server()
    server.script[:] = [f"429:{header}"]
    start = time.perf_counter()
    result, attempts = _chat(OpenAIProvider("m", retry=_policy(max_delay=0.2)))
    assert attempts == 2 and time.perf_counter() - start < 5


def test_retry_policy_delay_rejects_non_finite_values():
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0)
    assert policy.delay(1, 3600.0) == 2.0 and policy.delay(1, -1.0) == 0.0
    for bad in (float("nan"), float("inf")):
        assert 0 <= policy.delay(3, bad) <= 2.0


def test_a_failed_call_stores_the_attempts_it_made(cli_run, db_path):
    """A fatal error on the first attempt was stored as 5 attempts (the policy's maximum)."""
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--judge", "fake:fail", "--k", "2", "--n", "1",
                           "--rounds", "1", "--grading-samples", "1")
    assert code == 3, err  # items failed: exit 3 (docs/large-runs.md)
    failed = list(Store(db_path).db["llm_calls"].rows_where("error is not null"))
    assert [c["attempts"] for c in failed] == [1]


def test_cli_timeout_and_attempts_reach_the_provider(cli_run, db_path, fault_server):
    """--timeout and --max-attempts (for every model, or SPEC=value for one) bound each call of the run."""
    server = fault_server(hang_seconds=2.0)
    server.script[:] = ["hang"] * 2
    start = time.perf_counter()
    code, _, err = cli_run("run", "skillmix", "--model", "openai:m", "--k", "2", "--n", "1", "--rounds", "1",
                           "--grading-samples", "1", "--concurrency", "1", "--timeout", "5",
                           "--timeout", "openai:m=0.3", "--max-attempts", "2", "--max-retry-wait", "0.01")
    assert code == 3, err  # the hung calls failed their item: exit 3
    assert time.perf_counter() - start < 10
    store = Store(db_path)
    item = next(store.items(store.get_run("latest")["id"]))
    assert item["status"] == "failed" and "gave up after 2 attempts" in item["error"]
    assert [c["attempts"] for c in store.db["llm_calls"].rows_where("error is not null")] == [2]
    assert store.get_run("latest")["config"]["retry"] == {"*": {"timeout": 5.0, "max_attempts": 2,
                                                                "max_retry_wait": 0.01},
                                                          "openai:m": {"timeout": 0.3}}


def test_one_thread_raising_never_takes_down_the_others(cli_run, db_path, monkeypatch):
    """A node that raises (here: the grade parser, on one item) fails that thread's item with the reason; the
    other threads finish, and `resume` continues the broken thread once the cause is gone."""
    from skillweave.agents import skillmix

    real, broken = skillmix.grade_points, {"on": True, "item": None}

    def grade_points(raw, k, text, **kw):
        if broken["on"] and broken["item"] in (None, text):
            broken["item"] = text
            raise IndexError("list index out of range")
        return real(raw, k, text, **kw)

    monkeypatch.setattr(skillmix, "grade_points", grade_points)
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "6", "--rounds", "1",
                           "--grading-samples", "1", "--concurrency", "1")
    store = Store(db_path)
    run = store.get_run("latest")
    items = list(store.items(run["id"]))
    crashed = [i for i in items if i["status"] != "done"]
    assert code == 0 and "1 raised" in err, err
    assert len(crashed) == 1 and crashed[0]["status"] == "failed" and "raised IndexError" in crashed[0]["error"]
    assert len(items) == 6
    assert run["status"] == "failed" and "resume" in run["error"]
    broken["on"] = False
    judge_calls = store.db["llm_calls"].count_where("role = 'judge'")
    code, _, err = cli_run("resume", run["id"])
    assert code == 0, err
    assert {i["status"] for i in store.items(run["id"])} == {"done"}
    assert store.get_run(run["id"])["status"] == "done"
    assert store.db["llm_calls"].count_where("role = 'judge'") == judge_calls  # the stored reply was reused


def test_a_reply_with_no_or_empty_samples_is_never_a_success(store):
    """A provider answering with no texts (or empty ones) gives a failed call, not a stored empty success."""
    from skillweave.agents.llm import RunContext, call_template

    replies = iter([[], ["  "], []])
    register_provider("fake:empty", FakeProvider("empty", script=lambda r: next(replies),
                                                 retry=RetryPolicy(max_attempts=3, base_delay=0)))
    ctx = RunContext(store, store.create_run("t", {}), {})
    values = {"skills": [], "topic": "x", "k": 1, "sentence_limit": "one", "text": "t"}
    with pytest.raises(ModelCallError, match="gave up after 3 attempts: RetryableError: reply without text"):
        asyncio.run(call_template(ctx, item_id=None, role="judge", template="skillmix/judge", values=values,
                                  model="fake:empty"))
    [call] = store.db["llm_calls"].rows
    assert call["error"] and call["response"] is None and call["attempts"] == 3


def test_fault_matrix_at_30_percent_every_run_finishes_or_ends_resumable(cli_run, db_path, fault_server):
    """429, 500, reset, hang, truncated, malformed JSON, no choices, null/empty content and garbage at 30%:
    the run finishes; no done item holds an empty or unparsed reply; every failed call and item has a reason;
    `resume --retry-failed` finishes what failed, and no successful reply is paid for twice."""
    server = fault_server(rate=0.3, seed=21, hang_seconds=1.5)
    options = ["--timeout", "0.5", "--max-attempts", "3", "--max-retry-wait", "0.02"]
    code, _, err = cli_run("run", "skillmix", "--model", "openai:m", "--k", "2", "--n", "8", "--rounds", "1",
                           "--grading-samples", "2", "--concurrency", "8", *options)
    assert code in (0, 3), err  # 3: some items failed (they end resumable)
    store = Store(db_path)
    run_id = store.get_run("latest")["id"]
    for attempt in range(10):
        items = list(store.items(run_id))
        for item in items:
            if item["status"] == "done":
                assert item["payload"]["output_0"].strip() and item["payload"]["text_1"].strip()
                assert {g["parse_status"] for g in store.grades(item["id"])} == {"ok"}
            else:
                assert item["status"] == "failed" and item["error"], item
        calls = list(store.db["llm_calls"].rows_where("run_id = ?", [run_id]))
        for call in calls:
            if call["error"] is None:
                assert all(text.strip() for text in jload(call["response"]))
            else:
                assert call["response"] is None and 1 <= call["attempts"] <= 3
        if all(i["status"] == "done" for i in items):
            print(f"fault matrix: {len(server.served)} requests, {attempt} resume(s)")
            break
        code, _, err = cli_run("resume", run_id, "--retry-failed")
        assert code in (0, 3), err
    assert {i["status"] for i in store.items(run_id)} == {"done"}
    assert store.get_run(run_id)["status"] == "done"
    assert set(server.served) == {"ok", *FAULTS}, server.served  # every fault kind was met
    assert 0.2 < 1 - server.served.count("ok") / len(server.served) < 0.45
    keys = [r["call_key"] for r in store.db["llm_calls"].rows_where("run_id = ? and error is null", [run_id])]
    assert len(keys) == len(set(keys)) == 8 * 3


@pytest.fixture
def anthropic_server(monkeypatch):
    """A 127.0.0.1 Anthropic messages endpoint answering scripted (status, body, headers), then a good reply."""
    from conftest import json_server

    script: list[tuple[int, str, dict]] = []
    served = []
    bodies = []
    good = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                       "content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 3, "output_tokens": 1}})

    def respond(body):
        bodies.append(body)
        status, text, headers = script.pop(0) if script else (200, good, {})
        served.append(status)
        return status, text, headers

    server, url = json_server(respond)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    yield script, served, bodies
    server.shutdown()
    server.server_close()


def test_anthropic_reply_without_text_and_bad_retry_after_are_retried(anthropic_server):
    """Also: the sampling temperature reaches the request body (the 1.x SDK no longer takes it as an argument;
    passing it raised TypeError before any request was made)."""
    from skillweave.providers.core import AnthropicProvider

    script, served, bodies = anthropic_server
    empty = json.dumps({"id": "msg_0", "type": "message", "role": "assistant", "model": "m", "content": [],
                        "stop_reason": "max_tokens", "usage": {"input_tokens": 3, "output_tokens": 0}})
    limited = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    script[:] = [(200, empty, {}), (429, limited, {"retry-after": "nan"}), (529, limited, {})]
    start = time.perf_counter()
    result, attempts = _chat(AnthropicProvider("m", retry=_policy(max_attempts=4, max_delay=0.2)))
    assert (result.texts, attempts, served) == (["fine"], 4, [200, 429, 529, 200])
    assert bodies[-1]["temperature"] == 0.7 and bodies[-1]["model"] == "m"
    assert time.perf_counter() - start < 10
    script[:] = [(200, empty, {})] * 2
    with pytest.raises(ModelCallError, match="gave up after 2 attempts: .*without text content .*max_tokens"):
        _chat(AnthropicProvider("m", retry=_policy(max_attempts=2)))
