"""--batch: OpenAI Batch API and Anthropic Message Batches against a local mock (tests/batch_mock.py): upload,
create, poll, collect, partial failures, expiry, and a killed process that resumes polling instead of
resubmitting."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.batch_mock import BatchMock

RUN = ["run", "skillmix", "--model", "openai:gpt-4o-mini", "--k", "2", "--n", "2", "--rounds", "1",
       "--grading-samples", "1", "--batch"]


@pytest.fixture
def mock(monkeypatch):
    server = BatchMock()
    base = server.start()
    monkeypatch.setenv("OPENAI_BASE_URL", base)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("SKILLWEAVE_BATCH_WINDOW", "0.2")
    monkeypatch.setenv("SKILLWEAVE_BATCH_POLL", "0.05")
    monkeypatch.delenv("SKILLWEAVE_MODELS", raising=False)
    yield server
    server.stop()


def _q(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_batch_run_collects_replies_at_half_price_and_records_a_failed_request(mock, cli_run, db_path):
    failing = {}

    def fail(line):  # the second request of the first batch fails with its own HTTP 400
        if not mock.created or len(mock.created) > 1:
            return False
        failing.setdefault("id", mock.created[0][1])
        return line["custom_id"] == failing["id"]

    mock.fail = fail
    code, out, err = cli_run(*RUN)
    assert code == 3, err  # the failed request fails its item: exit 3
    assert len(mock.created) >= 2  # the students' turns, then the judge: one batch per wave of requests
    keys = [k for batch in mock.created for k in batch]
    assert len(keys) == len(set(keys))
    rows = _q(db_path, "select call_key, input_tokens, output_tokens, cost_usd, error from llm_calls")
    ok = [r for r in rows if r[4] is None]
    assert ok and all(r[3] == pytest.approx((100 * 0.15 + r[2] * 0.60) / 1e6 * 0.5) for r in ok)  # batch price
    failed = [r for r in rows if r[4] is not None]
    assert [r[0] for r in failed] == [failing["id"]]
    assert "HTTP 400: scripted bad request" in failed[0][4] and "batch_1" in failed[0][4]
    assert _q(db_path, "select count(*) from items where status = 'failed'")[0][0] == 1
    assert {s for (s,) in _q(db_path, "select status from batch_jobs")} == {"completed"}


def test_expired_batch_fails_the_rest_and_retry_failed_submits_only_those(mock, cli_run, db_path):
    mock.expire = True
    code, _, err = cli_run(*RUN)
    assert code == 3, err  # expired requests fail their items: exit 3
    expired = {k for (k,) in _q(db_path, "select call_key from llm_calls where error like '%batch_expired%'")}
    assert expired and _q(db_path, "select count(*) from llm_calls where error is null")[0][0] > 0
    assert "expired" in {s for (s,) in _q(db_path, "select status from batch_jobs")}
    before = len(mock.created)
    mock.expire = False
    code, _, err = cli_run("resume", "latest", "--retry-failed")
    assert code == 0, err
    assert set(mock.created[before]) == expired  # the first new batch resubmits exactly the expired requests
    assert _q(db_path, "select status from runs")[0][0] == "done"
    assert _q(db_path, "select count(*) from items where status = 'failed'")[0][0] == 0


def test_killed_process_resumes_polling_instead_of_resubmitting(mock, tmp_path):
    db = str(tmp_path / "batch.db")
    mock.hold = True
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "skillweave.cli", "--db", db]
    proc = subprocess.Popen([*cmd, *RUN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and mock.polls < 3:  # submitted, stored and polled a few times
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(mock.created) == 1
    stored = {k for (k,) in _q(db, "select call_key from batch_requests")}
    assert stored == set(mock.created[0])
    assert _q(db, "select count(*) from llm_calls")[0][0] == 0
    mock.hold = False
    done = subprocess.run([*cmd, "resume", "latest"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    keys = [k for batch in mock.created for k in batch]
    assert len(keys) == len(set(keys)), "a request of the killed process's batch was submitted again"
    assert stored <= {k for (k,) in _q(db, "select call_key from llm_calls where error is null")}
    assert _q(db, "select status from runs")[0][0] == "done"


ANTHROPIC_RUN = [*RUN[:3], "anthropic:claude-3-5-haiku-20241022", *RUN[4:]]


def test_anthropic_message_batches_with_an_errored_and_an_expired_request(mock, cli_run, db_path):
    mock.expire = True  # the second half of each batch expires; of the first batch's first half, the first errs
    mock.fail = lambda line: line is mock.batches["msgbatch_1"]["lines"][0]
    code, _, err = cli_run(*ANTHROPIC_RUN[:7], "4", *ANTHROPIC_RUN[8:])  # --n 4
    assert code == 3, err  # errored and expired requests fail their items: exit 3
    rows = _q(db_path, "select call_key, output_tokens, cost_usd, error from llm_calls")
    ok = [r for r in rows if r[3] is None]
    assert ok and all(r[2] == pytest.approx((100 * 0.8 + r[1] * 4.0) / 1e6 * 0.5) for r in ok)  # batch price
    errors = [r[3] for r in rows if r[3] is not None]
    assert any("errored: invalid_request_error: scripted bad request" in e for e in errors)
    assert any("request expired" in e for e in errors)
    assert {p for (p,) in _q(db_path, "select provider from batch_jobs")} == {"anthropic"}
    before = len(mock.created)
    mock.expire, mock.fail = False, (lambda line: False)
    code, _, err = cli_run("resume", "latest", "--retry-failed")
    assert code == 0, err
    assert len(mock.created) > before and _q(db_path, "select status from runs")[0][0] == "done"


def test_anthropic_killed_process_resumes_polling(mock, tmp_path):
    db = str(tmp_path / "batch.db")
    mock.hold = True
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "skillweave.cli", "--db", db]
    proc = subprocess.Popen([*cmd, *ANTHROPIC_RUN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and mock.polls < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(mock.created) == 1
    assert {k for (k,) in _q(db, "select call_key from batch_requests")} == set(mock.created[0])
    mock.hold = False
    done = subprocess.run([*cmd, "resume", "latest"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    keys = [k for batch in mock.created for k in batch]
    assert len(keys) == len(set(keys)), "a request of the killed process's batch was submitted again"
    assert _q(db, "select status from runs")[0][0] == "done"
