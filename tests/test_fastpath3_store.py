"""The store's hot-path writes after the third round of cuts: the same rows, the same ids' shape, the same locking."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

from skillweave.store import Store, _v4_hex


def test_call_ids_are_uuid4_hex_of_the_same_random_bytes():
    for _ in range(200):
        raw = os.urandom(16)
        assert _v4_hex(raw) == uuid.UUID(bytes=raw, version=4).hex
    for raw in (bytes(16), b"\xff" * 16):
        assert _v4_hex(raw) == uuid.UUID(bytes=raw, version=4).hex


def test_record_call_ids_are_random_version_4(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    run = store.create_run("skillmix", {"k": [2]})
    ids = {store.record_call(call_key=f"k{i}", run_id=run, item_id=None, role="r", provider="fake", model="m",
                             prompt_version="v", request="{}", response=["x"], error=None) for i in range(50)}
    assert len(ids) == 50
    for call_id in ids:
        parsed = uuid.UUID(hex=call_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == call_id


def _grade_rows(store: Store, item_id: str) -> list[tuple]:
    return [tuple(r) for r in store.db.conn.execute(
        "SELECT id, item_id, run_id, sample_index, call_id, judge, raw, points, score, parse_status FROM grades "
        "WHERE item_id = ? ORDER BY sample_index", [item_id])]


def test_add_grades_writes_the_rows_add_grade_writes(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    run = store.create_run("skillmix", {"k": [2]})
    a = store.ensure_item(run, "skillmix.text", 0, 0, k=2)
    b = store.ensure_item(run, "skillmix.text", 1, 0, k=2)
    samples = [{"sample_index": i, "call_id": "c", "judge": "openai:j", "raw": f"| r {i} |", "points": [1.0, i],
                "score": 1.0 + i, "parse_status": "ok" if i else "empty"} for i in range(3)]
    for sample in samples:
        fields = dict(sample)
        store.add_grade(a, run, fields.pop("sample_index"), **fields)
    ids = store.add_grades(b, run, samples)
    expected = [(row[0], b, *row[2:]) for row in _grade_rows(store, a)]
    got = _grade_rows(store, b)
    assert [g[1:] for g in got] == [e[1:] for e in expected]
    assert ids == [g[0] for g in got]
    assert store.add_grades(b, run, samples) == ids  # OR REPLACE: the same rows again, not new ones
    assert len(_grade_rows(store, b)) == 3
    # samples naming different fields are written one by one, the same rows as add_grade would
    mixed = [{"sample_index": 0, "judge": "j", "raw": "x", "points": [1.0]},
             {"sample_index": 1, "judge": "j", "raw": "y", "points": [0.0], "score": 0.0}]
    store.add_grades(a, run, mixed)
    assert [r[3] for r in _grade_rows(store, a) if r[5] == "j"] == [0, 1]


def test_batching_thread_writes_join_the_tick_and_other_threads_still_commit_it_first(tmp_path):
    """The batching thread's fast path takes the store's lock directly; a write from another thread (the lease
    heartbeat) still commits the open tick first and never waits on SQLite's write lock."""
    path = str(tmp_path / "s.db")
    store = Store(path)
    run = store.create_run("skillmix", {"k": [2]})
    other_done = []

    async def main():
        with store.batch_writes():
            store.add_event(run, None, "s", "one")
            assert store.db.conn.in_transaction  # the tick's transaction holds the write

            def other():
                store.add_event(run, None, "s", "from another thread")  # commits the tick's transaction first
                other_done.append(True)

            t = threading.Thread(target=other)
            t.start()
            t.join(timeout=20)
            assert other_done
            store.add_event(run, None, "s", "two")
            reader = Store(path)
            assert [r[0] for r in reader.db.conn.execute("SELECT status FROM events ORDER BY id")] == \
                ["one", "from another thread"]  # "two" is in the open tick, not yet committed
            reader.close()
            await asyncio.sleep(0.01)  # the tick ends: committed
            reader = Store(path)
            assert [r[0] for r in reader.db.conn.execute("SELECT status FROM events ORDER BY id")] == \
                ["one", "from another thread", "two"]
            reader.close()

    asyncio.run(main())


def test_now_within_one_millisecond_and_across_them(monkeypatch):
    """store.now() keeps the last millisecond's text: asked again within it, the same text; then the next one's."""
    import datetime as dt
    import time

    from skillweave import store as store_module

    def expected(ns: int) -> str:
        return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)).isoformat(
            timespec="milliseconds")

    base = 1_764_980_000_999_000_000
    for ns in (base, base + 400_000, base + 999_999, base + 1_000_000, base + 1_000_001, base - 5_000_000,
               base + 86_400_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        assert store_module.now() == expected(ns)
        assert store_module.now() == expected(ns)
