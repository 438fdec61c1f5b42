"""Skill-Mix end to end on the fake provider: items, calls, grades, lineage, failures and resume."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from skillweave.pipelines import get_pipeline
from skillweave.providers.core import FakeProvider, register_provider
from skillweave.store import Store


def test_run_stores_items_calls_grades_and_lineage(cli_run, db_path):
    code, out, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2,3", "--n", "3", "--rounds", "2",
                             "--grading-samples", "3")
    assert code == 0, err
    assert "Ratio of Full Marks" in out
    store = Store(db_path)
    run = store.get_run("latest")
    items = list(store.items(run["id"]))
    assert len(items) == 2 * 3 * 2 and all(i["status"] == "done" for i in items)
    assert len({(i["combo_index"], i["round"]) for i in items}) == len(items)
    # rounds share the same combinations
    by_combo = {}
    for i in items:
        by_combo.setdefault(i["combo_index"], set()).add((tuple(i["skills"]), i["topic"]))
    assert all(len(v) == 1 for v in by_combo.values())
    calls = store.db["llm_calls"].count
    assert calls == len(items) * 3  # two student turns + one judge call (3 samples) each
    lineage = store.lineage(items[0]["id"])
    assert {p["name"] for p in lineage["prompt_versions"]} == {"skillmix/student", "skillmix/judge"}
    assert len(lineage["grades"]) == 3
    assert lineage["run"]["config"]["k"] == [2, 3]
    assert lineage["catalogs"].keys() == {"skills", "topics"}
    # the fake reply obeys the sentence limit, so every item gets full marks
    code, out, _ = cli_run("report", "latest", "--json")
    import json

    report = json.loads(out)
    assert report["metrics"]["2"]["Ratio of Full Marks"]["mean"] == 1.0
    assert report["metrics"]["3"]["Skill Fraction"]["n"] == 3


def test_failed_calls_are_recorded_and_mark_items_failed(cli_run, db_path):
    code, out, err = cli_run("run", "skillmix", "--model", "fake", "--judge", "fake:fail", "--k", "2", "--n", "2",
                             "--rounds", "1")
    assert code == 3, err  # items failed: docs/large-runs.md
    store = Store(db_path)
    items = list(store.items(store.get_run("latest")["id"]))
    assert {i["status"] for i in items} == {"failed"}
    assert all(i["error"].startswith("grade: fake:fail") for i in items)
    errors = list(store.db["llm_calls"].rows_where("error is not null"))
    assert len(errors) == 2 and all(e["response"] is None for e in errors)
    assert "2" in out.split("\n")[2]  # the failed-items column counts them


def test_resume_retry_failed_reruns_only_failed_threads(cli_run, db_path):
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--judge", "fake:fail", "--k", "2", "--n", "2",
                           "--rounds", "1")
    assert code == 3, err
    store = Store(db_path)
    run = store.get_run("latest")
    # the judge is back: point the run at a working judge, then retry the failed threads
    store.db["runs"].update(run["id"], {"config": __import__("json").dumps({**run["config"], "judge": "fake"})})
    student_calls = store.db["llm_calls"].count_where("role = 'student'")
    code, _, err = cli_run("resume", run["id"])
    assert code == 3 and store.db["llm_calls"].count_where("role = 'judge' and error is null") == 0
    code, _, err = cli_run("resume", run["id"], "--retry-failed")
    assert code == 0, err
    assert {(i["status"], i["error"]) for i in store.items(run["id"])} == {("done", None)}
    assert store.db["llm_calls"].count_where("role = 'student'") == student_calls  # stored replies reused
    assert store.db["llm_calls"].count_where("role = 'judge' and error is null") == 2


def test_transient_failures_are_retried(cli_run, db_path, monkeypatch):
    from skillweave.providers import core as providers

    monkeypatch.setattr(providers.RetryPolicy, "base_delay", 0.0)
    code, _, err = cli_run("run", "skillmix", "--model", "fake:flaky", "--judge", "fake:flaky", "--k", "2", "--n",
                           "1", "--rounds", "1")
    assert code == 0, err
    store = Store(db_path)
    calls = list(store.db["llm_calls"].rows)
    assert all(c["error"] is None and c["attempts"] == 2 for c in calls)


def test_judge_sees_only_revised_text(store):
    import asyncio

    from skillweave.agents.llm import RunContext
    from skillweave.graphs.runtime import execute

    seen = []

    def script(request):
        text = request.messages[-1]["content"]
        if "grading" in text:
            seen.append(text)
            return "| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 0 |\n| e | 1 |"
        return "Answer: DRAFT ONE." if len(request.messages) == 1 else "Answer: REVISED TEXT. Explanation: x"

    register_provider("fake:scripted", FakeProvider("scripted", script=script))
    store.save_catalog("s", "skills", [{"name": f"s{i}"} for i in range(5)])
    config = {"k": [2], "n": 1, "rounds": 1, "seed": 1, "model": "fake:scripted", "judge": "fake:scripted",
              "grading_samples": 1, "temperature": 0.7, "judge_temperature": 0.7, "max_tokens": 50,
              "student_template": "skillmix/student", "judge_template": "skillmix/judge",
              "skills_catalog": store.save_catalog("s", "skills", [{"name": f"s{i}"} for i in range(5)]),
              "topics_catalog": store.save_catalog("t", "topics", [{"name": "Knots"}])}
    run_id = store.create_run("skillmix", config)
    asyncio.run(execute(get_pipeline("skillmix"), RunContext(store, run_id, config), progress=False))
    assert len(seen) == 1 and "REVISED TEXT." in seen[0] and "DRAFT ONE" not in seen[0]
    (item,) = store.items(run_id)
    assert store.grades(item["id"])[0]["points"] == [1, 1, 1, 0, 1]


def test_bad_input_gets_one_line_and_exit_2(cli_run):
    for args, needle in [
        (("run", "skillmix", "--model", "gtp-4o"), "unknown model spec 'gtp-4o'"),
        (("run", "skillmix", "--k", "two"), "--k 'two'"),
        (("run", "skillmix", "--k", "99", "--model", "fake"), "exceeds"),
        (("run", "skillmix", "--skills", "/nonexistent.csv", "--model", "fake"), "does not exist"),
        (("run", "skillmix", "--judge-template", "skillmix/nope", "--model", "fake"), "unknown template"),
        (("report", "nope"), "no run 'nope'"),  # after a command that created the store (report creates none)
    ]:
        code, out, err = cli_run(*args)
        assert code == 2, (args, err)
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_run_row_when_validation_fails(cli_run, db_path):
    cli_run("run", "skillmix", "--judge-template", "skillmix/nope", "--model", "fake")
    assert Store(db_path).list_runs() == []


def _count(db, sql):
    return sqlite3.connect(db).execute(sql).fetchone()[0]


def test_resume_after_kill_9_finishes_exactly_the_plan(tmp_path):
    """kill -9 mid-run, then `skillweave resume`: planned items exactly once, no stored call made twice."""
    db = str(tmp_path / "resume.db")
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "0.15", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "skillweave.cli", "--db", db]
    proc = subprocess.Popen([*cmd, "run", "skillmix", "--model", "fake", "--k", "2", "--n", "6", "--rounds", "2",
                             "--grading-samples", "2", "--concurrency", "3"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            done_calls = _count(db, "select count(*) from llm_calls")
        except sqlite3.OperationalError:
            continue
        if done_calls >= 8:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    planned = 6 * 2
    total_calls = planned * 3
    before = _count(db, "select count(*) from llm_calls")
    assert 0 < before < total_calls, "the kill must land mid-run"
    status = sqlite3.connect(db).execute("select status from runs").fetchone()[0]
    assert status == "running"  # killed: nothing got to mark it

    env["SKILLWEAVE_FAKE_LATENCY"] = "0"
    run_id = sqlite3.connect(db).execute("select id from runs").fetchone()[0]
    done = subprocess.run([*cmd, "resume", run_id], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _count(db, "select count(*) from items") == planned
    assert _count(db, "select count(*) from items where status = 'done'") == planned
    assert _count(db, "select count(*) from llm_calls where error is null") == total_calls
    assert _count(db, "select count(distinct call_key) from llm_calls") == total_calls
    assert _count(db, "select count(*) from grades") == planned * 2
    assert sqlite3.connect(db).execute("select status from runs").fetchone()[0] == "done"
    # resuming a finished run changes nothing
    again = subprocess.run([*cmd, "resume", run_id], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stderr
    assert _count(db, "select count(*) from llm_calls") == total_calls
