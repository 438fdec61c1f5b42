"""Grades are kept unique and found through one index, `grades(item_id, id)` (migration m0150_grade_lookup), instead
of a primary key on the hashed id plus an index on `item_id`: one random B-tree page per graded item instead of two.
A re-recorded grade still replaces the stored one, an item's grades come back in the same order, and a store from
before both this and m0140 (call ids) opens, migrates, resumes without a new model call and merges as a source
and as the target. Fake provider only."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import run_content

from skillweave.store import Store
from skillweave.store.merge import MergeConflict, merge_stores
from skillweave.store.reads import grade_samples, items_with_grades

RUN = ("--model", "fake", "--k", "2,3", "--n", "3", "--rounds", "2", "--grading-samples", "2")


def _indexes(path: str, table: str) -> list[tuple[str, int, list[str]]]:
    """(name, unique, columns) of every index on `table`, a primary key's included."""
    conn = sqlite3.connect(path)
    try:
        return sorted((name, unique, [c[2] for c in conn.execute(f"PRAGMA index_info([{name}])")])
                      for _, name, unique, *_ in conn.execute(f"PRAGMA index_list([{table}])"))
    finally:
        conn.close()


def _put_back(conn, table: str, indexes: list[str], migration: str) -> None:
    """`table` as sqlite-utils made it (`id TEXT PRIMARY KEY`) with `indexes`, `migration` not recorded."""
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    columns = ", ".join(f"[{r[1]}] {r[2]}" + (" PRIMARY KEY" if r[1] == "id" else "") for r in info)
    names = ", ".join(f"[{r[1]}]" for r in info)
    conn.executescript(f"CREATE TABLE old_{table} ({columns}); INSERT INTO old_{table} (rowid, {names}) "
                       f"SELECT rowid, {names} FROM {table}; DROP TABLE {table}; "
                       f"ALTER TABLE old_{table} RENAME TO {table};" + ";".join(indexes) +
                       f"; DELETE FROM _migrations WHERE name = '{migration}';")


OLD_INDEXES = {  # what m0130 and m0150 left, and m0001 for events
    "llm_calls": "CREATE INDEX idx_llm_calls_item_id_call_key ON llm_calls (item_id, call_key)",
    "grades": "CREATE UNIQUE INDEX idx_grades_item_id_id ON grades (item_id, id)",
    "events": 'CREATE INDEX "idx_events_item_id" ON "events" ("item_id")',
}
def before_item_seq(path: str) -> None:
    """The file as the code before m0160 left it: no `item_seq` column, trigger or index, the old indexes back, m0160
    not recorded (rowids and every other column as they were)."""
    conn = sqlite3.connect(path)
    for table in OLD_INDEXES:
        conn.execute(f"DROP TRIGGER IF EXISTS [{table}_item_seq]")
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql "
                                    "LIKE '%item_seq%'", [table]).fetchall():
            conn.execute(f"DROP INDEX [{name}]")
        conn.execute(f"ALTER TABLE [{table}] DROP COLUMN item_seq")
        conn.execute(OLD_INDEXES[table])
    conn.execute("DELETE FROM _migrations WHERE name = 'm0160_item_seq'")
    conn.commit()
    conn.close()
    assert all("item_seq" not in [r[1] for r in _info(path, t)] for t in OLD_INDEXES)


def _to_old_schema(path: str) -> None:
    """The file as the code before m0140 and m0150 left it."""
    before_item_seq(path)
    conn = sqlite3.connect(path)
    _put_back(conn, "llm_calls", ["CREATE INDEX idx_llm_calls_item_id_call_key ON llm_calls (item_id, call_key)",
                                  "CREATE INDEX idx_llm_calls_run_id ON llm_calls (run_id)"], "m0140_call_ids_unindexed")
    _put_back(conn, "grades", ["CREATE INDEX idx_grades_item_id ON grades (item_id)"], "m0150_grade_lookup")
    conn.close()
    assert _indexes(path, "grades") == [("idx_grades_item_id", 0, ["item_id"]), ("sqlite_autoindex_grades_1", 1, ["id"])]


def _fetch(path: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _info(path: str, table: str) -> list[tuple]:
    return _fetch(path, f"PRAGMA table_info([{table}])")


def _rows(path: str, table: str, seq: bool = True) -> list[tuple]:
    """Every row with its rowid; `seq=False`: without `item_seq` (m0160), to compare with a store from before."""
    names = [r[1] for r in _info(path, table) if seq or r[1] != "item_seq"]
    return _fetch(path, f"SELECT rowid, {', '.join(f'[{n}]' for n in names)} FROM {table} ORDER BY rowid")


def test_one_unique_index_by_item_serves_every_grade_lookup(store):
    from skillweave.store import _OF_ITEM

    assert _indexes(store.path, "grades") == [("idx_grades_item_seq_id", 1, ["item_seq", "id"])]  # since m0160
    plans = [" ".join(r[3] for r in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", ["a"])) for sql in (
        f"SELECT * FROM grades WHERE {_OF_ITEM} ORDER BY sample_index, rowid",  # Store.grades
        "SELECT i.id, (SELECT json_group_array(points) FROM (SELECT points FROM grades g WHERE g.item_seq = i.rowid "
        "AND g.item_id = i.id ORDER BY g.sample_index, g.rowid)) FROM items i WHERE i.run_id = ?")]  # store/reads.py
    assert all("USING INDEX idx_grades_item_seq_id (item_seq=?)" in plan for plan in plans), plans


def test_a_grade_recorded_again_replaces_the_stored_one(store):
    run_id = store.create_run("skillmix", {})
    store.ensure_item(run_id, "skillmix.text", 0)
    item = store.item_id(run_id, "skillmix.text", 0)
    first = store.add_grade(item, run_id, 0, judge="fake", points=[1, 0], score=1.0)
    again = store.add_grades(item, run_id, [{"sample_index": 0, "judge": "fake", "points": [1, 1], "score": 2.0},
                                            {"sample_index": 1, "judge": "fake", "points": [0, 0], "score": 0.0}])
    assert again[0] == first
    assert [(g["id"], g["points"], g["score"]) for g in store.grades(item)] == \
        [(first, [1, 1], 2.0), (again[1], [0, 0], 0.0)]
    with pytest.raises(sqlite3.IntegrityError):  # the ids stay unique: the same id for the same item twice
        store.insert_rows("grades", [(first, item, run_id, "other", 5, "[]", 0.0, "ok", "t")])


def test_grades_of_one_sample_index_keep_the_order_they_were_recorded_in(store):
    run_id = store.create_run("skillmix", {})
    store.ensure_item(run_id, "skillmix.text", 0, k=2)
    item = store.item_id(run_id, "skillmix.text", 0)
    for judge, points in (("zeta", [1]), ("alpha", [0]), ("mid", [1, 1])):  # ids in another order than these
        store.add_grade(item, run_id, 0, judge=judge, points=points)
    store.add_grade(item, run_id, 1, judge="alpha", points=[2])
    assert [g["judge"] for g in store.grades(item)] == ["zeta", "alpha", "mid", "alpha"]
    assert [g["judge"] for g in next(items_with_grades(store, run_id))["grades"]] == ["zeta", "alpha", "mid", "alpha"]
    assert next(grade_samples(store, run_id, "skillmix.text"))[4] == [[1], [0], [1, 1], [2]]


def test_a_store_from_before_migrates_resumes_without_paying_twice_and_merges(cli_run, tmp_path):
    db = str(tmp_path / "old.db")
    assert cli_run("run", "skillmix", *RUN, db=db)[0] == 0
    before = run_content(db)
    _to_old_schema(db)
    calls, grades = _rows(db, "llm_calls"), _rows(db, "grades")
    conn = sqlite3.connect(db)  # every thread runs again from its input: its replies must all come from the store
    conn.executescript("DELETE FROM checkpoints; DELETE FROM writes; UPDATE items SET status = 'pending';")
    conn.close()
    Store(db).close()  # opening migrates
    assert _indexes(db, "grades") == [("idx_grades_item_seq_id", 1, ["item_seq", "id"])]  # m0160 ran too
    assert _rows(db, "grades", seq=False) == grades and _rows(db, "llm_calls", seq=False) == calls
    fresh = str(tmp_path / "fresh.db")
    Store(fresh).close()  # a new store takes the short way (no rows to copy): the same tables and indexes
    for table in ("llm_calls", "grades"):
        assert _info(db, table) == _info(fresh, table) and _indexes(db, table) == _indexes(fresh, table)
    code, _, err = cli_run("resume", "latest", db=db)
    assert code == 0, err
    assert _rows(db, "llm_calls", seq=False) == calls  # no reply made again
    # re-graded from the stored replies: the same grades, in the same order, but for their time (the last column)
    assert [r[1:-1] for r in _rows(db, "grades", seq=False)] == [r[1:-1] for r in grades]
    assert run_content(db) == before

    parts = [str(tmp_path / f"part{i}.db") for i in (1, 2)]
    for i, part in enumerate(parts, start=1):
        assert cli_run("run", "skillmix", *RUN, "--shard", f"{i}/2", db=part)[0] == 0
    _to_old_schema(parts[0])
    for source, target in merged_both_ways(cli_run, parts, tmp_path):  # old into new, new into old
        assert run_content(target) == before
        assert merge_stores([source], target)["added"]["grades"] == 0


def merged_both_ways(cli_run, parts: list[str], tmp_path):
    """Each of two shard stores merged with `merge` into a copy of the other (one of them may have an older
    schema: old into new, then new into old); yields (source, target) after each merge."""
    for source, target_from in ((parts[0], parts[1]), (parts[1], parts[0])):
        target = str(tmp_path / f"into-{source[-8:]}")
        with sqlite3.connect(target_from) as src, sqlite3.connect(target) as copy:
            src.backup(copy)
        code, _, err = cli_run("merge", source, "--into", target, db=target)
        assert code == 0, err
        yield source, target


def test_a_grade_id_both_stores_hold_must_agree(tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for path, score in ((a, 1.0), (b, 2.0)):
        store = Store(path)
        store.add_grade("item", "run", 0, judge="fake", points=[1], score=score)
        store.close()
    with pytest.raises(MergeConflict, match="grades id="):
        merge_stores([a], b)
    assert _fetch(b, "SELECT score FROM grades") == [(2.0,)]  # refused: the target as it was
