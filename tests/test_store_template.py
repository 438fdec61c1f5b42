"""A new store file is a copy of a prepared empty store (store/template.py): the same store the migrations make, and
a template that is damaged, stale or misnamed is never copied."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from skillweave import store as store_module
from skillweave.store import Store, _migration_sets, now
from skillweave.store import template as template_module
from tests.test_scale_grade_index import _fetch

PRAGMAS = ("page_size", "journal_mode", "user_version", "application_id", "auto_vacuum", "encoding")
# the same in a store made from the snapshot's statements; one migrated step by step has dropped tables (free pages)
# and counted more schema changes
FILE_PRAGMAS = ("freelist_count", "schema_version", "page_count")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test its own cache folder, and no template remembered from another test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SKILLWEAVE_CACHE", str(folder))
    template_module._READ.clear()
    yield folder
    template_module._READ.clear()


def _shape(path: str, pragmas: tuple[str, ...] = PRAGMAS) -> dict:
    """What makes two empty stores the same: sqlite_master, the file's pragmas, the migrations recorded."""
    conn = sqlite3.connect(path)
    try:
        return {"master": conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall(),
                "pragmas": {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas},
                "migrations": [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")],
                "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0]}
    finally:
        conn.close()


def _new(path: Path, **kwargs) -> Store:
    return Store(str(path), **kwargs)


def _key() -> str:
    return store_module._template_key()


def test_a_store_copied_from_the_template_equals_one_made_by_the_migrations(tmp_path, cache):
    stepwise, from_snapshot = tmp_path / "stepwise.db", tmp_path / "from-snapshot.db"
    _new(stepwise, snapshot=False).close()
    _new(from_snapshot, template=False).close()
    before = now()
    first = _new(tmp_path / "first.db")  # makes the template, then copies it
    second = _new(tmp_path / "second.db")  # copies the template the first one made
    try:
        assert first.from_template and second.from_template
        assert (cache / template_module.template_path(_key()).name).is_file()
        for store in (first, second):
            run_id = store.create_run("skillmix", {"k": [2]})  # a usable store
            assert store.get_run(run_id)["config"] == {"k": [2]}
    finally:
        first.close()
        second.close()
    expected = _shape(str(stepwise))
    assert expected["integrity"] == "ok" and expected["migrations"] == sorted(_migration_sets())
    for path in ("first.db", "second.db"):
        assert _shape(str(tmp_path / path)) == expected
        assert _shape(str(tmp_path / path), PRAGMAS + FILE_PRAGMAS) == _shape(str(from_snapshot), PRAGMAS + FILE_PRAGMAS)
        stamps = {r[0] for r in _fetch(str(tmp_path / path), "SELECT applied_at FROM _migrations")}
        assert len(stamps) == 1 and stamps.pop() >= before  # this file's own time, not the template's placeholder
    for leftover in os.listdir(tmp_path):
        assert not leftover.endswith(".new"), leftover  # no temporary file left beside the stores


def test_an_existing_store_or_one_with_a_wal_left_beside_it_is_not_copied_over(tmp_path):
    path = tmp_path / "store.db"
    store = _new(path)
    run_id = store.create_run("skillmix", {})
    store.close()
    again = _new(path)
    try:
        assert not again.from_template and again.get_run(run_id)["id"] == run_id
    finally:
        again.close()
    orphan = tmp_path / "orphan.db"
    Path(f"{orphan}-wal").write_bytes(b"")  # a -wal file whose store is gone: SQLite decides, as before
    store = _new(orphan)
    try:
        assert not store.from_template
        assert [r[0] for r in store.db.conn.execute("SELECT name FROM _migrations ORDER BY name")] == sorted(
            _migration_sets())
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["flipped byte", "cut off", "another key", "not a template"])
def test_a_damaged_or_misnamed_template_is_not_used_and_is_made_again(tmp_path, damage):
    _new(tmp_path / "first.db").close()
    path = template_module.template_path(_key())
    blob = bytearray(path.read_bytes())
    if damage == "flipped byte":
        blob[len(blob) // 2] ^= 0xFF  # inside the store's pages: the header is intact, the CRC is not
    elif damage == "cut off":
        blob = blob[: len(blob) // 2]
    elif damage == "another key":  # a whole template of another schema under this name
        blob = blob.replace(_key().encode(), b"0" * len(_key()), 1)
    else:
        blob = bytearray(b"SQLite format 3\x00" + bytes(4096))
    path.write_bytes(bytes(blob))
    template_module._READ.clear()  # as a new process finds it
    assert template_module.read_template(_key()) is None
    made = []
    real = template_module.make_template
    copied = tmp_path / "copied.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(template_module, "make_template", lambda key, build: made.append(key) or real(key, build))
        store = _new(copied)
    try:
        assert made == [_key()] and store.from_template  # made again, then copied
    finally:
        store.close()
    stepwise = tmp_path / "stepwise.db"
    _new(stepwise, snapshot=False).close()
    assert _shape(str(copied)) == _shape(str(stepwise))
    template_module._READ.clear()
    assert template_module.read_template(_key()) is not None  # the cache holds a whole template again


def test_without_a_template_a_new_store_is_made_from_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(template_module, "make_template", lambda key, build: None)  # e.g. the cache is not writable
    store = _new(tmp_path / "plain.db")
    try:
        assert not store.from_template
    finally:
        store.close()
    stepwise = tmp_path / "stepwise.db"
    _new(stepwise, snapshot=False).close()
    assert _shape(str(tmp_path / "plain.db")) == _shape(str(stepwise))


def test_a_template_of_another_schema_is_never_found(tmp_path, monkeypatch):
    """A changed snapshot (a new migration, another table) has another key: the old template is not used."""
    changed = tmp_path / "schema.sql"
    changed.write_text(store_module.SCHEMA_SNAPSHOT.read_text() + "CREATE TABLE extra (x TEXT);\n")
    real_snapshot = store_module.SCHEMA_SNAPSHOT
    monkeypatch.setattr(store_module, "SCHEMA_SNAPSHOT", changed)
    other_key = _key()
    _new(tmp_path / "with-extra.db").close()
    assert ("table", "extra") in _fetch(str(tmp_path / "with-extra.db"), "SELECT type, name FROM sqlite_master")
    monkeypatch.setattr(store_module, "SCHEMA_SNAPSHOT", real_snapshot)
    assert _key() != other_key
    store = _new(tmp_path / "today.db")
    try:
        assert store.from_template
    finally:
        store.close()
    assert ("table", "extra") not in _fetch(str(tmp_path / "today.db"), "SELECT type, name FROM sqlite_master")
    stale = tmp_path / "stale.sql"  # a snapshot that does not name today's migrations: no template at all
    stale.write_text("-- migrations: m0001_core\nCREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT);\n")
    monkeypatch.setattr(store_module, "SCHEMA_SNAPSHOT", stale)
    store = _new(tmp_path / "migrated.db")
    try:
        assert not store.from_template
    finally:
        store.close()


def test_placing_never_writes_over_a_file_or_without_the_placeholders(tmp_path):
    _new(tmp_path / "first.db").close()
    data = template_module.read_template(_key())
    migrations = len(_migration_sets())
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"another process's new store")
    assert not template_module.place(str(taken), data, now(), migrations)
    assert taken.read_bytes() == b"another process's new store"
    stamped = data.replace(template_module.PLACEHOLDER.encode(), now().encode(), 1)  # one placeholder short
    assert not template_module.place(str(tmp_path / "short.db"), stamped, now(), migrations)
    assert not template_module.place(str(tmp_path / "stamp.db"), data, "2026-12-07", migrations)  # not a stamp
    assert sorted(os.listdir(tmp_path)) == ["cache", "first.db", "taken.db"]
