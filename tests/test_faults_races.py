"""Races and kills: one process continues a run at a time (a lease with liveness), a killed run shows as
interrupted and is taken over by `resume`, and a node re-run on resume does not log its event twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from skillweave.store import Store
from skillweave.store.leases import LeaseHeld, RunLease, get_lease, holder_alive, me, run_liveness


def _count(db: str, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


def _stamp(seconds_ago: float = 0.0) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def test_holder_liveness_rules():
    mine = {**me(), "heartbeat_at": _stamp()}
    assert holder_alive(mine)
    assert not holder_alive({**mine, "heartbeat_at": _stamp(3600)})  # no heartbeat for an hour
    assert not holder_alive({**mine, "pid": 2 ** 22 + 7})  # same host, no such process
    assert not holder_alive({**mine, "proc_start": "1"}) or mine["proc_start"] is None  # a reused pid
    elsewhere = {"pid": 1, "host": socket.gethostname() + "-other", "heartbeat_at": _stamp(5)}
    assert holder_alive(elsewhere) and not holder_alive({**elsewhere, "heartbeat_at": _stamp(120)})


def test_lease_refuses_a_live_holder_and_takes_over_a_dead_one(store):
    run_id = store.create_run("skillmix", {})
    with RunLease(store, run_id):
        with pytest.raises(LeaseHeld, match=f"run {run_id} is being continued by pid {os.getpid()}"):
            RunLease(store, run_id).acquire()
        assert run_liveness(store, store.get_run(run_id)) == "running"
    assert get_lease(store, run_id) is None  # released
    # a lease left by a process that is gone (kill -9 leaves its row behind)
    store.db.conn.execute("INSERT INTO run_leases (run_id, token, pid, host, proc_start, command, acquired_at, "
                          "heartbeat_at) VALUES (?, 't', ?, ?, NULL, '', ?, ?)",
                          [run_id, 2 ** 22 + 7, socket.gethostname(), _stamp(), _stamp()])
    assert run_liveness(store, store.get_run(run_id)) == "interrupted (process gone)"
    lease = RunLease(store, run_id).acquire()
    assert lease.taken_over["pid"] == 2 ** 22 + 7 and get_lease(store, run_id)["pid"] == os.getpid()
    lease.release()


def test_lease_heartbeat_keeps_it_fresh(store):
    run_id = store.create_run("skillmix", {})
    lease = RunLease(store, run_id, heartbeat_seconds=0.05).acquire()
    first = get_lease(store, run_id)["heartbeat_at"]
    _wait_for(lambda: get_lease(store, run_id)["heartbeat_at"] > first, timeout=10)
    lease.release()


def test_second_resume_is_refused_and_a_killed_run_is_taken_over_without_paying_twice(tmp_path, cli_run):
    """Two `resume`s on one run paid 16 calls twice: now the second is refused with the holder named, the first
    takes over the lease the killed run left, and every call key has exactly one successful call."""
    db = str(tmp_path / "race.db")
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "0.15", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "skillweave.cli", "--db", db]
    proc = subprocess.Popen([*cmd, "run", "skillmix", "--model", "fake", "--k", "2", "--n", "6", "--rounds", "1",
                             "--grading-samples", "1", "--concurrency", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    _wait_for(lambda: _count(db, "select count(*) from llm_calls") >= 4)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = 6 * 3
    assert 0 < _count(db, "select count(*) from llm_calls") < total, "the kill must land mid-run"
    [run] = json.loads(cli_run("runs", "list", "--json", db=db)[1])
    assert run["status"] == "interrupted (process gone)"

    slow = {**env, "SKILLWEAVE_FAKE_LATENCY": "30"}  # the first resume holds the run while the second tries
    first = subprocess.Popen([*cmd, "resume", run["id"]], env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    _wait_for(lambda: _count(db, f"select count(*) from run_leases where pid = {first.pid}") == 1)
    second = subprocess.run([*cmd, "resume", run["id"]], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.startswith(f"Error: run {run['id']} is being continued by pid {first.pid}"), second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    os.killpg(first.pid, signal.SIGKILL)  # killed while holding the lease: the next resume takes it over
    first.wait()
    code, _, err = cli_run("resume", run["id"], db=db)
    assert code == 0, err
    assert _count(db, "select count(*) from llm_calls where error is null") == total
    assert _count(db, "select count(distinct call_key) from llm_calls") == total
    assert _count(db, "select count(*) from items where status = 'done'") == 6
    assert _count(db, "select count(*) from run_leases") == 0
    assert Store(db).get_run(run["id"])["status"] == "done"


def test_a_node_rerun_on_resume_logs_its_event_once(cli_run, db_path, monkeypatch):
    """A process that dies between a node's event and its checkpoint re-runs the node on resume: the item's
    history must not show the same transition twice."""
    class Died(BaseException):  # not an Exception: nothing in the run catches it, as with a kill
        pass

    real = Store.add_event
    died = []

    def add_event(self, run_id, item_id, stage, status, reason=""):
        real(self, run_id, item_id, stage, status, reason)
        if stage == "student" and not died:
            died.append(item_id)
            raise Died()

    monkeypatch.setattr(Store, "add_event", add_event)
    with pytest.raises(Died):
        cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "2", "--rounds", "1", "--grading-samples",
                "1", "--concurrency", "1")
    monkeypatch.setattr(Store, "add_event", real)
    store = Store(db_path)
    run_id = store.get_run("latest")["id"]
    code, _, err = cli_run("resume", run_id)
    assert code == 0, err
    assert {i["status"] for i in store.items(run_id)} == {"done"}
    events = [(e["stage"], e["status"]) for e in store.db["events"].rows_where("item_id = ?", died, order_by="id")]
    assert events.count(("student", "generated")) == 1, events


def test_import_skillmix_is_idempotent(cli_run, db_path, tmp_path):
    """The same official outputs imported again (say, after an import killed once it had committed) give the
    existing run, not a duplicate; changed content gives a new run."""
    import csv

    student = tmp_path / "out" / "k2_s10_vdefault_r1" / "model"
    student.mkdir(parents=True)

    def write(text):
        with (student / "records.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["k", "skills", "topic", "text_0", "text_1"])
            writer.writeheader()
            writer.writerow({"k": 2, "skills": "irony, metaphor", "topic": "Sewing", "text_0": "a", "text_1": text})

    write("One sentence.")
    runs = []
    for _ in range(2):
        code, out, err = cli_run("import", "skillmix", str(tmp_path / "out"), "--json")
        assert code == 0, err
        runs.append([r["run_id"] for r in json.loads(out)])
    store = Store(db_path)
    assert runs[0] == runs[1] and store.db["runs"].count == 1 and store.db["items"].count == 1
    write("Another sentence.")
    code, out, err = cli_run("import", "skillmix", str(tmp_path / "out"), "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] != runs[0] and store.db["runs"].count == 2


def test_repeated_leases_do_not_leak_connections(store):
    """A long-lived process (the review page) takes a lease per resume: each heartbeat thread's connection closes."""
    run_id = store.create_run("skillmix", {})
    before = len(store._connections)
    for _ in range(5):
        lease = RunLease(store, run_id, heartbeat_seconds=0.01).acquire()
        _wait_for(lambda: len(store._connections) > before, timeout=10)  # the heartbeat thread opened one
        lease.release()
    assert len(store._connections) == before
