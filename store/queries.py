"""Small named lookups on the core tables, for modules outside `store/` that would otherwise write SQL.

Each function takes a `Store` and does one statement. Set-based reads of a whole run live in `store/reads.py`;
writes and the item/run/catalog accessors are `Store` methods. `tests/test_store_boundary.py` fails when raw
SQL on the store appears outside `store/` and the modules that own a table.
"""

from __future__ import annotations

from collections.abc import Sequence

from skillweave.store import jload, like_prefix, rows_of_item, without_item_seq


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
    return rows_of_item(store, "events", item_id, "id")


def call_by_id(store, call_id: str) -> dict | None:
    """A call by its full id. Call ids are not indexed (store/migrations/m0140_call_ids_unindexed.py): this scans the
    table's `id` column, reading no request or reply that does not match."""
    return without_item_seq(store._one("SELECT * FROM llm_calls WHERE id = ?", [call_id]))


def calls_with_prefix(store, prefix: str, limit: int = 2) -> list[dict]:
    """Model calls whose id starts with `prefix` (matched literally), at most `limit`."""
    return [without_item_seq(c) for c in store._all("SELECT * FROM llm_calls WHERE id LIKE ? ESCAPE '\\' LIMIT ?",
                                                    [like_prefix(prefix), limit])]


def successful_calls(store, run_id: str) -> list[dict]:
    """A run's model calls without an error (role, model, request and response as JSON text), oldest first."""
    return store._all("SELECT role, model, request, response FROM llm_calls WHERE run_id = ? AND error IS NULL "
                      "ORDER BY created_at", [run_id])


def event_count(store, run_id: str, *, stage: str, status: str) -> int:
    """How many events of a run have this stage and status."""
    return store._one("SELECT count(*) n FROM events WHERE run_id = ? AND stage = ? AND status = ?",
                      [run_id, stage, status])["n"]


# ---- counts and listings for reports, `runs show`, `logs` and dataset cards ------------------------------
def item_status_counts(store, run_id: str) -> dict[str, int]:
    """`{status: items}` of one run."""
    return {r["status"]: r["n"] for r in store._all(
        "select status, count(*) n from items where run_id = ? group by status", [run_id])}


def item_count(store, run_id: str, *, kind: str, status: str) -> int:
    return store._one("select count(*) n from items where run_id = ? and kind = ? and status = ?",
                      [run_id, kind, status])["n"]


def review_count(store, run_id: str, *, decision: str) -> int:
    return store._one("select count(*) n from reviews where run_id = ? and decision = ?", [run_id, decision])["n"]


def recent_calls(store, run_id: str | None = None, *, errors_only: bool = False, limit: int = 20) -> list[dict]:
    """The newest model calls (of one run; only failed ones with `errors_only`), newest first, as stored."""
    clauses, args = [], []
    if run_id:
        clauses.append("run_id = ?")
        args.append(run_id)
    if errors_only:
        clauses.append("error is not null")
    return [without_item_seq(c) for c in store.db["llm_calls"].rows_where(
        " and ".join(clauses) or None, args, order_by="created_at desc", limit=limit)]


def call_counts_by_model(store, run_id: str) -> list[dict]:
    """`[{role, provider, model, n}]`: a run's successful calls per role and model."""
    return store._all("select role, provider, model, count(*) as n from llm_calls where run_id = ? and error is null "
                      "group by role, provider, model", [run_id])


def prompt_names(store, versions) -> dict[str, str]:
    """`{version: template name}` for the given prompt versions that are stored."""
    versions = sorted(versions)
    if not versions:
        return {}
    marks = ", ".join("?" * len(versions))
    return {r["id"]: r["name"] for r in store._all(f"select id, name from prompt_versions where id in ({marks})",
                                                   versions)}


def replies_by_role(store, run_id: str) -> list[dict]:
    """`[{role, n}]`: replies (samples) of a run's successful calls per role."""
    return store._all("SELECT role, SUM(CASE WHEN json_valid(response) THEN json_array_length(response) ELSE 0 END)"
                      " AS n FROM llm_calls WHERE run_id = ? AND error IS NULL GROUP BY role", [run_id])


def distinct_events_by_stage(store, run_id: str, statuses) -> list[dict]:
    """`[{stage, n}]`: distinct (item, stage, reason) events of a run with one of `statuses`, per stage."""
    statuses = list(statuses)
    marks = ",".join("?" * len(statuses))
    return store._all(f"SELECT stage, COUNT(*) AS n FROM (SELECT DISTINCT item_id, stage, reason FROM events "
                      f"WHERE run_id = ? AND status IN ({marks})) GROUP BY stage", [run_id, *statuses])


def grades_by_step(store, run_id: str, parse_statuses) -> list[dict]:
    """`[{step, n}]`: a run's grades with one of `parse_statuses`, per role of the call behind them ('grade'
    when the grade has no call)."""
    parse_statuses = list(parse_statuses)
    marks = ",".join("?" * len(parse_statuses))
    # call ids are not indexed (store/migrations/m0140_call_ids_unindexed.py): a grade's call is found among its
    # item's calls, and only a grade whose call belongs to no call of its item looks it up in the whole table
    return store._all(f"SELECT COALESCE(c.role, CASE WHEN g.call_id IS NULL THEN NULL ELSE (SELECT role FROM "
                      f"llm_calls WHERE id = g.call_id LIMIT 1) END, 'grade') AS step, COUNT(*) AS n FROM grades g "
                      f"LEFT JOIN llm_calls c ON c.item_seq = g.item_seq AND c.item_id = g.item_id AND c.id = g.call_id "
                      f"WHERE g.run_id = ? AND g.parse_status IN ({marks}) GROUP BY step", [run_id, *parse_statuses])
