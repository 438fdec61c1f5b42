"""Large runs, the last pieces: cost in the progress bar and line, `--shard I/N` on every run command whose plan is
fixed (a sharded run merged equals the unsharded run), and the refusal where it is not. Fake provider only."""

from __future__ import annotations

import io

import pytest
from conftest import run_content

from skillweave.store import Store

SMALL = ("--k", "2", "--n", "2", "--rounds", "1", "--grading-samples", "1")



# ---- cost in the progress bar and the progress line -------------------------------------------------------
def _progress(store, run_id, stream=None):
    from skillweave.graphs.progress import Progress
    from skillweave.graphs.runtime import RunSummary

    return Progress(4, "skillmix", enabled=True, summary=RunSummary(run_id=run_id, done=1, failed=0), store=store,
                    run_id=run_id, every=0, stream=stream)


def test_progress_line_shows_spend_and_unknown_never_zero(store):
    run_id = store.create_run("skillmix", {})
    bar = _progress(store, run_id)
    assert "cost $0," in bar.line()  # no call yet: nothing spent
    store.record_call(run_id=run_id, role="student", input_tokens=10, output_tokens=5, response=["x"], cost_usd=None)
    assert "15 tokens, cost unknown (1 calls unpriced)," in bar.line()  # unpriced: unknown, not $0
    store.record_call(run_id=run_id, role="judge", input_tokens=4, output_tokens=1, response=["x"], cost_usd=0.0125)
    assert "20 tokens, cost at least $0.0125 (1 calls unpriced)," in bar.line()
    other = store.create_run("skillmix", {})
    store.record_call(run_id=other, role="judge", input_tokens=4, output_tokens=1, response=["x"], cost_usd=0.5)
    store.record_call(run_id=other, role="judge", error="boom")  # a failed call costs nothing and is not unpriced
    assert "5 tokens, cost $0.5000," in _progress(store, other).line()


def test_progress_bar_on_a_terminal_shows_cost(store):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run_id = store.create_run("skillmix", {})
    store.record_call(run_id=run_id, role="judge", input_tokens=7, output_tokens=3, response=["x"], cost_usd=0.25)
    stream = Terminal()
    bar = _progress(store, run_id, stream=stream)
    bar.update(1)
    bar._bar.refresh()
    assert "tokens=10" in stream.getvalue() and "cost=$0.2500" in stream.getvalue()
    bar.close()
    unpriced = store.create_run("skillmix", {})
    store.record_call(run_id=unpriced, role="judge", input_tokens=7, output_tokens=3, response=["x"])
    stream = Terminal()
    bar = _progress(store, unpriced, stream=stream)
    bar.update(1)
    bar._bar.refresh()
    assert "cost=unknown (1 calls unpriced)" in stream.getvalue()
    bar.close()


def test_progress_lines_of_a_run_show_its_cost(cli_run, db_path, cheap_models, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    code, _, err = cli_run("run", "skillmix", *SMALL, "--model", "cheap", "--judge", "cheap", "--progress-every", "0.02")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("progress skillmix: ")]
    assert lines and all(", cost $" in line for line in lines), err
    assert any(", cost $0," not in line for line in lines)  # spend grew while the run ran
    code, _, err = cli_run("run", "skillmix", *SMALL, "--model", "fake", "--progress-every", "0.02")
    lines = [line for line in err.splitlines() if line.startswith("progress skillmix: ")]
    assert code == 0 and lines and any("cost unknown (" in line for line in lines), err
    assert not any(", cost $" in line and ", cost $0," not in line for line in lines)  # never a price for fake


# ---- --shard on every run command with a fixed plan ------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("math2", "--model", "fake", "--n", "5", "--max-rounds", "1", "--consistency-samples", "1"),
    ("conceptmix", "--model", "fake", "--grader", "fake", "--image-model", "render", "--k", "1,2", "--n", "2"),
    ("chart-eval", "--data", "{charts}", "--model", "fake", "--batch-size", "2"),
], ids=["math2", "conceptmix", "chart-eval"])
def test_sharded_run_merged_equals_the_unsharded_run_beyond_skillmix(cli_run, tmp_path, args):
    if "{charts}" in args:
        from skillweave.charts.synthetic import generate_synthetic_set

        generate_synthetic_set(tmp_path / "charts", n=4, seed=5)
        args = tuple(str(tmp_path / "charts") if a == "{charts}" else a for a in args)
    whole = str(tmp_path / "whole.db")
    code, _, err = cli_run("run", *args, db=whole)
    assert code == 0, err
    parts = [str(tmp_path / f"part{i}.db") for i in (1, 2)]
    for i, part in enumerate(parts, start=1):
        code, _, err = cli_run("run", *args, "--shard", f"{i}/2", db=part)
        assert code == 0, err
        run = Store(part).get_run("latest")
        assert run["id"].startswith(f"{args[0]}-shards-") and run["config"]["shard"] == f"{i}/2"
    merged = str(tmp_path / "all.db")
    code, _, err = cli_run("merge", *parts, "--into", merged, db=merged)
    assert code == 0, err
    assert Store(merged).get_run("latest")["config"]["merged_shards"] == ["1/2", "2/2"]
    whole_content, merged_content = run_content(whole), run_content(merged)
    assert whole_content["items"] and merged_content == whole_content
    one_shard = run_content(parts[0])  # a shard alone ran part of the plan: it differs from the whole run
    assert one_shard != whole_content
    if args[0] == "conceptmix":  # each shard drew its images beside its own store; merge copies them over
        store = Store(merged)
        names = {i["payload"]["image"] for i in store.items(store.get_run("latest")["id"]) if i["payload"].get("image")}
        assert names and all((tmp_path / "all-images" / name).is_file() for name in names)


@pytest.mark.parametrize("pipeline,args,why", [
    ("instruct-skillmix", ("--model", "fake", "--n", "2"), "near-duplicate filter"),
    ("extract-skills", ("--model", "fake"), "one thread"),
])
def test_shard_refused_where_a_run_cannot_be_split(cli_run, db_path, pipeline, args, why):
    code, _, err = cli_run("run", pipeline, *args, "--shard", "1/2")
    assert code == 2 and err.startswith(f"Error: --shard: {pipeline} runs cannot be split") and why in err, err
    assert not Store(db_path).list_runs() and not Store(db_path).db["catalogs"].count  # nothing stored


def test_shard_option_on_every_run_command(cli_run):
    for command in ("skillmix", "math2", "conceptmix", "chart-eval", "instruct-skillmix", "extract-skills"):
        code, out, _ = cli_run("run", command, "--help")
        assert code == 0 and "--shard" in out, command
    code, _, err = cli_run("run", "math2", "--model", "fake", "--n", "2", "--shard", "3/2")
    assert code == 2 and err.startswith("Error: --shard '3/2'"), err


# ---- other gaps of the large-runs work -------------------------------------------------------------------
def test_reply_cache_variable_serves_run_math2_too(cli_run, tmp_path, monkeypatch):
    cache = tmp_path / "replies.db"
    monkeypatch.setenv("SKILLWEAVE_REPLY_CACHE", str(cache))
    args = ("run", "math2", "--model", "fake", "--n", "2", "--max-rounds", "1", "--consistency-samples", "1")
    first, second = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert cli_run(*args, db=first)[0] == 0
    assert Store(first).get_run("latest")["config"]["reply_cache"] == str(cache) and cache.exists()
    assert cli_run(*args, db=second)[0] == 0
    calls = list(Store(second).db["llm_calls"].rows)
    assert calls and all(c["attempts"] == 0 and c["error"] is None for c in calls)  # every reply from the cache


def test_chart_eval_ask_that_failed_fails_its_item_exit_3_and_retry_failed_asks_again(cli_run, db_path, tmp_path):
    from skillweave.charts.synthetic import generate_synthetic_set
    from skillweave.providers.core import FakeProvider, clear_providers, register_provider

    generate_synthetic_set(tmp_path / "charts", n=2, seed=5)
    down = {"on": True}

    def outage(request):
        if down["on"]:
            raise RuntimeError("provider down")
        return request.meta["fake_reply"]

    register_provider("fake:outage", FakeProvider("outage", script=outage), max_concurrency=4)
    try:
        code, _, err = cli_run("run", "chart-eval", "--data", str(tmp_path / "charts"), "--model", "fake:outage",
                               "--judge", "fake", "--max-attempts", "1", "--concurrency", "4")
        assert code == 3, err
        store = Store(db_path)
        run_id = store.get_run("latest")["id"]
        items = list(store.items(run_id))
        assert items and all(i["status"] == "failed" and "provider down" in i["error"] for i in items)
        down["on"] = False
        code, _, err = cli_run("resume", run_id, "--retry-failed")
        assert code == 0, err
        items = list(Store(db_path).items(run_id))
        assert all(i["status"] == "done" and i["error"] is None and i["payload"]["response"] for i in items)
    finally:
        clear_providers()


def test_math2_dry_run_projects_the_run_and_stores_nothing(cli_run, db_path, cheap_models):
    import os
    import sqlite3

    args = ("run", "math2", "--model", "cheap", "--n", "3", "--max-rounds", "1", "--consistency-samples", "2")
    code, out, err = cli_run(*args, "--dry-run")
    assert code == 0, err
    assert out.startswith("dry run of math2: 3 threads") and not os.path.exists(db_path)
    projected = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    low = float(projected["total"][4].lstrip("$"))
    code, _, err = cli_run(*args)
    assert code == 0, err
    con = sqlite3.connect(db_path)
    calls = dict(con.execute("select role, count(*) from llm_calls group by role").fetchall())
    actual = con.execute("select sum(cost_usd) from llm_calls").fetchone()[0]
    con.close()
    assert {stage: int(p[1]) for stage, p in projected.items() if stage != "total"} == calls
    assert abs(low - actual) <= 0.2 * actual, (low, actual)


def test_progress_every_on_every_run_command(cli_run, monkeypatch):
    for command in ("skillmix", "math2", "conceptmix", "chart-eval", "instruct-skillmix", "extract-skills"):
        code, out, _ = cli_run("run", command, "--help")
        assert code == 0 and "--progress-every" in out, command
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    code, _, err = cli_run("run", "math2", "--model", "fake", "--n", "2", "--progress-every", "0.02")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("progress math2: ")]
    assert lines and "cost unknown (" in lines[-1], err
