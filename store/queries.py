"""Small named lookups on the core tables, for modules outside `store/` that would otherwise write SQL.

Each function takes a `Store` and does one statement. Set-based reads of a whole run live in `store/reads.py`;
writes and the item/run/catalog accessors are `Store` methods. `tests/test_store_boundary.py` fails when raw
SQL on the store appears outside `store/` and the modules that own a table.
"""

from __future__ import annotations

from collections.abc import Sequence

from skillweave.store import jload, like_prefix


def run_exists(store, run_id: str) -> bool:
    return bool(store.db["runs"].count_where("id = ?", [run_id]))


def catalog_exists(store, catalog_id: str, kind: str | None = None) -> bool:
    """Whether a catalog with this id (and, when given, this kind) is stored."""
    if kind is None:
        return bool(store.db["catalogs"].count_where("id = ?", [catalog_id]))
    return bool(store.db["catalogs"].count_where("id = ? and kind = ?", [catalog_id, kind]))


def newest_catalog_id(store, name: str, kind: str) -> str | None:
    """The id of the newest stored catalog of `kind` named `name`, or None."""
    rows = list(store.db["catalogs"].rows_where("name = ? and kind = ?", [name, kind], order_by="created_at desc",
                                                limit=1))
    return rows[0]["id"] if rows else None


def catalogs_of_kinds(store, kinds: Sequence[str]) -> list[dict]:
    """The catalog rows (without entries) of the given kinds, newest first."""
    marks = ", ".join("?" * len(kinds))
    return list(store.db["catalogs"].rows_where(f"kind in ({marks})", list(kinds), order_by="created_at desc"))


def catalog_entry_count(store, catalog_id: str, *, status: str | None = None, except_status: str | None = None) -> int:
    """Entries of a catalog; `status` keeps only that status, `except_status` drops one (NULL counts as '')."""
    where, args = "catalog_id = ?", [catalog_id]
    if status is not None:
        where, args = where + " and status = ?", [*args, status]
    if except_status is not None:
        where, args = where + " and coalesce(status, '') != ?", [*args, except_status]
    return store.db["catalog_entries"].count_where(where, args)


def exemplar_count(store, catalog_id: str) -> int:
    return store.db["exemplars"].count_where("catalog_id = ?", [catalog_id])


def call_count(store, run_id: str | None = None) -> int:
    """Model calls recorded in the store, or in one run."""
    where, args = ("run_id = ?", [run_id]) if run_id else (None, [])
    return store.db["llm_calls"].count_where(where, args)


def latest_review(store, item_id: str) -> dict | None:
    """An item's newest review with its `changes` decoded, or None."""
    rows = list(store.db["reviews"].rows_where("item_id = ?", [item_id], order_by="created_at desc", limit=1))
    return {**rows[0], "changes": jload(rows[0]["changes"], {})} if rows else None


def item_exists(store, item_id: str) -> bool:
    return bool(store.db["items"].count_where("id = ?", [item_id]))


def item_ids_with_prefix(store, prefix: str, limit: int = 3) -> list[str]:
    """Ids of items starting with `prefix` (`_` and `%` in it match themselves), at most `limit`."""
    return [r["id"] for r in store.db["items"].rows_where("id like ? escape '\\'", [like_prefix(prefix)],
                                                           limit=limit)]


def item_reviews(store, item_id: str) -> list[dict]:
    """An item's reviews as stored (`changes` as JSON text), oldest first."""
    return list(store.db["reviews"].rows_where("item_id = ?", [item_id], order_by="created_at"))


def item_events(store, item_id: str) -> list[dict]:
    """An item's events in the order they were logged."""
    return list(store.db["events"].rows_where("item_id = ?", [item_id], order_by="id"))


def call_by_id(store, call_id: str) -> dict | None:
    return store._one("SELECT * FROM llm_calls WHERE id = ?", [call_id])


def calls_with_prefix(store, prefix: str, limit: int = 2) -> list[dict]:
    """Model calls whose id starts with `prefix` (matched literally), at most `limit`."""
    return store._all("SELECT * FROM llm_calls WHERE id LIKE ? ESCAPE '\\' LIMIT ?", [like_prefix(prefix), limit])


def successful_calls(store, run_id: str) -> list[dict]:
    """A run's model calls without an error (role, model, request and response as JSON text), oldest first."""
    return store._all("SELECT role, model, request, response FROM llm_calls WHERE run_id = ? AND error IS NULL "
                      "ORDER BY created_at", [run_id])


def event_count(store, run_id: str, *, stage: str, status: str) -> int:
    """How many events of a run have this stage and status."""
    return store._one("SELECT count(*) n FROM events WHERE run_id = ? AND stage = ? AND status = ?",
                      [run_id, stage, status])["n"]
