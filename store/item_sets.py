"""Sets of item ids for forget selectors (trainers/unlearning/lineage.py): items of a run, with a skill, made
with a template, their children; and a temporary id table for sets of any size.

`id_table` loads ids into a connection-local temporary table and returns a subquery over it, so an `IN` clause
takes a forget set of any size (no SQLite variable limit). The table is refilled on every call: use the
returned subquery before the next call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from skillweave.store import Store, jload


def id_table(store: Store, ids: Iterable[str]) -> str:
    """Load `ids` into the temporary table `_sw_ids`; returns `(select id from _sw_ids)` for an IN clause."""
    conn = store.db.conn
    conn.execute("create temp table if not exists _sw_ids (id text primary key)")
    conn.execute("delete from _sw_ids")
    conn.executemany("insert or ignore into _sw_ids values (?)", [(i,) for i in ids])
    return "(select id from _sw_ids)"


def _ids(store: Store, sql: str, args: list) -> list[str]:
    return [row[0] for row in store.db.conn.execute(sql, args).fetchall()]


def run_item_ids(store: Store, run_id: str) -> list[str]:
    return _ids(store, "select id from items where run_id = ?", [run_id])


def item_ids_with_skill(store: Store, skill: str) -> list[str]:
    return _ids(store, "select distinct items.id from items, json_each(items.skills) where json_each.value = ?",
                [skill])


def item_ids_from_template(store: Store, version_or_name: str) -> list[str]:
    """Items made with a template version, or with any stored version of a template name: through the item's
    `prompt_versions` and through its model calls' `prompt_version`."""
    versions = {version_or_name} | set(_ids(store, "select id from prompt_versions where name = ?",
                                            [version_or_name]))
    marks = ", ".join("?" * len(versions))
    return _ids(store, f"select distinct items.id from items, json_each(items.prompt_versions) "
                       f"where json_each.value in ({marks}) union select distinct item_id as id from llm_calls "
                       f"where prompt_version in ({marks}) and item_id is not null", [*versions, *versions])


def present_item_ids(store: Store, ids: Iterable[str]) -> set[str]:
    """Which of `ids` are stored items."""
    return set(_ids(store, f"select id from items where id in {id_table(store, ids)}", []))


def child_item_ids(store: Store, parent_ids: Iterable[str]) -> list[str]:
    """Items whose `parent_id` is one of `parent_ids`."""
    return _ids(store, f"select id from items where parent_id in {id_table(store, parent_ids)}", [])


def item_payloads(store: Store) -> Iterator[tuple[str, dict]]:
    """(item id, decoded payload) of every item, oldest first (ties by id)."""
    for item_id, payload in store.db.conn.execute("select id, payload from items order by created_at, id"):
        yield item_id, jload(payload, {}) or {}


def all_item_ids(store: Store) -> list[str]:
    """Every item id, oldest first (ties by id)."""
    return _ids(store, "select id from items order by created_at, id", [])
