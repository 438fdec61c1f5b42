"""Review under kills and load: a claim whose process died is taken over at once (not after 10 minutes), and
the web page records decisions at once while their threads resume in the background."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from starlette.testclient import TestClient
from test_math2 import _fresh_providers, items, make_store, start  # noqa: F401  (autouse fixture)

from skillweave.agents.review import make_decision, review_queue
from skillweave.decisions import submit_decision
from skillweave.providers.core import FakeProvider, register_provider
from skillweave.store import now
from skillweave.web import create_app

TOKEN = "test-token-0123456789"


@pytest.fixture
def paused(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, summary = start(store, bank, n=2, reviewer="human", max_pairs=2)
    assert summary.paused == 2
    return store, run_id


def test_kill_9_during_review_reject_is_taken_over_by_resume_and_the_next_reviewer(paused, cli_run):
    """`review reject` draws a new pair (model calls); killed mid-way, its item was hidden for 10 minutes."""
    store, run_id = paused
    item_id = items(store, run_id)[0]["id"]
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "30", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skillweave.cli", "--db", store.path, "review", "reject",
                             item_id, "--reason", "too easy"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)

    def resuming() -> bool:
        with sqlite3.connect(store.path) as conn:
            return conn.execute("select count(*) from run_leases where pid = ?", [proc.pid]).fetchone()[0] == 1

    deadline = time.time() + 60
    while not resuming():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert store.get_item(item_id)["status"] == "deciding"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.get_item(item_id)["status"] == "deciding"  # the kill left the claim behind

    code, _, err = cli_run("resume", run_id, db=store.path)
    assert code == 4, err  # the run is paused for review again: exit 4
    assert f"item {item_id}: its reviewer's process is gone" in err
    assert store.get_item(item_id)["status"] == "review" and item_id in {i["id"] for i in review_queue(store)}
    reopened = [e for e in store.db["events"].rows_where("item_id = ? and status = 'reopened'", [item_id])]
    assert len(reopened) == 1 and "reject by" in reopened[0]["reason"] and "not applied" in reopened[0]["reason"]
    result = submit_decision(store, item_id, make_decision("approve", reviewer="next"))
    assert result["status"] == "accepted"


def test_a_dead_claim_is_open_to_the_next_reviewer_at_once(paused):
    store, run_id = paused
    item_id = items(store, run_id)[0]["id"]
    claim = json.dumps({"pid": 4194311, "host": socket.gethostname(), "proc_start": None, "claimed_at": now()})
    store.db.execute("update items set status = 'deciding', payload = json_set(payload, '$.review_claim', json(?)) "
                     "where id = ?", [claim, item_id])
    assert item_id in {i["id"] for i in review_queue(store)}  # no 10-minute wait: pid 4194311 does not exist
    assert submit_decision(store, item_id, make_decision("approve", reviewer="x"))["status"] == "accepted"
    assert "review_claim" not in store.get_item(item_id)["payload"]


def test_web_page_records_at_once_and_resumes_in_the_background(paused):
    """A reject whose new pair waits on a slow model no longer holds the page: the POST returns, the queue page
    serves and shows the decision's progress, a second reviewer's decision is recorded, and both finish."""
    store, run_id = paused
    release = threading.Event()
    calls = []

    def slow(request):
        calls.append(request)
        release.wait(timeout=20)  # the model answers only when the test says so
        return request.meta.get("fake_reply")

    register_provider("fake", FakeProvider("default", script=slow), max_concurrency=8)
    app = create_app(store, token=TOKEN, settle_seconds=0.3)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=False)
    first, second = (i["id"] for i in items(store, run_id))
    try:
        start_at = time.perf_counter()
        posted = client.post(f"/item/{first}/decide", data={"action": "reject", "csrf": TOKEN, "reason": "easy"})
        assert posted.status_code == 303 and time.perf_counter() - start_at < 10
        assert "resumes in the background" in posted.headers["location"].replace("+", " ")
        assert store.get_item(first)["status"] in ("deciding", "dropped")  # recorded at once, out of the queue
        assert first not in {i["id"] for i in review_queue(store)}
        page = client.get("/")
        assert page.status_code == 200 and 'class="job-running"' in page.text and first in page.text
        second_post = client.post(f"/item/{second}/decide", data={"action": "approve", "csrf": TOKEN})
        assert second_post.status_code == 303 and store.get_item(second)["status"] == "deciding"
        assert calls, "the rejected item's thread is waiting on the model"
    finally:
        release.set()
    assert app.state.resumer.wait(60)
    jobs = {job["item_id"]: job for job in app.state.resumer.jobs()}
    assert jobs[first]["state"] == "done" and jobs[second]["state"] == "done", jobs
    assert store.get_item(second)["status"] == "accepted"
    assert store.get_item(first)["status"] == "dropped" and len(calls) > 1  # its thread drew and ran a new pair
    assert "job-done" in client.get("/").text


def test_web_decision_on_a_run_held_elsewhere_fails_visibly_and_the_item_returns(paused):
    """While another process continues the run (its lease is held), a decision cannot resume the thread: the
    page says so, the job is listed as failed with the reason, and the item is back in the queue."""
    from skillweave.store.leases import RunLease

    store, run_id = paused
    item_id = items(store, run_id)[0]["id"]
    app = create_app(store, token=TOKEN)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=False)
    with RunLease(store, run_id):
        posted = client.post(f"/item/{item_id}/decide", data={"action": "approve", "csrf": TOKEN})
        assert app.state.resumer.wait(30)
    assert posted.status_code == 303 and "back in the queue" in posted.headers["location"].replace("+", " ")
    [job] = app.state.resumer.jobs()
    assert job["state"] == "failed" and "is being continued by pid" in job["error"]
    assert store.get_item(item_id)["status"] == "review" and "review_claim" not in store.get_item(item_id)["payload"]
    assert 'class="job-failed"' in client.get("/").text
    assert submit_decision(store, item_id, make_decision("approve", reviewer="x"))["status"] == "accepted"
