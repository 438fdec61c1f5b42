"""What a large run does per item, kept from growing with the store: a stored reply looked up by its item and
call key (one index instead of two hash-keyed ones) and a run's spend summed from the calls recorded since the last
read (a progress line no longer sums the whole run). benchmarks/scale.py measures the per-item cost."""

from __future__ import annotations

import pytest

from skillweave.store.cost import _SINCE, RunningSpend, run_spend


def _spend_without_float_noise(spend):
    return {**spend, "cost_usd": None if spend["cost_usd"] is None else pytest.approx(spend["cost_usd"])}


def test_running_spend_matches_run_spend_as_calls_are_added(store):
    run_id, other = store.create_run("skillmix", {}), store.create_run("skillmix", {})
    running = RunningSpend(store, run_id)
    assert running.read() == run_spend(store, run_id)  # no call yet
    steps = [
        dict(input_tokens=10, output_tokens=5, response=["x"], cost_usd=None),  # unpriced
        dict(input_tokens=4, output_tokens=1, response=["x"], cost_usd=0.0125),
        dict(error="boom"),  # failed: no tokens, not unpriced
        dict(input_tokens=7, output_tokens=2, response=["x"], cost_usd=0.5),
    ]
    for i, step in enumerate(steps):
        store.record_call(run_id=run_id, role="judge", call_key=f"r{i}", **step)
        store.record_call(run_id=other, role="judge", call_key=f"o{i}", input_tokens=100, output_tokens=100,
                          response=["x"], cost_usd=1.0)  # another run's calls in between are not counted
        assert running.read() == _spend_without_float_noise(run_spend(store, run_id))
        assert running.read() == _spend_without_float_noise(run_spend(store, run_id))  # a read with nothing new
    assert running.read()["calls"] == 4 and running.read()["input_tokens"] == 21


def test_running_spend_sums_only_new_calls_and_starts_over_when_calls_were_deleted(store):
    run_id = store.create_run("skillmix", {})
    for i in range(50):
        store.record_call(run_id=run_id, role="student", call_key=f"a{i}", input_tokens=1, output_tokens=1,
                          response=["x"], cost_usd=0.001)
    running = RunningSpend(store, run_id)
    assert running.read()["calls"] == 50
    plan = " ".join(r[3] for r in store.db.conn.execute(f"EXPLAIN QUERY PLAN {_SINCE}", [run_id, running.mark]))
    assert "INDEX idx_llm_calls_run_id (run_id=? AND rowid>?)" in plan  # a range, not the whole run
    visited = []
    store.db.conn.set_trace_callback(visited.append)
    try:
        store.record_call(run_id=run_id, role="student", call_key="b", input_tokens=3, output_tokens=0,
                          response=["x"], cost_usd=0.002)
        assert running.read()["calls"] == 51
    finally:
        store.db.conn.set_trace_callback(None)
    assert any(f"rowid > {running.mark - 1}" in s for s in visited)  # the read asked for the one new row only
    # the newest calls deleted (and new ones recorded): the whole run is summed again, never a stale total
    store.db.conn.execute("DELETE FROM llm_calls WHERE call_key IN ('b', 'a49', 'a48')")
    assert running.read() == _spend_without_float_noise(run_spend(store, run_id))
    store.record_call(run_id=run_id, role="student", call_key="c", input_tokens=2, output_tokens=2, response=["x"])
    assert running.read() == _spend_without_float_noise(run_spend(store, run_id))
    assert running.read()["calls"] == 49


def test_progress_line_reads_the_new_calls_only(store):
    from skillweave.graphs.progress import Progress
    from skillweave.graphs.runtime import RunSummary

    run_id = store.create_run("skillmix", {})
    bar = Progress(4, "skillmix", enabled=True, summary=RunSummary(run_id=run_id, done=1), store=store,
                   run_id=run_id, every=0)
    store.record_call(run_id=run_id, role="student", input_tokens=10, output_tokens=5, response=["x"], cost_usd=0.25)
    assert "15 tokens, cost $0.2500," in bar.line()
    statements = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        store.record_call(run_id=run_id, role="judge", input_tokens=1, output_tokens=1, response=["x"], cost_usd=0.25)
        assert "17 tokens, cost $0.5000," in bar.line()
    finally:
        store.db.conn.set_trace_callback(None)
    sums = [s for s in statements if "FROM llm_calls WHERE run_id" in s]
    assert sums and all("rowid >" in s for s in sums)  # no statement summed the whole run
