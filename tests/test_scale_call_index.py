"""A stored reply is found through one `llm_calls(item_id, call_key)` index (migration m0130_call_lookup), which
replaced the hash-keyed index on `call_key` and the one on `item_id`: a store made before it opens, migrates,
resumes without paying for a reply twice, and merges. Fake provider only."""

from __future__ import annotations

import sqlite3

from conftest import run_content

from skillweave.store import Store
from tests.test_scale_grade_index import before_item_seq

RUN = ("--model", "fake", "--k", "2,3", "--n", "3", "--rounds", "2", "--grading-samples", "2")


def _indexes(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                           "AND tbl_name = 'llm_calls' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def _to_old_schema(path: str) -> None:
    """The file as the code before m0130 left it: the two old indexes, the new one absent and not recorded."""
    before_item_seq(path)
    conn = sqlite3.connect(path)
    conn.executescript("DROP INDEX idx_llm_calls_item_id_call_key;"
                       "CREATE INDEX idx_llm_calls_call_key ON llm_calls (call_key);"
                       "CREATE INDEX idx_llm_calls_item_id ON llm_calls (item_id);"
                       "DELETE FROM _migrations WHERE name = 'm0130_call_lookup';")
    conn.close()
    assert _indexes(path) == {"idx_llm_calls_call_key", "idx_llm_calls_item_id", "idx_llm_calls_run_id"}


def _counts(path: str) -> dict:
    store = Store(path)
    try:
        return {t: store.db[t].count for t in ("items", "llm_calls", "grades")}
    finally:
        store.close()


def test_a_store_from_before_migrates_and_resumes_without_paying_twice(cli_run, tmp_path):
    db = str(tmp_path / "old.db")
    assert cli_run("run", "skillmix", *RUN, db=db)[0] == 0
    before, counts = run_content(db), _counts(db)
    _to_old_schema(db)
    # every thread runs again from its input: its replies must all come from the store
    conn = sqlite3.connect(db)
    conn.executescript("DELETE FROM checkpoints; DELETE FROM writes; UPDATE items SET status = 'pending';")
    conn.close()
    store = Store(db)  # opening migrates
    assert _indexes(db) == {"idx_llm_calls_item_seq_call_key", "idx_llm_calls_run_id"}  # m0160 ran too
    assert store.db["_migrations"].count_where("name = 'm0130_call_lookup'") == 1
    run_id = store.get_run("latest")["id"]
    store.close()
    code, _, err = cli_run("resume", run_id, db=db)
    assert code == 0, err
    assert _counts(db) == counts  # no reply made again, nothing duplicated
    assert run_content(db) == before


def test_the_lookup_is_by_item_and_key_and_by_item_alone(store):
    from skillweave.store import _FIND_CALL, _OF_ITEM

    run_id = store.create_run("skillmix", {})
    store.record_call(call_key="k", run_id=run_id, item_id="a", role="student", response=["from a"])
    store.record_call(call_key="k2", run_id=run_id, item_id="a", role="student", error="boom")  # failed: not reused
    store.record_call(call_key="k3", run_id=run_id, item_id=None, role="topics", response=["no item"])
    assert store.find_call("k", "a")["response"] == '["from a"]'
    assert store.find_call("k", "b") is None and store.find_call("k2", "a") is None
    assert store.find_call("k3", None)["response"] == '["no item"]' and store.find_call("k3", "a") is None
    plans = [" ".join(r[3] for r in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)) for sql, args in (
        (_FIND_CALL, ["a", "k"]),
        (f"SELECT * FROM llm_calls WHERE {_OF_ITEM} ORDER BY created_at", ["a"]))]  # Store.lineage
    # since m0160 the index's first column is the item's rowid (tests/test_scale_item_seq.py)
    assert "idx_llm_calls_item_seq_call_key (item_seq=? AND call_key=?)" in plans[0]
    assert "idx_llm_calls_item_seq_call_key (item_seq=?)" in plans[1]
    assert len(list(store.db["llm_calls"].rows_where("item_id = ?", ["a"]))) == 2


def whole_and_shards(cli_run, tmp_path) -> tuple[str, list[str]]:
    """The same Skill-Mix run into one store and as two shards into two more: (whole, [part1, part2])."""
    whole = str(tmp_path / "whole.db")
    assert cli_run("run", "skillmix", *RUN, db=whole)[0] == 0
    parts = [str(tmp_path / f"part{i}.db") for i in (1, 2)]
    for i, part in enumerate(parts, start=1):
        assert cli_run("run", "skillmix", *RUN, "--shard", f"{i}/2", db=part)[0] == 0
    return whole, parts


def test_stores_from_before_merge_into_a_store_from_before(cli_run, tmp_path):
    whole, parts = whole_and_shards(cli_run, tmp_path)
    for part in parts:
        _to_old_schema(part)
    target = str(tmp_path / "target.db")
    with sqlite3.connect(parts[0]) as source, sqlite3.connect(target) as copy:  # with what its WAL holds
        source.backup(copy)  # an old-schema target: migrated when merge opens it
    code, _, err = cli_run("merge", parts[1], "--into", target, db=target)
    assert code == 0, err
    assert _indexes(target) == {"idx_llm_calls_item_seq_call_key", "idx_llm_calls_run_id"}  # m0160 ran too
    assert run_content(target) == run_content(whole)
    assert _counts(target) == _counts(whole)
