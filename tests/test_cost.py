"""Cost per call, stage and run; --dry-run projections; --max-cost budgets (docs/cost.md)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

RUN = ["run", "skillmix", "--k", "2", "--n", "3", "--rounds", "1", "--grading-samples", "2"]



def _q(db, sql, args=()):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_prices_builtin_snapshot_and_overrides(cheap_models):
    from skillweave.providers.prices import PRICES_DATE, price_of

    assert PRICES_DATE
    assert (price_of("openai:gpt-4o").input, price_of("openai:gpt-4o").output) == (2.5, 10.0)
    assert price_of("openai:gpt-4o-mini").input == 0.15                 # not gpt-4o's price
    assert price_of("openai:gpt-4o-mini-2024-07-18").input == 0.15      # a dated snapshot of a base id
    assert price_of("openai:gpt-4o-2024-08-06").output == 10.0
    assert price_of("openai:my-finetune") is None                       # unknown: no price, never 0
    assert price_of("fake") is None
    assert price_of("cheap").input == 100 and price_of("cheap").source == "models file"
    assert price_of("fake:cheap2").output == 200 and price_of("fake:cheap2").source == "models file prices"


def test_price_table_overrides_builtin(tmp_path, monkeypatch):
    from skillweave.providers.prices import price_of

    path = tmp_path / "m.yaml"
    path.write_text("prices:\n  openai:gpt-4o: {input: 1.25, output: 5}\n")
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(path))
    assert (price_of("openai:gpt-4o").input, price_of("openai:gpt-4o").output) == (1.25, 5.0)


def test_models_add_keeps_the_price_table(cheap_models, cli_run):
    code, _, err = cli_run("models", "add", "other", "--kind", "fake", "--model", "x")
    assert code == 0, err
    assert "fake:cheap2" in cheap_models.read_text() and "other" in cheap_models.read_text()


def test_cost_per_call_stage_and_run(cheap_models, cli_run, db_path):
    """Student calls on a priced model cost tokens x price; judge calls on unpriced `fake` stay NULL (unknown)."""
    code, _, err = cli_run(*RUN, "--model", "cheap", "--judge", "fake")
    assert code == 0, err
    rows = _q(db_path, "select role, input_tokens, output_tokens, cost_usd from llm_calls where error is null")
    assert rows
    student_cost = 0.0
    for role, inp, out, cost in rows:
        if role == "student":
            assert cost == pytest.approx((inp * 100 + out * 400) / 1e6)
            student_cost += cost
        else:
            assert cost is None, "an unpriced call is unknown, not 0"
    judge_calls = sum(1 for r in rows if r[0] != "student")
    code, out, _ = cli_run("report", "latest")
    assert f"spend: at least ${student_cost:.4f} ({judge_calls} calls unpriced)" in out
    assert f"student: ${student_cost:.4f}" in out and "judge: unknown" in out
    code, out, _ = cli_run("report", "latest", "--json")
    spend = json.loads(out)["spend"]
    assert spend["cost_usd"] == pytest.approx(student_cost) and spend["unpriced"] == judge_calls
    assert spend["stages"]["student"]["calls"] == 6
    code, out, _ = cli_run("runs", "list")
    assert "spend" in out.splitlines()[0] and f"at least ${student_cost:.4f}" in out
    code, out, _ = cli_run("runs", "list", "--json")
    assert json.loads(out)[0]["spend"]["cost_usd"] == pytest.approx(student_cost)


def test_dry_run_projects_within_20_percent_of_the_run(cheap_models, cli_run, db_path, tmp_path):
    """--dry-run: no model call, no run row, exit 0; its projection vs the same run with the fake provider."""
    args = [*RUN, "--model", "cheap", "--judge", "fake:cheap2"]
    code, out, err = cli_run(*args, "--dry-run")
    assert code == 0, err
    assert "3 threads" in out
    runs = _q(db_path, "select count(*) from sqlite_master where name = 'runs'")[0][0] and \
        _q(db_path, "select count(*) from runs")[0][0]
    assert not runs, "a dry run stores no run"
    projected = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    # stage  calls  input  low-high  $low - $high  models
    low = float(projected["total"][4].lstrip("$"))
    high = float(projected["total"][6].lstrip("$"))

    code, _, err = cli_run(*args)
    assert code == 0, err
    actual = _q(db_path, "select sum(cost_usd) from llm_calls")[0][0]
    calls = dict(_q(db_path, "select role, count(*) from llm_calls group by role"))
    assert {stage: int(p[1]) for stage, p in projected.items() if stage != "total"} == calls
    assert abs(low - actual) <= 0.2 * actual, (low, actual)
    assert low <= actual * 1.2 and actual <= high


def test_dry_run_unknown_price_is_shown_as_unknown(cli_run, db_path):
    code, out, err = cli_run(*RUN, "--model", "fake", "--judge", "fake", "--dry-run")
    assert code == 0, err
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "unknown" in total and "$0" not in total


def test_budget_stop_kill_and_resume(cheap_models, tmp_path):
    """--max-cost mid-run: killed with SIGKILL, resumed under the same budget (stops as 'budget', spend within
    it), then `resume --max-cost` raises it and the run finishes with no call made twice."""
    db = str(tmp_path / "budget.db")
    env = {**os.environ, "SKILLWEAVE_FAKE_LATENCY": "0.15", "PYTHONUNBUFFERED": "1",
           "SKILLWEAVE_MODELS": str(cheap_models)}
    cmd = [sys.executable, "-m", "skillweave.cli", "--db", db]
    base = ["run", "skillmix", "--k", "2", "--n", "6", "--rounds", "1", "--grading-samples", "2",
            "--model", "cheap", "--judge", "cheap", "--concurrency", "1"]
    # the whole run costs about $0.66 with these prices, and each call reserves up to ~$0.3 (max_tokens):
    # a budget of $0.50 stops it part-way
    proc = subprocess.Popen([*cmd, *base, "--max-cost", "0.5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            if _q(db, "select count(*) from llm_calls")[0][0] >= 3:
                break
        except sqlite3.OperationalError:
            continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_id, status), = _q(db, "select id, status from runs")
    assert status == "running"
    env["SKILLWEAVE_FAKE_LATENCY"] = "0"
    stopped = subprocess.run([*cmd, "resume", run_id], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 4, stopped.stderr  # stopped by its budget: paused, exit 4
    assert "stopped by its budget" in stopped.stderr and f"resume {run_id} --max-cost" in stopped.stderr
    (status, error), = _q(db, "select status, error from runs")
    assert status == "budget" and "budget $0.5000 reached" in error
    spent = _q(db, "select sum(cost_usd) from llm_calls")[0][0]
    assert 0 < spent <= 0.5
    assert _q(db, "select count(*) from items where status = 'failed'")[0][0] == 0  # waiting, not failed
    calls_before = _q(db, "select count(*) from llm_calls")[0][0]

    done = subprocess.run([*cmd, "resume", run_id, "--max-cost", "5"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert _q(db, "select status from runs")[0][0] == "done"
    assert _q(db, "select count(*) from items where status = 'done'")[0][0] == 6
    total = _q(db, "select count(*) from llm_calls")[0][0]
    assert total > calls_before
    assert _q(db, "select count(distinct call_key) from llm_calls where error is null")[0][0] == total
    assert json.loads(_q(db, "select config from runs")[0][0])["max_cost"] == 5


def test_max_cost_without_a_price_is_refused_before_the_run(cheap_models, cli_run, db_path):
    code, _, err = cli_run(*RUN, "--model", "cheap", "--judge", "fake", "--max-cost", "1")
    assert code == 2 and "Error: --max-cost: no price for 'fake' (--judge)" in err
    assert not _q(db_path, "select count(*) from sqlite_master where name = 'runs'")[0][0] or \
        not _q(db_path, "select count(*) from runs")[0][0]


def test_every_run_command_takes_the_cost_options(cli_run, db_path):
    code, out, _ = cli_run("run", "--help")
    names = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert "skillmix" in names and "math2" in names
    for name in names:
        code, out, _ = cli_run("run", name, "--help")
        assert code == 0 and "--max-cost USD" in out and "--batch " in out, name
        assert "--dry-run" in out, name


def test_dry_run_never_calls_an_image_api(cli_run, db_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # a real key would make a real image call possible
    code, out, err = cli_run("run", "conceptmix", "--model", "fake", "--grader", "fake", "--k", "1", "--n", "2",
                             "--image-model", "openai-images:dall-e-3", "--dry-run")
    assert code == 0, err
    assert "images: 2 from openai-images:dall-e-3 (not chat calls: cost not projected)" in out
    assert not os.path.exists(db_path)


def test_dry_run_projects_batch_calls_at_half_price(cli_run):
    args = [*RUN, "--model", "openai:gpt-4", "--dry-run"]  # $30/$60 per 1M: cents, well above the rounding
    totals = []
    for extra in ([], ["--batch"]):
        code, out, err = cli_run(*args, *extra)
        assert code == 0, err
        total = next(line.split() for line in out.splitlines() if line.startswith("total"))
        totals.append((float(total[4].lstrip("$")), float(total[6].lstrip("$"))))
    assert totals[1][0] == pytest.approx(totals[0][0] / 2, rel=0.01)
    assert totals[1][1] == pytest.approx(totals[0][1] / 2, rel=0.01)


def test_the_embedded_model_costs_nothing_and_says_so():
    """`local` runs on this machine: its calls cost $0 (known), unlike an unpriced API model (unknown)."""
    from skillweave.providers.prices import price_of

    assert price_of("local").cost(1000, 1000) == 0.0
    assert price_of("openai:some-unlisted-model") is None
