"""`--workers N`: several processes on one machine execute one run in one store (graphs/workers.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import run_content

from skillweave.store import Store

RUN = ("--model", "fake", "--k", "2,3", "--n", "3", "--rounds", "2", "--grading-samples", "2")


def _count(db: str, sql: str, args=()) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def test_two_workers_make_the_same_run_as_one(cli_run, tmp_path):
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    code, _, err = cli_run("run", "skillmix", *RUN, db=one)
    assert code == 0, err
    code, _, err = cli_run("run", "skillmix", *RUN, "--workers", "2", "--concurrency", "2", db=two)
    assert code == 0, err
    assert "workers: 1: 6/6 threads, 2: 6/6 threads" in err  # both processes ran their half of the 12 threads
    assert run_content(two) == run_content(one)  # items, texts, grades, report
    run = Store(two).get_run("latest")
    assert run["status"] == "done" and run["error"] is None
    calls = _count(two, "select count(*) from llm_calls")
    assert calls == _count(one, "select count(*) from llm_calls") == 12 * 3  # two student turns, one judge call (n=2) per thread
    assert _count(two, "select count(distinct call_key) from llm_calls") == calls  # no call made twice
    assert _count(two, "select count(*) from run_leases") == 0  # the run's and the workers' leases are released


@pytest.mark.parametrize("bad", ["0", "-1", "65", "two"])
def test_bad_worker_counts_are_usage_errors(cli_run, db_path, bad):
    why = "is not a valid integer" if bad == "two" else f"{bad} is not in the range 1<=x<=64"
    for command in (("run", "skillmix", *RUN), ("resume", "latest")):
        code, _, err = cli_run(*command, "--workers", bad)
        assert code == 2 and err.startswith("Error: Invalid value for '--workers'") and why in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(db_path) or _count(db_path, "select count(*) from runs") == 0


def test_workers_refused_where_processes_cannot_share_the_run(cli_run, db_path, tmp_path):
    code, _, err = cli_run("run", "skillmix", "--model", "local", "--k", "2", "--n", "1", "--workers", "2")
    assert code == 2 and err.startswith("Error: --workers 2: --model local is the embedded local model"), err
    code, _, err = cli_run("run", "skillmix", *RUN, "--judge", "local", "--workers", "2")
    assert code == 2 and "--judge local" in err, err
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "2", "--workers", "2")
    assert code == 2 and err.startswith("Error: --workers 2: instruct-skillmix runs cannot be split"), err
    code, _, err = cli_run("run", "skillmix", *RUN, "--workers", "2", db=":memory:")
    assert code == 2 and "in-memory store" in err, err
    assert not os.path.exists(db_path) or _count(db_path, "select count(*) from runs") == 0  # nothing created
    # --workers 1 is the single-process run, also with the local model's rules
    code, _, err = cli_run("run", "skillmix", *RUN, "--workers", "1")
    assert code == 0 and "workers:" not in err, err


def _start(db: str, *args: str, latency: str = "0.4"):
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": latency, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "skillweave.cli", "--db", db, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _cli(db: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "0"}
    return subprocess.run([sys.executable, "-m", "skillweave.cli", "--db", db, *args], env=env,
                          capture_output=True, text=True, timeout=180)


def _worker_pids(db: str) -> list[int]:
    try:
        conn = sqlite3.connect(db)
        try:
            return [r[0] for r in conn.execute("select pid from run_leases where run_id like '%#worker-%'")]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def _wait(db: str, calls: int, workers: int, deadline: float = 90) -> None:
    """Until `workers` worker processes hold leases and at least `calls` model calls are stored."""
    end = time.time() + deadline
    while time.time() < end:
        time.sleep(0.1)
        try:
            if len(_worker_pids(db)) == workers and _count(db, "select count(*) from llm_calls") >= calls:
                return
        except sqlite3.OperationalError:
            continue
    raise AssertionError("the run did not get going")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead too
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


PLAN = ("--model", "fake", "--k", "2", "--n", "8", "--rounds", "2", "--grading-samples", "2", "--concurrency", "1")
THREADS, CALLS = 16, 16 * 3


def _finished_exactly_once(db: str) -> None:
    assert _count(db, "select count(*) from items") == THREADS
    assert _count(db, "select count(*) from items where status = 'done'") == THREADS
    assert _count(db, "select count(*) from llm_calls where error is null") == CALLS  # nothing paid twice
    assert _count(db, "select count(distinct call_key) from llm_calls") == CALLS
    assert _count(db, "select count(*) from grades") == THREADS * 2
    assert _count(db, "select status from runs") and \
        sqlite3.connect(db).execute("select status from runs").fetchone()[0] == "done"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_a_worker_then_resume_loses_nothing_and_pays_nothing_twice(tmp_path):
    db = str(tmp_path / "w.db")
    proc = _start(db, "run", "skillmix", *PLAN, "--workers", "2")
    _wait(db, 6, workers=2)
    run_id = sqlite3.connect(db).execute("select id from runs").fetchone()[0]
    refused = _cli(db, "resume", run_id)  # the run is being worked on: a second process is refused
    assert refused.returncode == 2 and refused.stderr.startswith("Error: run ") and "being continued" in \
        refused.stderr, refused.stderr
    victim = _worker_pids(db)[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err  # the other worker finished its part; the lost threads make it exit 3
    assert "killed by signal 9" in err and "resume" in err
    before = _count(db, "select count(*) from llm_calls")
    assert before < CALLS, "the kill must land mid-run"
    run = sqlite3.connect(db).execute("select status, error from runs").fetchone()
    assert run[0] == "failed" and "killed by signal 9" in run[1]
    done = _cli(db, "resume", run_id, "--workers", "2")
    assert done.returncode == 0, done.stderr
    _finished_exactly_once(db)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_parent_takes_its_workers_along_and_resume_finishes_the_run(tmp_path):
    db = str(tmp_path / "p.db")
    proc = _start(db, "run", "skillmix", *PLAN, "--workers", "2")
    _wait(db, 6, workers=2)
    workers = _worker_pids(db)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
    proc.wait()
    end = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < end:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "workers outlived their parent"
    assert 0 < _count(db, "select count(*) from llm_calls") < CALLS
    run_id = sqlite3.connect(db).execute("select id from runs").fetchone()[0]
    done = _cli(db, "resume", run_id, "--workers", "3")  # another N: the plan is split again
    assert done.returncode == 0, done.stderr
    _finished_exactly_once(db)
    again = _cli(db, "resume", run_id, "--workers", "2")  # a finished run: nothing runs, nothing is paid
    assert again.returncode == 0 and f"{THREADS} already finished" in again.stderr, again.stderr
    assert _count(db, "select count(*) from llm_calls") == CALLS


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_the_workers_and_the_run_resumes(tmp_path):
    db = str(tmp_path / "c.db")
    proc = _start(db, "run", "skillmix", *PLAN, "--workers", "2")
    _wait(db, 4, workers=2)
    workers = _worker_pids(db)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Interrupted: run " in err and "resume" in err, err
    assert not any(_alive(pid) for pid in workers)
    assert sqlite3.connect(db).execute("select status from runs").fetchone()[0] == "interrupted"
    assert _count(db, "select count(*) from run_leases") == 0
    done = _cli(db, "resume", "latest", "--workers", "2")
    assert done.returncode == 0, done.stderr
    _finished_exactly_once(db)


# ---- --max-cost across workers ------------------------------------------------------------------------------


def test_a_workers_budget_counts_what_the_other_workers_spent(tmp_path, cheap_models):
    """Another worker's stored calls count against this worker's budget once it re-reads the store; its own
    settled calls count even before they are committed."""
    from skillweave.graphs.workers import SharedBudget
    from skillweave.providers.prices import BudgetExceeded

    store = Store(str(tmp_path / "b.db"))
    run_id = store.create_run("skillmix", {})
    budget = SharedBudget(1.0, 0.0, store=store, run_id=run_id, every=0.0)
    messages = [{"role": "user", "content": "hi"}]
    budget.settle(budget.reserve("cheap", messages, 100, 1), 0.25)  # this worker: $0.25
    assert budget.spent == pytest.approx(0.25)
    assert budget.reserve("cheap", messages, 100, 1) < 0.05  # a call of up to 100 tokens costs at most ~$0.04
    budget.settle(0.04, 0.0)
    store.record_call(run_id=run_id, call_key="other", cost_usd=0.98)  # another worker: $0.98, in the store
    with pytest.raises(BudgetExceeded):  # the same call no longer fits once the store is read
        budget.reserve("cheap", messages, 100, 1)
    assert budget.spent == pytest.approx(0.98)  # the store's total (this worker's $0.25 is not stored yet)
    store.record_call(run_id=run_id, call_key="mine", cost_usd=0.25)  # this worker's call, now committed
    budget.refresh()
    assert budget.spent == pytest.approx(1.23)


@pytest.mark.slow
def test_two_workers_stop_at_the_budget_and_resume_raises_it(cli_run, db_path, tmp_path, monkeypatch, cheap_models):
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    base = ("run", "skillmix", "--k", "2", "--n", "6", "--rounds", "1", "--grading-samples", "2", "--model", "cheap",
            "--judge", "cheap", "--concurrency", "1", "--workers", "2")
    code, _, err = cli_run(*base, "--max-cost", "0.5")  # the whole run costs about $0.66
    assert code == 4 and "stopped by its budget" in err, err
    costs = [r[0] for r in sqlite3.connect(db_path).execute("select cost_usd from llm_calls")]
    # passed by at most the other worker's call in flight (concurrency 1 per worker)
    assert 0 < sum(costs) <= 0.5 + max(costs)
    run_id, status = sqlite3.connect(db_path).execute("select id, status from runs").fetchone()
    assert status == "budget"
    code, _, err = cli_run("resume", run_id, "--max-cost", "5", "--workers", "2")
    assert code == 0, err
    assert _count(db_path, "select count(*) from items where status = 'done'") == 6
    assert _count(db_path, "select count(distinct call_key) from llm_calls where error is null") == \
        _count(db_path, "select count(*) from llm_calls")
    # the resumed run's status as another connection reads it, in an intact file (tests/test_workers_store_locks.py)
    assert _count(db_path, "select count(*) from runs where status = 'done'") == 1
    assert sqlite3.connect(db_path).execute("pragma integrity_check").fetchone()[0] == "ok"


def test_python_api_workers(tmp_path):
    import skillweave
    from skillweave.errors import UsageError

    settings = {"model": "fake", "k": [2, 3], "n": 3, "rounds": 2, "grading_samples": 2}
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    assert skillweave.run("skillmix", db=one, **settings).status == "done"
    handle = skillweave.run("skillmix", db=two, workers=2, concurrency=2, **settings)
    assert handle.status == "done" and run_content(two) == run_content(one)
    assert _count(two, "select count(distinct call_key) from llm_calls") == _count(two, "select count(*) from llm_calls")
    refused = str(tmp_path / "refused.db")
    for bad in ({"workers": 0}, {"workers": "2"}, {"workers": 2, "model": "local"}):
        with pytest.raises(UsageError):
            skillweave.run("skillmix", db=refused, **{**settings, **bad})
    assert not os.path.exists(refused) or _count(refused, "select count(*) from runs") == 0  # refused before the run row
