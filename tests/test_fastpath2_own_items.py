"""Items a run creates are followed in memory (store/own_items.py): every answer given without a statement is the
one the store gives, a thread that re-runs from its input still finds its calls, and whatever cannot be followed
(other writes, rolled-back transactions) goes back to the store."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import run_content

import skillweave
from skillweave.graphs import executor


def _item(store, index=0, **fields):
    fields = {"k": 2, "skills": ["a", "b"], "topic": "t",
              "payload": {"skill_rows": [{"name": "a", "definition": "é ü"}]}, **fields}
    return store.ensure_item("r", "kind", index, 0, **fields)


@pytest.fixture
def run_store(store):
    store.create_run("skillmix", {}, run_id="r")
    return store


def test_the_followed_row_is_what_get_item_reads(run_store):
    store = run_store
    with store.own_items():
        item_id = _item(store)
        assert store._own.get(item_id).row is not None
        assert store.own_item(item_id) == store.get_item(item_id)
        steps = [
            dict(prompt_versions=["v1"], payload_update={"prompt_0": "say \"x\"\n", "output_0": "ö", "text_0": ""}),
            dict(prompt_versions=["v1"], payload_update={"prompt_1": "p", "output_0": "replaced in place"}),
            dict(payload_update={"n": 3, "f": 0.1, "l": [1, (2, 3)], "d": {"b": 1, "a": None}, "none": None}),
            dict(status="done", error=None, prompt_versions=["v2"]),
            dict(skills=("c", "d"), round=0, k=3),
        ]
        for step in steps:
            store.update_item(item_id, **step)
            assert store._own.get(item_id).row is not None, step
            assert store.own_item(item_id) == store.get_item(item_id), step
        assert list(store.own_item(item_id)["payload"]) == list(store.get_item(item_id)["payload"])  # key order
        store.own_item(item_id)["payload"]["x"] = 1  # a caller's change to the payload is not the store's
        assert store.own_item(item_id) == store.get_item(item_id)


@pytest.mark.parametrize("step", [
    dict(topic=5),  # TEXT column: SQLite stores '5', reads back a str
    dict(k=True),  # reads back as 1
    dict(prompt_versions=["a", "b"]),  # the general path
    dict(payload='{"whole": "payload"}'),  # a column of JSON text set as is: read back decoded
])
def test_a_write_that_may_read_back_differently_stops_following(run_store, step):
    store = run_store
    with store.own_items():
        item_id = _item(store)
        store.update_item(item_id, **step)
        assert store._own.get(item_id) is None or store._own.get(item_id).row is None
        assert store.own_item(item_id) == store.get_item(item_id)


def test_only_items_this_process_inserted_are_followed(run_store):
    store = run_store
    existing = _item(store, 0)
    with store.own_items():
        assert _item(store, 0) == existing and store._own.get(existing) is None  # it was there already
        assert store._own.get(_item(store, 1)) is not None
        assert store._own.get(_item(store, 2, topic=7)).row is None  # an INTEGER in a TEXT column: keys only
    assert store._own is None


def test_calls_recorded_here_are_found_and_a_failed_one_is_not(run_store):
    store = run_store
    with store.own_items():
        item_id = _item(store)
        assert store.find_call("k1", item_id) is None
        store.record_call(call_key="k1", run_id="r", item_id=item_id, role="student", request="{}",
                          response=["a"], error=None)
        store.record_call(call_key="k2", run_id="r", item_id=item_id, role="student", request="{}",
                          response=None, error="boom")
        assert store.find_call("k1", item_id)["response"] == '["a"]'
        assert store.find_call("k2", item_id) is None
        store.forget_own(item_id)  # released: the store answers, with the same results
        assert store.find_call("k1", item_id)["response"] == '["a"]' and store.find_call("k2", item_id) is None


def _events(store, item_id):
    return [tuple(r) for r in store.db.conn.execute(
        "select run_id, stage, status, reason from events where item_id = ? order by id", [item_id])]


def test_events_of_followed_items_are_the_rows_the_store_writes(run_store):
    store = run_store
    sequence = [("s", "generated", ""), ("s", "generated", ""), ("g", "failed", "x"), ("g", "failed", "x"),
                ("g", "failed", "y"), ("s", "generated", ""), ("g", "done", "")]
    plain = _item(store, 0)
    with store.own_items():
        followed = _item(store, 1)
        for stage, status, reason in sequence:
            store.add_event("r", plain, stage, status, reason)
            store.add_event("r", followed, stage, status, reason)
    assert _events(store, followed) == _events(store, plain) and len(_events(store, plain)) == 5


def test_a_rolled_back_transaction_is_not_remembered(run_store):
    store = run_store
    with store.own_items():
        item_id = _item(store)
        store.update_item(item_id, payload_update={"a": 1})
        with pytest.raises(RuntimeError), store.transaction():
            store.add_event("r", item_id, "g", "parse_failed", "r")
            store.update_item(item_id, payload_update={"a": 2}, status="done")
            raise RuntimeError("boom")
        store.add_event("r", item_id, "g", "parse_failed", "r")  # the rolled-back one is not a repeat
        assert _events(store, item_id) == [("r", "g", "parse_failed", "r")]
        assert store.own_item(item_id) == store.get_item(item_id)
        assert store.own_item(item_id)["payload"] == {"skill_rows": [{"name": "a", "definition": "é ü"}], "a": 1}


def test_entries_are_bounded(run_store, monkeypatch):
    from skillweave.store import own_items

    monkeypatch.setattr(own_items, "LIMIT", 3)
    store = run_store
    with store.own_items():
        ids = [_item(store, i) for i in range(5)]
        assert list(store._own.entries) == ids[2:]
        assert store.own_item(ids[0]) == store.get_item(ids[0])


def _needing_langgraph(monkeypatch, where: str):
    """The Skill-Mix graph with a step that needs LangGraph's runtime, so that each thread starts directly and
    re-runs from its input through LangGraph (the direct executor's fallback): `grade`, the grade node (the
    student's outputs are in the followed row by then), or `call`, right after each model call returns (the call
    is recorded, the payload not yet written: the re-run must find the call by its key)."""
    from langgraph.config import get_config

    from skillweave.agents import skillmix as nodes
    from skillweave.graphs import skillmix as graph_module

    if where == "grade":
        grade = nodes.grade

        async def grade_in_langgraph(state, runtime):
            get_config()  # raises outside a runnable context
            return await grade(state, runtime)

        monkeypatch.setattr(graph_module, "grade", grade_in_langgraph)
        return
    call_template = nodes.call_template

    async def call_then_langgraph(*args, **kwargs):
        reply = await call_template(*args, **kwargs)
        get_config()
        return reply

    monkeypatch.setattr(nodes, "call_template", call_then_langgraph)


@pytest.mark.parametrize("where", ["grade", "call"])
def test_a_thread_that_reruns_through_langgraph_pays_nothing_twice(tmp_path, monkeypatch, where):
    """Calls recorded while the item was followed are found when the thread re-runs from its input."""
    monkeypatch.setenv(executor.ENV, "direct")
    settings = dict(k=[2, 3], n=3, rounds=2, grading_samples=2, model="fake", judge="fake")
    skillweave.run("skillmix", db=str(tmp_path / "plain.db"), **settings)
    _needing_langgraph(monkeypatch, where)
    db = str(tmp_path / "fallback.db")
    handle = skillweave.run("skillmix", db=db, **settings)
    assert handle.summary.statuses == {"done": 12}
    with sqlite3.connect(db) as conn:
        calls, keys = conn.execute("select count(*), count(distinct call_key) from llm_calls").fetchone()
    assert calls == keys == 36  # 12 items x (2 student turns + 1 judge call), each paid once
    assert run_content(db) == run_content(str(tmp_path / "plain.db"))
