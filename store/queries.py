"""Small named lookups on the core tables, for modules outside `store/` that would otherwise write SQL.

Each function takes a `Store` and does one statement. Set-based reads of a whole run live in `store/reads.py`;
writes and the item/run/catalog accessors are `Store` methods. `tests/test_store_boundary.py` fails when raw
SQL on the store appears outside `store/` and the modules that own a table.
"""

from __future__ import annotations

from collections.abc import Sequence

from skillweave.store import jload


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
