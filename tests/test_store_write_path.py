"""The store's write path on the hot loop: payload updates set keys in place without a read (json_set)."""

import pytest

from skillweave.errors import NotFound
from skillweave.store import Store


@pytest.fixture()
def item(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    run_id = store.create_run("demo", {})
    item_id = store.ensure_item(run_id, "text", 0, payload={"keep": 1, "nested": {"a": 1, "b": 2}})
    return store, item_id


def test_payload_update_merges_shallowly_and_keeps_nulls(item):
    store, item_id = item
    store.update_item(item_id, status="done", payload_update={"nested": {"c": 3}, "gone": None, "text": "é \"q\""})
    got = store.get_item(item_id)
    assert got["status"] == "done"
    # a nested dict replaces the old one (a shallow merge, like {**old, **update}); None is stored as null
    assert got["payload"] == {"keep": 1, "nested": {"c": 3}, "gone": None, "text": "é \"q\""}


def test_odd_keys_and_values_round_trip(item):
    store, item_id = item
    odd = {"a.b": [1, 2], "it's": {"x": [None, 1.5]}, "$[0]": True, 'with "quote"': "v", "n": 0}
    store.update_item(item_id, payload_update=odd, skills=["s1", "s2"])
    got = store.get_item(item_id)
    assert got["payload"] == {"keep": 1, "nested": {"a": 1, "b": 2}, **odd}
    assert got["skills"] == ["s1", "s2"]


def test_prompt_versions_still_accumulate(item):
    store, item_id = item
    store.update_item(item_id, prompt_versions=["v1"], payload_update={"x": 1})
    store.update_item(item_id, prompt_versions=["v2", "v1"], payload_update={"y": 2})
    got = store.get_item(item_id)
    assert got["prompt_versions"] == ["v1", "v2"] and got["payload"]["x"] == 1 and got["payload"]["y"] == 2


def test_a_missing_item_is_not_found_and_nothing_is_written(item):
    store, item_id = item
    with pytest.raises(NotFound):
        store.update_item("nope", payload_update={"x": 1})
    assert store.get_item(item_id)["payload"] == {"keep": 1, "nested": {"a": 1, "b": 2}}


def test_one_prompt_version_is_appended_once_in_order(item):
    store, item_id = item
    for version in ["b3:one", "b3:two", "b3:one", "b3:two", "b3:three"]:
        store.update_item(item_id, prompt_versions=[version], status="running")
    store.update_item(item_id, prompt_versions=["b3:four", "b3:one"])  # several at once: the general path
    assert store.get_item(item_id)["prompt_versions"] == ["b3:one", "b3:two", "b3:three", "b3:four"]


def _commits(store):
    counted = []
    store.db.conn.set_trace_callback(lambda sql: counted.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return counted


def test_a_run_commits_once_per_tick_not_once_per_write(tmp_path):
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline

    store = Store(str(tmp_path / "run.db"))
    config = {"k": [2], "n": 12, "rounds": 1, "seed": 3, "model": "fake", "judge": "fake", "grading_samples": 2,
              "concurrency": 12,
              "skills_catalog": store.save_catalog("b", "skills", [s.as_dict() for s in bundled_skills()]),
              "topics_catalog": store.save_catalog("b", "topics", [{"name": t} for t in bundled_topics()])}
    run_id = store.create_run("skillmix", config)
    commits = _commits(store)
    summary = run_pipeline(get_pipeline("skillmix"), store, run_id, concurrency=12, progress=False)
    assert summary.failed == 0
    calls = store.db["llm_calls"].count_where("error is null")
    writes = calls + store.db["grades"].count + store.db["events"].count_where("run_id = ?", [run_id])
    assert calls == 36 and store.db["items"].count_where("status = 'done'") == 12
    assert len(commits) < calls / 2 < writes  # one commit per write before batching


def test_a_failed_group_inside_a_tick_rolls_back_alone(item):
    import asyncio

    store, item_id = item

    async def tick():
        with store.batch_writes():
            store.add_event("r", item_id, "stage", "kept")
            with pytest.raises(RuntimeError), store.transaction():
                store.add_event("r", item_id, "stage", "rolled back")
                raise RuntimeError("boom")
            assert store.db.conn.in_transaction  # still this tick's batch
        assert not store.db.conn.in_transaction  # committed when the block ends

    asyncio.run(tick())
    other = Store(store.path)  # another connection sees what was committed
    assert [e["status"] for e in other.db["events"].rows_where("item_id = ?", [item_id])] == ["kept"]


def test_another_threads_write_commits_the_batch_instead_of_waiting_on_it(item):
    import asyncio
    import threading

    store, item_id = item

    def visible():
        return Store(store.path).db["events"].count_where("item_id = ?", [item_id])

    async def run():
        with store.batch_writes():
            store.add_event("r", item_id, "a", "batched")
            assert store.db.conn.in_transaction and visible() == 0
            # like the lease heartbeat: another thread writes on its own connection while holding Store.lock
            thread = threading.Thread(target=lambda: store.add_event("r", item_id, "b", "from a thread"))
            thread.start()
            thread.join(10)
            assert not thread.is_alive()  # it did not wait on this tick's write lock
            assert visible() == 2  # the batch was committed first, then the thread's write
            store.add_event("r", item_id, "c", "batched again")
            assert store.db.conn.in_transaction  # batching goes on

    asyncio.run(run())
    assert visible() == 3


def test_an_event_that_repeats_the_items_latest_is_logged_once(item):
    """add_event is one INSERT ... WHERE NOT EXISTS: the item's latest event decides, compared NULL-safely."""
    store, item_id = item
    logged = [("r", "student", "done", ""), ("r", "student", "done", ""),  # a re-run node: once
              ("r", "judge", "done", ""), ("r", "student", "done", ""),  # not the latest any more: logged
              ("r", "judge", "failed", "x"), ("r", "judge", "failed", "y"),  # another reason: logged
              ("r2", "judge", "failed", "y"),  # another run: logged
              ("r2", "judge", "failed", None), ("r2", "judge", "failed", None)]  # NULL reasons: once
    for run_id, stage, status, reason in logged:
        store.add_event(run_id, item_id, stage, status, reason)
    rows = store.db.conn.execute("select run_id, stage, status, reason from events where item_id = ? order by id",
                                 [item_id]).fetchall()
    assert rows == [("r", "student", "done", ""), ("r", "judge", "done", ""), ("r", "student", "done", ""),
                    ("r", "judge", "failed", "x"), ("r", "judge", "failed", "y"), ("r2", "judge", "failed", "y"),
                    ("r2", "judge", "failed", None)]
    store.add_event("r", None, "run", "note")  # a run-level event (no item) is always logged
    store.add_event("r", None, "run", "note")
    assert store.db["events"].count_where("item_id is null") == 2


def test_now_writes_what_datetime_isoformat_writes(monkeypatch):
    """store.now() formats the date and time of day once per second; the text is datetime's own, to the millisecond."""
    import datetime as dt
    import time

    from skillweave import store as store_module

    for ns in (0, 1_764_980_000_123_456_789, 1_764_980_000_999_999_999, 1_764_980_001_000_000_000, 951_782_400_500_000_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)).isoformat(
            timespec="milliseconds")
        assert store_module.now() == expected
    monkeypatch.undo()
    before = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    assert before <= store_module.now() <= dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
