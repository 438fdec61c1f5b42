"""`ctx.fail` and `ctx.event`: the one way a node fails an item and logs a transition."""

from __future__ import annotations

from skillweave.agents.llm import RunContext
from skillweave.errors import ModelCallError
from skillweave.store import queries


def _ctx(store):
    run_id = store.create_run("t", {})
    return RunContext(store, run_id, {}), store.ensure_item(run_id, "t.item", 0)


def test_fail_marks_the_item_failed_with_the_stage_and_the_error_text(store):
    ctx, item_id = _ctx(store)
    state = ctx.fail(item_id, "judge", ModelCallError("HTTP 500: upstream down"))
    assert state == {"status": "failed"}
    item = store.get_item(item_id)
    assert item["status"] == "failed" and item["error"] == "judge: HTTP 500: upstream down"
    events = queries.item_events(store, item_id)
    assert [(e["run_id"], e["stage"], e["status"], e["reason"]) for e in events] == [
        (ctx.run_id, "judge", "failed", "HTTP 500: upstream down")]


def test_fail_twice_logs_one_event_and_event_takes_a_plain_reason(store):
    ctx, item_id = _ctx(store)
    ctx.event(item_id, "student", "generated")
    ctx.fail(item_id, "grade", "no reply")
    ctx.fail(item_id, "grade", "no reply")  # a node re-run on resume: the same transition is not logged again
    events = queries.item_events(store, item_id)
    assert [(e["stage"], e["status"], e["reason"]) for e in events] == [
        ("student", "generated", ""), ("grade", "failed", "no reply")]
    assert store.get_item(item_id)["error"] == "grade: no reply"
