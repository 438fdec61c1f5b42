"""A new store is made from store/schema.sql in one step; the snapshot must be what replaying every migration gives."""

from __future__ import annotations

from skillweave import store as store_module
from skillweave.store import Store, _migration_sets, schema_statements
from tests.test_scale_grade_index import _fetch


def _master(path: str) -> list[tuple]:
    return _fetch(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def test_the_snapshot_is_what_every_migration_gives():
    replayed = Store(":memory:", snapshot=False)
    try:
        assert store_module._read_schema_snapshot() == schema_statements(replayed.db.conn), (
            "store/schema.sql is stale: run `python -c 'from skillweave.store import write_schema_snapshot; "
            "write_schema_snapshot()'` after adding a migration")
    finally:
        replayed.close()


def test_a_new_file_from_the_snapshot_equals_one_migrated_step_by_step(tmp_path, monkeypatch):
    stepwise = str(tmp_path / "stepwise.db")
    Store(stepwise, snapshot=False).close()
    monkeypatch.setattr(store_module, "migration_modules", lambda: (_ for _ in ()).throw(AssertionError("replayed")))
    fresh = str(tmp_path / "fresh.db")
    store = Store(fresh)  # no migration is run for a new file
    try:
        assert [r["name"] for r in store.db["_migrations"].rows_where(order_by="name")] == sorted(_migration_sets())
        run_id = store.create_run("skillmix", {})  # a usable store
        assert store.get_run(run_id)["status"] == "running"
    finally:
        store.close()
    assert _master(fresh) == _master(stepwise)


def test_a_stale_or_missing_snapshot_falls_back_to_the_migrations(tmp_path, monkeypatch):
    stepwise = str(tmp_path / "stepwise.db")
    Store(stepwise, snapshot=False).close()
    stale = tmp_path / "schema.sql"
    stale.write_text("-- migrations: m0001_core\nCREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT);\n")
    for snapshot in (stale, tmp_path / "missing.sql"):
        monkeypatch.setattr(store_module, "SCHEMA_SNAPSHOT", snapshot)
        path = str(tmp_path / f"from-{snapshot.name}.db")
        Store(path).close()
        assert _master(path) == _master(stepwise)


def test_an_existing_store_is_not_remade(tmp_path):
    path = str(tmp_path / "store.db")
    store = Store(path)
    run_id = store.create_run("skillmix", {})
    store.close()
    store = Store(path)
    try:
        assert store.get_run(run_id) is not None
    finally:
        store.close()
