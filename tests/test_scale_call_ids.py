"""Model-call ids are no longer indexed (migration m0140_call_ids_unindexed): recording a call touches no B-tree keyed
by its random id. `logs show` still takes a full id or a 6-8 character prefix, `report`'s per-step grade counts still
find a grade's call, and a store from before opens, migrates (rowids, columns and indexes kept), resumes without a
new model call and merges as a source and as the target, a call id held by both still a key. Fake provider only."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import run_content

from skillweave.store import Store, queries
from skillweave.store.merge import MergeConflict, merge_stores
from tests.test_scale_call_index import RUN, whole_and_shards
from tests.test_scale_grade_index import _indexes, _put_back, _rows, before_item_seq, merged_both_ways


def _call_indexes(path: str) -> list[tuple[str, list[str]]]:
    """(name, columns) of every index on llm_calls, the primary key's included."""
    return [(name, columns) for name, _, columns in _indexes(path, "llm_calls")]


def _to_old_schema(path: str) -> None:
    """The file as the code before m0140 left it: `id TEXT PRIMARY KEY` (sqlite-utils' DDL), m0140 not recorded."""
    before_item_seq(path)
    conn = sqlite3.connect(path)
    indexes = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                              "AND tbl_name = 'llm_calls' AND sql IS NOT NULL")]
    _put_back(conn, "llm_calls", indexes, "m0140_call_ids_unindexed")
    conn.close()
    assert ("sqlite_autoindex_llm_calls_1", ["id"]) in _call_indexes(path)


def _calls(path: str) -> list[tuple]:
    return _rows(path, "llm_calls", seq=False)


def _counts(path: str) -> dict:
    store = Store(path)
    try:
        return {t: store.db[t].count for t in ("items", "llm_calls", "grades", "events")}
    finally:
        store.close()


def test_no_index_on_llm_calls_is_keyed_by_the_call_id(store):
    assert sorted(cols for _, cols in _call_indexes(store.path)) == [["item_seq", "call_key"], ["run_id"]]
    run_id = store.create_run("skillmix", {})
    store.record_call(call_key="k", run_id=run_id, item_id="a", role="student", response=["r"])
    plan = " ".join(r[3] for r in store.db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM llm_calls WHERE id = ?", ["x"]))
    assert plan.startswith("SCAN llm_calls")  # a full id is found by scanning: nothing indexes it


def test_logs_show_takes_a_full_id_and_short_prefixes(cli_run, db_path):
    assert cli_run("run", "skillmix", *RUN)[0] == 0
    store = Store(db_path)
    ids = [r[0] for r in store.db.conn.execute("SELECT id FROM llm_calls")]
    store.close()
    assert len(ids) == len(set(ids)) > 10
    for call_id in ids[:3]:
        code, out, err = cli_run("logs", "show", call_id)
        assert code == 0 and f"id              {call_id}" in out, err
        unique = next(n for n in range(6, 33) if sum(i.startswith(call_id[:n]) for i in ids) == 1)
        code, out, err = cli_run("logs", "show", call_id[:unique], "--json")
        assert code == 0 and f'"id": "{call_id}"' in out, err
    code, _, err = cli_run("logs", "show", "0123456789abcdef0123456789abcdef")
    assert code != 0 and err.startswith("Error: no model call")


def test_grades_find_their_call_through_the_item_and_else_by_id(store):
    run_id = store.create_run("skillmix", {})
    judge = store.record_call(call_key="j", run_id=run_id, item_id="a", role="judge", response=["x"])
    other = store.record_call(call_key="k", run_id=run_id, item_id="b", role="critic", response=["y"])
    store.add_grade("a", run_id, 0, call_id=judge, judge="fake", parse_status="empty")
    store.add_grade("a", run_id, 1, call_id=other, judge="fake", parse_status="empty")  # a call of another item
    store.add_grade("a", run_id, 2, call_id=None, judge="fake", parse_status="empty")
    store.add_grade("a", run_id, 3, call_id="gone", judge="fake", parse_status="empty")
    rows = queries.grades_by_step(store, run_id, ["empty"])
    assert sorted((r["step"], r["n"]) for r in rows) == [("critic", 1), ("grade", 2), ("judge", 1)]


def test_a_store_from_before_migrates_keeps_its_calls_and_resumes_without_paying_twice(cli_run, tmp_path):
    db = str(tmp_path / "old.db")
    assert cli_run("run", "skillmix", *RUN, db=db)[0] == 0
    before, counts = run_content(db), _counts(db)
    _to_old_schema(db)
    calls = _calls(db)
    conn = sqlite3.connect(db)  # every thread runs again from its input: its replies must all come from the store
    conn.executescript("DELETE FROM checkpoints; DELETE FROM writes; UPDATE items SET status = 'pending';")
    conn.close()
    store = Store(db)  # opening migrates
    assert store.db["_migrations"].count_where("name = 'm0140_call_ids_unindexed'") == 1
    run_id = store.get_run("latest")["id"]
    store.close()
    assert sorted(cols for _, cols in _call_indexes(db)) == [["item_seq", "call_key"], ["run_id"]]
    assert _calls(db) == calls  # the same rows under the same rowids, every column
    code, _, err = cli_run("resume", run_id, db=db)
    assert code == 0, err
    assert _counts(db)["llm_calls"] == counts["llm_calls"] and _calls(db) == calls  # no reply made again
    assert run_content(db) == before


def test_stores_from_before_and_after_merge_either_way(cli_run, tmp_path):
    whole, parts = whole_and_shards(cli_run, tmp_path)
    _to_old_schema(parts[0])  # an old source into a new target, then a new source into an old target
    for source, target in merged_both_ways(cli_run, parts, tmp_path):
        assert sorted(cols for _, cols in _call_indexes(target)) == [["item_seq", "call_key"], ["run_id"]]
        assert run_content(target) == run_content(whole)
        assert {k: v for k, v in _counts(target).items() if k != "events"} == \
            {k: v for k, v in _counts(whole).items() if k != "events"}
        # merging the same source again adds nothing: every call id is already there, and agrees
        assert merge_stores([source], target)["added"]["llm_calls"] == 0


def test_a_call_id_both_stores_hold_must_agree(tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for path, reply in ((a, ["one"]), (b, ["two"])):
        store = Store(path)
        store.record_call(id="c0ffee" * 5 + "00", call_key="k", run_id=None, item_id="i", role="student",
                          response=reply)
        store.close()
    with pytest.raises(MergeConflict, match="llm_calls id=c0ffee"):
        merge_stores([a], b)
    assert len(_calls(b)) == 1  # refused: the target as it was
    assert not [n for n, _ in _call_indexes(b) if n.startswith("_merge")]  # the merge's lookup index is gone
