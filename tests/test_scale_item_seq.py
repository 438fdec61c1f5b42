"""An item's model calls, grades and events are indexed by the item's rowid, `item_seq` (migration m0160_item_seq),
not by its hashed id: the rows of the items a run works on are appended at the right edge of each index. Every
lookup by item uses the new indexes, `item_seq` never shows in what users read, rows written without it get it from
a trigger, VACUUM keeps the links, merge sets it in the target (whose rowids differ), and a store from before opens,
migrates, resumes without a new model call and merges as a source and as the target. Fake provider only."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import run_content

from skillweave.store import Store, queries
from skillweave.store.merge import merge_stores
from skillweave.store.reads import grade_samples, items_with_grades
from tests.test_scale_call_index import RUN, whole_and_shards
from tests.test_scale_grade_index import _fetch, _indexes, _info, _rows, before_item_seq, merged_both_ways

ITEM_SEQ_TABLES = ("llm_calls", "grades", "events")
NEW_INDEXES = {
    "llm_calls": [("idx_llm_calls_item_seq_call_key", 0, ["item_seq", "call_key"]),
                  ("idx_llm_calls_run_id", 0, ["run_id"])],
    "grades": [("idx_grades_item_seq_id", 1, ["item_seq", "id"])],
    "events": [("idx_events_item_seq", 0, ["item_seq"])],
}


def _unlinked(path: str) -> list[tuple]:
    """Rows whose `item_seq` is not the rowid of the item their `item_id` names (NULL where it names none)."""
    return [r for t in ITEM_SEQ_TABLES for r in _fetch(
        path, f"SELECT '{t}', t.item_id, t.item_seq, i.rowid FROM [{t}] t LEFT JOIN items i ON i.id = t.item_id "
              "WHERE t.item_seq IS NOT i.rowid")]


def _plan(store, sql: str, args) -> str:
    return " ".join(r[3] for r in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


def test_every_lookup_by_item_goes_through_the_item_rowid_indexes(store):
    for table, indexes in NEW_INDEXES.items():
        assert _indexes(store.path, table) == indexes
    from skillweave.store import _EVENT_UNLESS_REPEATED, _FIND_CALL, _OF_ITEM

    seek = "(item_seq=?"
    plans = {
        "find_call": _plan(store, _FIND_CALL, ["a", "k"]),
        "event unless repeated": _plan(store, _EVENT_UNLESS_REPEATED, ["r", "a", "s", "done", "", "t"]),
        **{f"{t} of an item": _plan(store, f"SELECT * FROM [{t}] WHERE {_OF_ITEM} ORDER BY rowid", ["a"])
           for t in ITEM_SEQ_TABLES},
        "grade points (reads)": _plan(store, "SELECT (SELECT json_group_array(points) FROM (SELECT points FROM grades g "
                                      "WHERE g.item_seq = i.rowid AND g.item_id = i.id ORDER BY g.sample_index, "
                                      "g.rowid)) FROM items i WHERE i.run_id = ?", ["r"]),
        "grades by step": _plan(store, "SELECT c.role FROM grades g LEFT JOIN llm_calls c ON c.item_seq = g.item_seq "
                                "AND c.item_id = g.item_id AND c.id = g.call_id WHERE g.run_id = ?", ["r"]),
    }
    assert "idx_llm_calls_item_seq_call_key (item_seq=? AND call_key=?)" in plans["find_call"]
    assert "idx_events_item_seq (item_seq=?)" in plans["event unless repeated"]
    assert "idx_llm_calls_item_seq_call_key (item_seq=?)" in plans["llm_calls of an item"]
    assert "idx_grades_item_seq_id (item_seq=?)" in plans["grades of an item"]
    assert "idx_events_item_seq (item_seq=?)" in plans["events of an item"]
    assert "idx_grades_item_seq_id (item_seq=?)" in plans["grade points (reads)"]
    assert "idx_llm_calls_item_seq_call_key (item_seq=?)" in plans["grades by step"]
    assert all(seek in plan for plan in plans.values()), plans
    assert all("item_id" not in name for t in ITEM_SEQ_TABLES for name, _, _ in _indexes(store.path, t))


def test_rows_point_to_their_item_and_users_never_see_item_seq(store):
    run_id = store.create_run("skillmix", {})
    items = [store.ensure_item(run_id, "skillmix.text", i, k=2) for i in range(3)]
    for n, item in enumerate(items):
        store.record_call(call_key=f"k{n}", run_id=run_id, item_id=item, role="student", response=[f"r{n}"])
        store.add_grades(item, run_id, [{"sample_index": s, "judge": "fake", "points": [s]} for s in range(2)])
        store.add_event(run_id, item, "grade", "done")
    store.record_call(call_key="t", run_id=run_id, item_id=None, role="topics", response=["no item"])
    store.add_event(run_id, None, "thread", "crashed")
    store.record_call(call_key="x", run_id=run_id, item_id="not-stored", role="student", response=["x"])
    assert _unlinked(store.path) == []
    seqs = [r[0] for r in _fetch(store.path, "SELECT rowid FROM items ORDER BY rowid")]
    assert [r[0] for r in _fetch(store.path, "SELECT item_seq FROM grades ORDER BY rowid")] == \
        [s for s in seqs for _ in range(2)]  # in the order the items were made: appended
    assert store.find_call("k1", items[1])["response"] == '["r1"]' and store.find_call("k1", items[0]) is None
    assert store.find_call("t", None)["response"] == '["no item"]' and store.find_call("x", "not-stored")
    store.add_event(run_id, items[0], "grade", "done")  # the same transition again: not logged twice
    lineage = store.lineage(items[0])
    assert len(lineage["events"]) == 1 and len(lineage["llm_calls"]) == 1 and len(lineage["grades"]) == 2
    shown = [store.find_call("k0", items[0]), *lineage["llm_calls"], *lineage["grades"], *lineage["events"],
             *store.grades(items[0]), *queries.item_events(store, items[0]), *queries.recent_calls(store, run_id),
             queries.call_by_id(store, lineage["llm_calls"][0]["id"]),
             *queries.calls_with_prefix(store, lineage["llm_calls"][0]["id"][:8])]
    assert all("item_seq" not in row for row in shown)
    assert [g["grades"] for g in items_with_grades(store, run_id)][0][1]["points"] == [1]
    assert [s[4] for s in grade_samples(store, run_id, "skillmix.text")] == [[[0], [1]]] * 3


def test_rows_written_without_item_seq_get_it_from_the_trigger(store):
    run_id = store.create_run("skillmix", {})
    item = store.ensure_item(run_id, "skillmix.text", 0, k=2)
    conn = store.db.conn  # as raw SQL or a skillweave from before m0160 writes them
    conn.execute("INSERT INTO llm_calls (id, call_key, run_id, item_id, role, response) VALUES "
                 "('c1', 'k', ?, ?, 'student', '[\"old\"]')", [run_id, item])
    conn.execute("INSERT INTO events (run_id, item_id, stage, status) VALUES (?, ?, 'grade', 'done')", [run_id, item])
    grade = ("INSERT OR REPLACE INTO grades (id, item_id, run_id, judge, sample_index, points) VALUES "
             "('g1', ?, ?, 'fake', 0, ?)")
    conn.execute(grade, [item, run_id, "[0]"])
    conn.execute(grade, [item, run_id, "[1]"])  # replaces, as through the old unique index
    conn.commit()
    assert _unlinked(store.path) == []
    assert store.find_call("k", item)["response"] == '["old"]'
    assert [g["points"] for g in store.grades(item)] == [[1]]
    assert [e["stage"] for e in queries.item_events(store, item)] == ["grade"]


def test_vacuum_keeps_the_links(cli_run, db_path):
    assert cli_run("run", "skillmix", *RUN)[0] == 0
    before = run_content(db_path)
    conn = sqlite3.connect(db_path)  # holes in the items' rowids, then VACUUM: SQLite could renumber them
    conn.execute("DELETE FROM items WHERE rowid IN (SELECT rowid FROM items ORDER BY rowid LIMIT 2)")
    conn.commit()
    rowids = conn.execute("SELECT id, rowid FROM items ORDER BY rowid").fetchall()
    conn.execute("VACUUM")
    conn.close()
    assert _fetch(db_path, "SELECT id, rowid FROM items ORDER BY rowid") == rowids
    assert len(_unlinked(db_path)) == len([r for r in _unlinked(db_path) if r[3] is None]) > 0  # the deleted two
    store = Store(db_path)
    try:
        run = store.get_run("latest")
        assert all(store.grades(i["id"]) for i in store.items(run["id"], status="done"))
    finally:
        store.close()
    assert len(run_content(db_path)["items"]) == len(before["items"]) - 2


def test_every_pipeline_writes_rows_that_point_to_their_item(cli_run, db_path):
    runs = [("skillmix", *RUN), ("instruct-skillmix", "--model", "fake", "--n", "3"),
            ("math2", "--model", "fake", "--n", "2", "--reviewer", "auto"),
            ("conceptmix", "--model", "fake", "--grader", "fake", "--k", "1", "--n", "2"),
            ("extract-skills", "--dataset", "bundled", "--split", "train", "--limit", "3", "--model", "fake:oracle",
             "--reviewer", "auto")]
    for args in runs:
        code, _, err = cli_run("run", *args)
        assert code in (0, 3, 4), (args[0], err)
    counts = {t: _fetch(db_path, f"SELECT count(*) FROM [{t}] WHERE item_seq IS NOT NULL")[0][0]
              for t in ITEM_SEQ_TABLES}
    assert all(counts.values()), counts
    assert _unlinked(db_path) == []


def test_a_store_from_before_migrates_resumes_without_paying_twice_and_merges(cli_run, tmp_path):
    db = str(tmp_path / "old.db")
    assert cli_run("run", "skillmix", *RUN, db=db)[0] == 0
    before = run_content(db)
    before_item_seq(db)
    calls, grades, events = (_rows(db, t) for t in ITEM_SEQ_TABLES)
    conn = sqlite3.connect(db)  # every thread runs again from its input: its replies must all come from the store
    conn.executescript("DELETE FROM checkpoints; DELETE FROM writes; UPDATE items SET status = 'pending';")
    conn.close()
    Store(db).close()  # opening migrates
    assert _fetch(db, "SELECT count(*) FROM _migrations WHERE name = 'm0160_item_seq'") == [(1,)]
    fresh = str(tmp_path / "fresh.db")
    Store(fresh).close()
    for table in ITEM_SEQ_TABLES:  # the same columns, indexes and trigger as a new store
        assert _info(db, table) == _info(fresh, table) and _indexes(db, table) == NEW_INDEXES[table]
    assert _fetch(db, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name") == \
        _fetch(fresh, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    assert [r[:-1] for r in _rows(db, "llm_calls")] == calls and _unlinked(db) == []  # same rows, same rowids
    code, _, err = cli_run("resume", "latest", db=db)
    assert code == 0, err
    assert [r[:-1] for r in _rows(db, "llm_calls")] == calls  # no reply made again
    assert [r[1:-2] for r in _rows(db, "grades")] == [r[1:-1] for r in grades]  # re-graded alike (but its time)
    assert [r[:-1] for r in _rows(db, "events")][:len(events)] == events
    assert run_content(db) == before

    whole, parts = whole_and_shards(cli_run, tmp_path)
    before_item_seq(parts[0])
    for source, target in merged_both_ways(cli_run, parts, tmp_path):  # old into new, new into old
        assert run_content(target) == run_content(whole) and _unlinked(target) == []
        again = merge_stores([source], target)["added"]  # merging the same source again adds nothing
        assert again == dict.fromkeys(again, 0)


def test_merge_sets_item_seq_from_the_target_rowids(cli_run, tmp_path):
    whole, parts = whole_and_shards(cli_run, tmp_path)
    target = str(tmp_path / "target.db")
    assert cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "5", db=target)[0] == 0  # other rowids
    for part in parts:
        assert _unlinked(part) == []
        code, _, err = cli_run("merge", part, "--into", target, db=target)
        assert code == 0, err
    assert _unlinked(target) == []
    store = Store(target)
    try:
        (run_id,) = _fetch(parts[0], "SELECT id FROM runs")[0]
        items = list(store.items(run_id))
        assert len(items) == _fetch(whole, "SELECT count(*) FROM items")[0][0]
        assert min(r[0] for r in _fetch(target, f"SELECT rowid FROM items WHERE run_id = '{run_id}'")) > 5
        for item in items:  # every lookup of a merged item finds its rows in the target
            lineage = store.lineage(item["id"])
            assert lineage["llm_calls"] and lineage["events"]
            for call in lineage["llm_calls"]:
                if call["error"] is None:
                    assert store.find_call(call["call_key"], item["id"])["id"] == call["id"]
    finally:
        store.close()


@pytest.mark.parametrize("table", ITEM_SEQ_TABLES)
def test_the_migration_links_rows_and_only_rows_of_stored_items(tmp_path, table):
    db = str(tmp_path / "s.db")
    store = Store(db)
    run_id = store.create_run("skillmix", {})
    item = store.ensure_item(run_id, "skillmix.text", 0)
    store.record_call(call_key="k", run_id=run_id, item_id=item, role="student", response=["r"])
    store.record_call(call_key="k", run_id=run_id, item_id="gone", role="student", response=["r"])
    store.add_grade(item, run_id, 0, judge="fake", points=[1])
    store.add_event(run_id, item, "s", "done")
    store.add_event(run_id, None, "s", "done")
    store.close()
    before_item_seq(db)
    Store(db).close()
    assert _unlinked(db) == []
    assert _fetch(db, f"SELECT count(*) FROM [{table}] WHERE item_seq IS NOT NULL")[0][0] >= 1
