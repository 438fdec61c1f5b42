"""A run's set-up writes and reads its run row and catalogs with plain SQL instead of sqlite-utils' introspecting
helpers: the same rows and answers as before, in fewer statements; a catalog already stored is not written again."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from skillweave.errors import NotFound
from skillweave.store import Store, jdump, jload, stable_id

ENTRIES = [
    {"name": "metaphor", "category": "rhetoric", "definition": "a figure of speech", "example": "time is money",
     "status": "kept", "parent": None, "extra": {"source": "paper", "rank": 1}},
    {"name": "list field", "category": ["a", "b"], "definition": {"nested": True}, "example": 7, "status": None,
     "parent": dt.date(2026, 12, 7), "extra": {}},
    {"name": "bare"},
]
EXEMPLARS = [{"skill": "metaphor", "question": "q?", "answer": ["a", 1], "extra": {"k": "v"}, "source_item_id": "i1"},
             {"skill": "bare"}]


def _old_save_catalog(store: Store, name, kind, entries, *, source="", meta=None, exemplars=()):
    """What save_catalog wrote before, through sqlite-utils (kept here to compare the rows)."""
    exemplars = list(exemplars)
    catalog_id = f"{kind}-" + stable_id(kind, entries, exemplars, length=16)
    store.db["catalogs"].insert({"id": catalog_id, "name": name, "kind": kind, "source": source,
                                 "meta": jdump(meta or {}), "created_at": "t"})
    store.db["catalog_entries"].insert_all(
        {"id": stable_id(catalog_id, i), "catalog_id": catalog_id, "position": i, "name": e["name"],
         "category": e.get("category"), "definition": e.get("definition"), "example": e.get("example"),
         "status": e.get("status"), "parent": e.get("parent"), "extra": jdump(e.get("extra") or {})}
        for i, e in enumerate(entries))
    store.db["exemplars"].insert_all(
        {"id": stable_id(catalog_id, "x", i), "catalog_id": catalog_id, "skill": x["skill"],
         "question": x.get("question"), "answer": x.get("answer"), "extra": jdump(x.get("extra") or {}),
         "source_item_id": x.get("source_item_id")}
        for i, x in enumerate(exemplars))
    return catalog_id


def _old_get_catalog(store: Store, catalog_id: str) -> dict:
    row = store.db["catalogs"].get(catalog_id)
    entries = [{**e, "extra": jload(e["extra"], {})}
               for e in store.db["catalog_entries"].rows_where("catalog_id = ?", [catalog_id], order_by="position")]
    exemplars = [{**x, "extra": jload(x["extra"], {})}
                 for x in store.db["exemplars"].rows_where("catalog_id = ?", [catalog_id], order_by="rowid")]
    return {**row, "meta": jload(row["meta"], {}), "entries": entries, "exemplars": exemplars}


def _rows(store: Store, table: str) -> list[tuple]:
    return [tuple(r) for r in store.db.conn.execute(f"SELECT * FROM [{table}] ORDER BY rowid")]


def test_catalog_rows_and_reads_equal_what_sqlite_utils_gave(tmp_path):
    new, old = Store(tmp_path / "new.db"), Store(tmp_path / "old.db")
    try:
        for store, save in ((new, Store.save_catalog), (old, _old_save_catalog)):
            ids = [save(store, "skills", "skills", ENTRIES, source="file.csv", meta={"m": [1]}, exemplars=EXEMPLARS),
                   save(store, "topics", "topics", [{"name": t} for t in ("a", "b")])]
        for table in ("catalog_entries", "exemplars"):
            assert _rows(new, table) == _rows(old, table)
        assert [r[:-1] for r in _rows(new, "catalogs")] == [r[:-1] for r in _rows(old, "catalogs")]  # but the time
        for catalog_id in ids:
            got, want = new.get_catalog(catalog_id), _old_get_catalog(old, catalog_id)
            assert {**got, "created_at": None} == {**want, "created_at": None}
        with pytest.raises(NotFound):
            new.get_catalog("skills-missing")
    finally:
        new.close()
        old.close()


def test_a_stored_catalog_is_one_read_and_no_write(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        first = store.save_catalog("skills", "skills", ENTRIES, exemplars=EXEMPLARS)
        seen: list[str] = []
        store.db.conn.set_trace_callback(seen.append)
        changes = store.db.conn.total_changes
        assert store.save_catalog("again", "skills", ENTRIES, exemplars=EXEMPLARS) == first
        assert len(seen) == 1 and seen[0].startswith("SELECT") and store.db.conn.total_changes == changes
    finally:
        store.close()


def test_run_rows_read_and_update_as_before(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        with pytest.raises(NotFound):
            store.get_run("latest")
        first = store.create_run("skillmix", {"k": [2]}, command="skillweave run skillmix", run_id="run-a")
        second = store.create_run("skillmix", {"k": [3]}, run_id="run-b")
        with pytest.raises(sqlite3.IntegrityError):  # a run id is never stored twice
            store.create_run("skillmix", {}, run_id="run-a")
        store.db.conn.execute("UPDATE runs SET created_at = '9999' WHERE id = ?", [second])
        assert store.get_run("latest")["id"] == second
        store.set_run_status(first, "failed", error="boom")
        store.set_run_config(first, {"k": [4]})
        run = store.get_run(first)
        old = store.db["runs"].get(first)  # sqlite-utils' read of the same row
        assert run == {**old, "config": {"k": [4]}}
        assert (run["status"], run["error"], run["command"]) == ("failed", "boom", "skillweave run skillmix")
        assert run["finished_at"] == run["updated_at"] and run["prompts_dir"] is None
        store.set_run_status(first, "running")
        assert store.get_run(first)["finished_at"] == run["finished_at"]  # kept: only done and failed set it
        for call in (lambda: store.set_run_status("missing", "done"), lambda: store.set_run_config("missing", {}),
                     lambda: store.get_run("missing")):
            with pytest.raises(NotFound, match="no run 'missing'"):
                call()
        assert [r[0] for r in store.db.conn.execute("SELECT id FROM runs ORDER BY id")] == ["run-a", "run-b"]
        store.link_run_catalog(first, "skills-x", "skills")
        store.link_run_catalog(first, "skills-x", "skills")  # linked once
        store.link_run_catalog(first, "topics-y", "topics")
        assert store.run_catalogs(first) == {"skills": "skills-x", "topics": "topics-y"}
        assert store.run_catalogs(second) == {}
    finally:
        store.close()


def _statements(cli_run, db: str) -> int:
    counted: list[str] = []
    connect = sqlite3.connect

    def counting(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(counted.append)
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", counting)
        code, _out, err = cli_run("run", "skillmix", "--model", "fake", "--k", "3", "--n", "1", "--rounds", "1",
                                  "--grading-samples", "1", db=db)
    assert code == 0, err
    return len(counted)


def test_a_one_item_run_takes_few_statements(cli_run, tmp_path):
    """A one-item Skill-Mix run into an existing store (before plain SQL for the run row and catalogs: 157), and into
    a new file: a copy of the template, so beyond the existing store's count only the catalogs' rows (one statement
    each) and a few statements more (the snapshot's statements would add about sixty)."""
    existing = str(tmp_path / "existing.db")
    _statements(cli_run, existing)
    into_existing = _statements(cli_run, existing)
    assert into_existing <= 70
    new = str(tmp_path / "new.db")
    into_new = _statements(cli_run, new)
    rows = sqlite3.connect(new).execute("SELECT (SELECT count(*) FROM catalog_entries) + "
                                        "(SELECT count(*) FROM exemplars)").fetchone()[0]
    assert rows > 0 and into_new - into_existing <= rows + 15


def test_run_row_writes_are_committed_at_once_inside_a_tick_and_after_its_loop_is_gone(tmp_path):
    """A run's status is committed when it is written: inside a tick it commits the tick's open writes with it, and
    it needs no running event loop (after Ctrl-C ends a run, its loop is closed while the store still batches for
    it). Before, it joined the tick's open transaction, so an `interrupted` status could stay uncommitted."""
    import asyncio

    path = str(tmp_path / "s.db")
    store = Store(path)
    run_id = store.create_run("skillmix", {})

    def seen_by_another_connection() -> tuple:
        other = sqlite3.connect(path)
        try:
            return (other.execute("SELECT status FROM runs").fetchone()[0],
                    other.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            other.close()

    async def tick():
        with store.batch_writes():
            store.add_event(run_id, None, "stage", "started")  # opens the tick's transaction
            store.set_run_status(run_id, "paused")
            assert seen_by_another_connection() == ("paused", 1)
            store.add_event(run_id, None, "stage", "again")
            dangling[:] = store._batch  # what a Ctrl-C leaves: the batch of a loop that is about to close

    dangling: list = []
    try:
        asyncio.run(tick())
        store._batch = dangling
        store.set_run_status(run_id, "interrupted", error="KeyboardInterrupt")
        assert seen_by_another_connection() == ("interrupted", 2)
    finally:
        store._batch = None
        store.close()
