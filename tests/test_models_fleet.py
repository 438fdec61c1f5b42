"""Named models from the models file: a student fleet of 3 local mock servers (one dies mid-run) and a
separate judge endpoint run `run skillmix` to the end; rate limits adapt to 429s."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest
import yaml

from skillweave.store import Store

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def mock_servers():
    """Start mock OpenAI servers in one background event loop; yields start(**kw) -> (url, MockServer)."""
    sys.path.insert(0, str(BENCH))
    from mock_openai import MockServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = []

    def start(latency=0.02, **kw):
        mock = MockServer(latency, **kw)

        async def open_server():
            return await asyncio.start_server(mock.handle, "127.0.0.1", 0)

        server = asyncio.run_coroutine_threadsafe(open_server(), loop).result(10)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", mock

    yield start

    async def close():
        for server in servers:
            server.close()

    asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    sys.path.remove(str(BENCH))


@pytest.fixture
def models_file(tmp_path, monkeypatch):
    path = tmp_path / "models.yaml"
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(path))

    def write(models: dict) -> Path:
        path.write_text(yaml.safe_dump({"models": models}))
        return path

    return write


def test_student_fleet_with_a_failing_replica_and_a_judge_endpoint(mock_servers, models_file, cli_run, db_path,
                                                                   tmp_path):
    logs = [tmp_path / f"student{i}.log" for i in range(3)] + [tmp_path / "judge.log"]
    (a, mock_a), (b, mock_b) = (mock_servers(log=str(logs[0])), mock_servers(log=str(logs[1])))
    c, mock_c = mock_servers(fail_after=3, log=str(logs[2]))  # replica C dies after its 3rd request
    judge_url, mock_judge = mock_servers(log=str(logs[3]))
    models_file({
        "students": {"kind": "openai", "model": "vllm-student", "base_urls": [a, b, c], "cooldown": 60},
        "judge": {"kind": "openai", "model": "judge-model", "base_urls": [judge_url], "attempts": 2},
    })
    code, out, err = cli_run("run", "skillmix", "--model", "students", "--judge", "judge", "--k", "2", "--n", "18",
                             "--rounds", "1", "--grading-samples", "1", "--concurrency", "6")
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    items = list(store.items(run["id"]))
    assert len(items) == 18 and all(i["status"] == "done" for i in items)  # nothing lost
    calls = list(store.db.query("select role, model, error, attempts from llm_calls"))
    assert all(call["error"] is None for call in calls)
    student_calls = [call for call in calls if call["model"] == "vllm-student"]
    judge_calls = [call for call in calls if call["model"] == "judge-model"]
    assert len(student_calls) == 36 and len(judge_calls) == 18
    # the judge endpoint saw only judge calls, every one answered
    assert mock_judge.statuses == [200] * 18
    # the load was spread: the two live replicas share the student calls, C answered 3 before it died
    ok = [mock_a.statuses.count(200), mock_b.statuses.count(200), mock_c.statuses.count(200)]
    assert ok[2] == 3 and sum(ok) == 36
    assert min(ok[:2]) >= 12, ok
    # C was drained: after it died it got only the requests already on their way to it (at most the
    # concurrency), none once it was taken out (its 60 s cool-down outlasts the run)
    failures = mock_c.statuses.count(503)
    assert 1 <= failures <= 6 and len(mock_c.statuses) == 3 + failures
    # each student call that hit the dead replica took exactly one more attempt, on a live one
    assert sum(call["attempts"] - 1 for call in student_calls) == failures
    # the logs on disk say the same
    assert [line.split()[1] for line in logs[2].read_text().splitlines()].count("503") == failures
    assert len(logs[0].read_text().splitlines()) == ok[0] and len(logs[3].read_text().splitlines()) == 18


def test_cooled_down_endpoint_gets_one_probe_and_rejoins(mock_servers, models_file):
    from skillweave.providers.core import ChatRequest, close_clients, get_provider

    good, mock_good = mock_servers(latency=0.0)
    flaky, mock_flaky = mock_servers(latency=0.0, fail_after=1)
    models_file({"pair": {"kind": "openai", "model": "m", "base_urls": [good, flaky], "cooldown": 0.2}})
    provider = get_provider("pair")

    async def go():
        try:
            for _ in range(6):  # sequential: the flaky one answers once, fails once, then is out for 0.2 s
                await provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
            before = len(mock_flaky.statuses)
            await asyncio.sleep(0.25)
            mock_flaky.fail_after = 0  # it recovers
            for _ in range(6):
                await provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
            return before
        finally:
            await close_clients()

    before = asyncio.run(go())
    assert mock_flaky.statuses[:before] == [200, 503]
    assert mock_flaky.statuses[before:].count(200) >= 2  # back in rotation after the cool-down
    assert provider.endpoints[1].failures_in_row == 0


def test_rate_limiter_spaces_requests_and_pauses_on_429():
    from skillweave.providers.fleet import RateLimiter

    now = [0.0]
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=600, clock=lambda: now[0])
    assert limiter.wait_time(5) == 0  # the bucket holds one second's worth: 1 request, 10 tokens
    assert limiter.wait_time(5) == pytest.approx(1.0)  # the next request waits for the request bucket
    now[0] = 1.0
    assert limiter.wait_time(5) == 0
    now[0] = 2.0
    assert limiter.wait_time(50) == 0  # bigger than the token bucket: goes when the bucket is full
    now[0] = 3.0
    assert limiter.wait_time(5) == pytest.approx(3.5)  # 35 tokens short at 10 tokens/s
    limiter.settle(50, 10)  # the server counted 10, not 50: the difference comes back
    assert limiter.wait_time(5) == 0
    now[0] = 10.0
    limiter.throttle(retry_after=2.5)
    assert limiter.rate == 45  # a 429 lowers the request rate by a quarter
    assert limiter.wait_time(1) == pytest.approx(2.5)  # and pauses everything for Retry-After
    now[0] = 12.5
    assert limiter.wait_time(1) == 0
    limiter.settle(1, 1)
    assert limiter.rate == pytest.approx(46.2)  # each success gives back 2% of the configured rate


def test_429_with_retry_after_pauses_the_named_model(mock_servers, models_file):
    from skillweave.providers.core import ChatRequest, close_clients, get_provider

    url, mock = mock_servers(latency=0.0, fail_every=2)  # every 2nd request: 429, Retry-After 0.05
    models_file({"limited": {"kind": "openai", "model": "m", "base_urls": [url], "requests_per_minute": 6000,
                             "max_wait": 1}})
    provider = get_provider("limited")

    async def go():
        try:
            return [await provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}])) for _ in range(3)]
        finally:
            await close_clients()

    results = asyncio.run(go())
    assert [attempts for _, attempts in results] == [1, 2, 2]
    assert provider.limiter.throttled == 2 and provider.limiter.rate < 6000
    assert mock.statuses == [200, 429, 200, 429, 200]


@pytest.mark.parametrize("bad", ["empty_choices", "null_content", "garbage"])
def test_fleet_replica_answering_200_without_usable_content_is_drained(mock_servers, models_file, cli_run, db_path,
                                                                       bad):
    """A replica that answers HTTP 200 with no choices, null content or a body that is not JSON gets the `openai:`
    provider's reply validation: a retried failure that takes it out, never a fatal error or a stored success."""
    good, mock_good = mock_servers(latency=0.0)
    broken, mock_broken = mock_servers(latency=0.0, bad=bad)
    models_file({"students": {"kind": "openai", "model": "m", "base_urls": [broken, good], "cooldown": 60}})
    code, out, err = cli_run("run", "skillmix", "--model", "students", "--judge", "students", "--k", "2", "--n", "4",
                             "--rounds", "1", "--grading-samples", "1", "--concurrency", "2")
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    items = list(store.items(run["id"]))
    assert len(items) == 4 and all(i["status"] == "done" for i in items)
    calls = list(store.db.query("select response, error, attempts from llm_calls"))
    assert calls and all(c["error"] is None for c in calls)
    import json as _json
    assert all(t.strip() for c in calls for t in _json.loads(c["response"]))  # no empty text stored as a success
    assert mock_broken.statuses and set(mock_broken.statuses) == {200}
    # the broken replica was taken out after its first bad replies (at most the concurrency in flight)
    assert len(mock_broken.statuses) <= 2
    assert sum(c["attempts"] - 1 for c in calls) == len(mock_broken.statuses)
