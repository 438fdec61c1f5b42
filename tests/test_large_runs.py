"""Large runs: visible failure (exit statuses, key checks, reports, Ctrl-C, progress, logs), re-judging, the reply
cache, shards and merging stores. Everything on the fake provider."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import run_content

from skillweave.providers.core import FakeProvider, register_provider
from skillweave.store import Store

SMALL = ("--model", "fake", "--k", "2", "--n", "2", "--rounds", "1", "--grading-samples", "1")


def _runs(db_path) -> list[dict]:
    return Store(db_path).list_runs() if __import__("os").path.exists(db_path) else []


# ---- failure is visible ------------------------------------------------------------------------------------
def test_exit_status_0_when_all_finished_3_when_items_failed(cli_run):
    code, _, err = cli_run("run", "skillmix", *SMALL)
    assert code == 0, err
    code, _, err = cli_run("run", "skillmix", *SMALL, "--judge", "fake:fail")
    assert code == 3, err
    run_id = err.split()[1]
    code, _, err = cli_run("resume", run_id)  # still failed: still 3
    assert code == 3


@pytest.mark.parametrize("spec, option", [("openai:gpt-4o", "--model"), ("anthropic:claude-x", "--judge")])
def test_missing_api_key_fails_before_any_run_row(cli_run, db_path, spec, option):
    code, out, err = cli_run("run", "skillmix", *SMALL, option, spec)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "API_KEY" in lines[0] and "no run was created" in err
    assert _runs(db_path) == []


def test_bad_endpoint_url_fails_before_any_run_row(cli_run, db_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000/v1")
    code, _, err = cli_run("run", "skillmix", *SMALL[2:], "--model", "openai:m")
    assert code == 2 and err.startswith("Error: OPENAI_BASE_URL") and _runs(db_path) == []


def test_all_failed_run_reports_failures_not_nan(cli_run):
    code, out, err = cli_run("run", "skillmix", *SMALL, "--judge", "fake:fail")
    assert code == 3
    assert "nan" not in out and "no graded items (2 failed)" in out
    code, out, _ = cli_run("report", "latest")
    assert "nan" not in out and "no graded items (2 failed)" in out


def test_single_combination_shows_no_nan_se(cli_run):
    code, out, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "1", "--rounds", "1",
                             "--grading-samples", "1")
    assert code == 0, err
    assert "nan" not in out and "1.000 (1 combination, no SE)" in out


def test_ctrl_c_prints_the_run_id_and_the_resume_command(cli_run, db_path, monkeypatch):
    import skillweave.graphs.runtime as runtime

    def interrupted(pipeline, store, run_id, **kw):
        store.set_run_status(run_id, "interrupted")
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "run_pipeline", interrupted)
    code, _, err = cli_run("run", "skillmix", *SMALL)
    run_id = Store(db_path).get_run("latest")["id"]
    assert code == 130
    assert f"run {run_id} stopped" in err and f"skillweave --db {db_path} resume {run_id}" in err


def test_progress_lines_on_stderr_when_not_a_terminal(cli_run, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    code, _, err = cli_run("run", "skillmix", *SMALL, "--progress-every", "0.02")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("progress skillmix: ")]
    assert lines, err
    assert "threads" in lines[-1] and "done" in lines[-1] and "failed" in lines[-1] and "tokens" in lines[-1]
    code, _, err = cli_run("run", "skillmix", *SMALL, "--progress-every", "0")
    assert code == 0 and "progress skillmix" not in err


def test_progress_bar_counts_done_failed_and_tokens(store):
    from skillweave.graphs.progress import Progress
    from skillweave.graphs.runtime import RunSummary

    run_id = store.create_run("skillmix", {})
    store.record_call(run_id=run_id, role="student", input_tokens=10, output_tokens=5, response=["x"])
    summary = RunSummary(run_id=run_id, threads=3, done=1, failed=1)
    bar = Progress(3, "skillmix", enabled=True, summary=summary, store=store, run_id=run_id, every=0)
    bar.update(2)
    assert bar.line().startswith("progress skillmix: 2/3 threads, 1 done, 1 failed, 0 paused, 15 tokens")


def test_progress_bar_on_a_terminal_shows_done_failed_tokens(store):
    import io

    from skillweave.graphs.progress import Progress
    from skillweave.graphs.runtime import RunSummary

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run_id = store.create_run("skillmix", {})
    store.record_call(run_id=run_id, role="judge", input_tokens=7, output_tokens=3, response=["x"])
    stream = Terminal()
    bar = Progress(4, "skillmix", enabled=True, summary=RunSummary(run_id=run_id, done=1, failed=1), store=store,
                   run_id=run_id, stream=stream)
    bar.update(2)
    bar._bar.refresh()
    text = stream.getvalue()
    assert "2/4" in text and "done=1" in text and "failed=1" in text and "tokens=10" in text
    bar.close()


def test_logs_show_prints_a_whole_call_and_logs_says_when_none_failed(cli_run, db_path):
    cli_run("run", "skillmix", *SMALL)
    code, out, _ = cli_run("logs", "--errors")
    assert code == 0 and "(no model calls)" not in out and "no failed model calls" in out
    call = Store(db_path).db["llm_calls"].rows_where("role = 'judge'", limit=1).__next__()
    code, out, err = cli_run("logs", "show", call["id"][:8])
    assert code == 0, err
    request = json.loads(call["request"])
    assert request["messages"][-1]["content"].splitlines()[0] in out  # the request, not a shortened cell
    assert json.loads(call["response"])[0].splitlines()[-1] in out  # the whole reply
    assert f"{call['input_tokens']} in, {call['output_tokens']} out" in out
    code, _, err = cli_run("logs", "show", "zzzzzzzz")
    assert code == 2 and err.startswith("Error: no model call")


# ---- re-judge --------------------------------------------------------------------------------------------
def test_rejudge_grades_again_without_calling_the_student(cli_run, db_path):
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "3", "--rounds", "1",
                           "--grading-samples", "1")
    assert code == 0, err
    store = Store(db_path)
    source = store.get_run("latest")
    student = FakeProvider("default", script=lambda request: AssertionError("the student was called"))
    register_provider("fake", student, max_concurrency=8)
    code, out, err = cli_run("rejudge", source["id"], "--judge", "fake:second", "--grading-samples", "2")
    assert code == 0, err
    assert student.calls == []
    new = store.get_run("latest")
    assert new["id"] != source["id"] and new["config"]["rejudge_of"] == source["id"]
    assert new["config"]["judge"] == "fake:second" and new["config"]["grading_samples"] == 2
    old_items = {i["id"]: i for i in store.items(source["id"])}
    new_items = list(store.items(new["id"]))
    assert len(new_items) == 3 and {i["parent_id"] for i in new_items} == set(old_items)
    for item in new_items:
        assert item["status"] == "done"
        assert item["payload"]["text_1"] == old_items[item["parent_id"]]["payload"]["text_1"]
        assert [g["judge"] for g in store.grades(item["id"])] == ["fake:second"] * 2
    roles = [r["role"] for r in store.db["llm_calls"].rows_where("run_id = ?", [new["id"]])]
    assert roles == ["judge"] * 3


def test_rejudge_of_items_without_text_fails_them_without_calling_the_student(cli_run, db_path):
    code, _, _ = cli_run("run", "skillmix", *SMALL[2:], "--model", "fake:fail", "--judge", "fake")
    assert code == 3
    source = Store(db_path).get_run("latest")
    student = FakeProvider("fail")
    register_provider("fake:fail", student, max_concurrency=8)
    code, _, err = cli_run("rejudge", source["id"], "--judge", "fake")
    assert code == 3 and "2 items have no text" in err
    assert student.calls == []
    store = Store(db_path)
    new = store.get_run("latest")
    items = list(store.items(new["id"]))
    assert {i["status"] for i in items} == {"failed"}
    assert all(i["error"].startswith("rejudge: source item") for i in items)
    assert store.db["llm_calls"].count_where("run_id = ?", [new["id"]]) == 0


def test_rejudge_refuses_unsupported_pipelines(cli_run, db_path):
    store = Store(db_path)
    run_id = store.create_run("math2", {})
    code, _, err = cli_run("rejudge", run_id, "--judge", "fake")
    assert code == 2 and "rejudge supports skillmix runs" in err
    assert len(store.list_runs()) == 1


# ---- reply cache -----------------------------------------------------------------------------------------
def test_reply_cache_serves_a_second_run_with_zero_provider_calls(cli_run, db_path, tmp_path):
    provider = FakeProvider("default")
    register_provider("fake", provider, max_concurrency=8)
    cache = str(tmp_path / "replies.db")
    code, out1, err = cli_run("run", "skillmix", *SMALL, "--reply-cache", cache)
    assert code == 0, err
    first = len(provider.calls)
    assert first == 6  # 2 combinations x (2 student turns + 1 judge call)
    code, out2, err = cli_run("run", "skillmix", *SMALL, "--reply-cache", cache)
    assert code == 0, err
    assert len(provider.calls) == first  # the second run made no provider call
    assert out1 == out2
    store = Store(db_path)
    second = store.get_run("latest")["id"]
    calls = list(store.db["llm_calls"].rows_where("run_id = ?", [second]))
    assert len(calls) == 6 and {c["attempts"] for c in calls} == {0}
    # without the cache the same run pays again
    code, _, err = cli_run("run", "skillmix", *SMALL)
    assert len(provider.calls) == 2 * first


# ---- shards and merge ------------------------------------------------------------------------------------
SHARDED = ("--model", "fake", "--k", "2,3", "--n", "3", "--rounds", "2", "--grading-samples", "2")


def test_sharded_run_merged_equals_the_unsharded_run(cli_run, tmp_path):
    whole = str(tmp_path / "whole.db")
    assert cli_run("run", "skillmix", *SHARDED, db=whole)[0] == 0
    parts = [str(tmp_path / f"part{i}.db") for i in (1, 2, 3)]
    threads = 0
    for i, part in enumerate(parts, start=1):
        per_machine = ("--concurrency", str(i + 1))  # may differ per machine: same run id, same plan
        code, _, err = cli_run("run", "skillmix", *SHARDED, "--shard", f"{i}/3", *per_machine, db=part)
        assert code == 0, err
        threads += int(err.split(": ")[1].split()[0])
    assert threads == 12  # every thread of the plan ran in exactly one shard
    merged = str(tmp_path / "all.db")
    code, out, err = cli_run("merge", *parts, "--into", merged, db=merged)
    assert code == 0, err
    assert run_content(merged) == run_content(whole)
    store = Store(merged)
    assert len(store.list_runs()) == 1
    run = store.get_run("latest")
    assert run["config"]["merged_shards"] == ["1/3", "2/3", "3/3"] and "shard" not in run["config"]
    item = next(store.items(run["id"]))
    lineage = store.lineage(item["id"])
    assert lineage["llm_calls"] and lineage["grades"] and lineage["prompt_versions"]
    # merging the same stores again adds nothing
    before = {t: store.db[t].count for t in ("items", "llm_calls", "grades", "events")}
    assert cli_run("merge", *parts, "--into", merged, db=merged)[0] == 0
    assert {t: Store(merged).db[t].count for t in before} == before


def test_merge_refuses_conflicting_duplicates_and_leaves_the_target_unchanged(cli_run, tmp_path):
    part1, part2 = str(tmp_path / "p1.db"), str(tmp_path / "p2.db")
    for i, part in ((1, part1), (2, part2)):
        assert cli_run("run", "skillmix", *SHARDED, "--shard", f"{i}/2", db=part)[0] == 0
    target = str(tmp_path / "all.db")
    assert cli_run("merge", part1, "--into", target, db=target)[0] == 0
    conn = sqlite3.connect(part2)  # part2 now disagrees with part1 about one grade both stores hold
    grade = Store(part1).db["grades"].rows.__next__()
    conn.execute("INSERT OR REPLACE INTO grades (id, item_id, run_id, call_id, judge, sample_index, raw, points, "
                 "score, parse_status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'tampered', '[0]', 0, 'ok', '')",
                 [grade["id"], grade["item_id"], grade["run_id"], grade["call_id"], grade["judge"],
                  grade["sample_index"]])
    conn.commit()
    conn.close()
    counts = {t: Store(target).db[t].count for t in ("items", "llm_calls", "grades", "events")}
    code, _, err = cli_run("merge", part2, "--into", target, db=target)
    assert code == 2
    assert err.startswith("Error: grades id=") and "differs" in err and "target is unchanged" in err
    assert {t: Store(target).db[t].count for t in counts} == counts


def test_shard_and_merge_bad_input(cli_run, tmp_path):
    for bad in ("3/2", "0/2", "a/b", "2"):
        code, _, err = cli_run("run", "skillmix", *SMALL, "--shard", bad)
        assert code == 2 and err.startswith("Error: --shard"), (bad, err)
    code, _, err = cli_run("merge", str(tmp_path / "none.db"), "--into", str(tmp_path / "t.db"))
    assert code == 2 and err.startswith("Error: no store at")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    code, _, err = cli_run("merge", str(other), "--into", str(tmp_path / "t.db"))
    assert code == 2 and "not a skillweave store" in err


@pytest.mark.slow
def test_real_sigint_prints_the_resume_command_and_resume_finishes(tmp_path):
    """A real SIGINT in a child process (not a mocked KeyboardInterrupt): exit 130, the hint, then resume works."""
    import os
    import signal
    import subprocess
    import sys
    import time

    db = str(tmp_path / "sigint.db")
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "0.3"}
    args = [sys.executable, "-m", "skillweave", "--db", db, "run", "skillmix", "--model", "fake", "--k", "2", "--n",
            "40", "--rounds", "1", "--concurrency", "2", "--grading-samples", "1"]
    child = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not os.path.exists(db) and time.monotonic() < deadline:  # the run is being created
        time.sleep(0.2)
    time.sleep(2.5)  # a few calls in: the whole run takes about 20 s at this latency
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    run_id = Store(db).get_run("latest")["id"]
    assert child.returncode == 130, err
    assert f"Interrupted: run {run_id} stopped; continue it with: skillweave --db {db} resume {run_id}" in err
    assert Store(db).get_run(run_id)["status"] == "interrupted"
    assert 0 < Store(db).db["llm_calls"].count < 120  # stopped part-way
    env["SKILLWEAVE_FAKE_LATENCY"] = "0"
    done = subprocess.run([sys.executable, "-m", "skillweave", "--db", db, "resume", run_id], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {i["status"] for i in Store(db).items(run_id)} == {"done"}
