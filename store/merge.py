"""Merging stores: the shards of a run (graphs/shards.py), or any stores, into one, with their lineage.

Every table of each source is copied into the target (tables the target lacks, such as LangGraph's checkpoint
tables, are created from the source's schema). A row whose primary key is already in the target must agree
with it, except for:

- `runs`: shards of one run share its id; their configs must agree apart from the shard, concurrency and reply
  cache; the merged run drops `shard`, lists the merged shards in `merged_shards` and takes the least finished
  status of the parts (running > interrupted > failed > paused > done).
- `items`: an item still `pending` (planned by a shard that did not run it) yields to one that progressed.
- rows without a natural key (`events`) are copied once: a row equal in every column but its id is skipped.

Timestamps (`created_at`, `updated_at`, `finished_at`) never count as a disagreement. Any other difference stops
the merge with an error naming the table, key and files; everything happens in one transaction, so a refused
merge leaves the target as it was. Sources are opened read-only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from skillweave.errors import UsageError
from skillweave.store import ITEM_SEQ, ITEM_SEQ_TABLES, Store, jdump, jload

IGNORED = {"created_at", "updated_at", "finished_at", "pinned_at"}
# Config keys that may differ between the shards of one run (they do not change the plan or the results).
PER_MACHINE_KEYS = ("shard", "concurrency", "reply_cache")
STATUS_ORDER = ["running", "interrupted", "failed", "paused", "done"]
SKIP_TABLES = {"_migrations", "sqlite_sequence"}
# Keys of tables that declare none: model-call ids are not indexed in a store (m0140_call_ids_unindexed) and grade
# ids only after their item (m0150_grade_lookup), but an id the target holds is still the same call or grade, so it
# must agree; the target's ids are indexed while merging.
UNDECLARED_KEYS = {"llm_calls": ["id"], "grades": ["id"]}
# `item_seq` is the rowid of a row's item in its own file (m0160_item_seq): never copied or compared, it is set in
# the target after every table is merged (an item may be merged after its calls, grades and events).
LOCAL_COLUMNS = {"item_seq"}


class MergeConflict(UsageError):
    """Two stores hold different records under the same key."""


def _open_source(path: str) -> sqlite3.Connection:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"no store at '{path}'")
    try:
        conn = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"'{path}' cannot be read as a store: {exc}") from None
    if "_migrations" not in tables:
        raise UsageError(f"'{path}' is not a skillweave store (no _migrations table)")
    return conn


def _columns(conn, table: str) -> tuple[list[str], list[str]]:
    info = conn.execute(f"PRAGMA table_info([{table}])").fetchall()
    cols = [r[1] for r in info]
    pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    if pk == ["id"] and any(r[1] == "id" and r[2].upper() == "INTEGER" for r in info):
        pk = []  # an autoincrement id is no identity across stores
    return cols, pk


def _differs(a: dict, b: dict, skip=()) -> list[str]:
    return [c for c in a if c not in IGNORED and c not in skip and c in b and a[c] != b[c]]


def _merge_run(existing: dict, row: dict, where: str) -> dict | None:
    """The merged runs row, or None when nothing changes."""
    ca, cb = jload(existing["config"], {}), jload(row["config"], {})
    strip = lambda c: {k: v for k, v in c.items() if k not in (*PER_MACHINE_KEYS, "merged_shards")}  # noqa: E731
    if strip(ca) != strip(cb) or existing["pipeline"] != row["pipeline"]:
        keys = sorted(k for k in set(strip(ca)) | set(strip(cb)) if strip(ca).get(k) != strip(cb).get(k))
        raise MergeConflict(f"run {row['id']} differs between the stores ({where}): config keys "
                            f"{', '.join(keys) or 'pipeline'}; not merged, the target is unchanged")
    shard_list = sorted({*(ca.get("merged_shards") or []), *(cb.get("merged_shards") or []),
                         *[c["shard"] for c in (ca, cb) if c.get("shard")]})
    if not shard_list and ca == cb:
        return None
    merged = {k: v for k, v in ca.items() if k != "shard"}
    if shard_list:
        merged["merged_shards"] = shard_list
    status = min(existing["status"], row["status"],
                 key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else -1)
    finished = max(filter(None, [existing.get("finished_at"), row.get("finished_at")]), default=None)
    return {"config": jdump(merged), "status": status, "finished_at": finished,
            "error": existing.get("error") or row.get("error")}


def merge_stores(sources: list[str], target: str) -> dict:
    for src in sources:
        if Path(src).expanduser().resolve() == Path(target).expanduser().resolve():
            raise UsageError(f"'{src}' is also the --into store; merge into a different file")
    conns = [_open_source(s) for s in sources]  # every source checked before the target is touched
    store = Store(target)
    tconn = store.db.conn
    added: dict[str, int] = {}
    try:
        with store.transaction():
            for path, conn in zip(sources, conns, strict=True):
                conn.row_factory = sqlite3.Row
                tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                      "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
                for table in tables:
                    name = table["name"]
                    if name in SKIP_TABLES:
                        continue
                    exists = tconn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                           [name]).fetchone()
                    if not exists:
                        tconn.execute(table["sql"])
                    added[name] = added.get(name, 0) + _merge_table(tconn, conn, name, path, target)
            _set_item_seq(tconn)
    finally:
        for conn in conns:
            conn.close()
    runs = []
    for run in store.db["runs"].rows_where(order_by="created_at"):
        config = jload(run["config"], {})
        runs.append({"id": run["id"], "status": run["status"], "shards": config.get("merged_shards") or [],
                     "items": store.db["items"].count_where("run_id = ?", [run["id"]])})
    store.close()
    return {"into": target, "sources": sources, "added": added, "runs": runs}


def _merge_table(tconn, sconn, table: str, path: str, target: str) -> int:
    scols, _ = _columns(sconn, table)
    tcols, pk = _columns(tconn, table)
    lookup = None
    if not pk and all(c in tcols for c in UNDECLARED_KEYS.get(table, [None])):
        pk, lookup = UNDECLARED_KEYS[table], f"[_merge_{table}_key]"
        tconn.execute(f"CREATE INDEX {lookup} ON [{table}] ({', '.join(f'[{c}]' for c in pk)})")
    try:
        return _merge_rows(tconn, sconn, table, path, target, scols, tcols, pk)
    finally:
        if lookup:
            tconn.execute(f"DROP INDEX IF EXISTS {lookup}")


def _merge_rows(tconn, sconn, table: str, path: str, target: str, scols: list[str], tcols: list[str],
                pk: list[str]) -> int:
    scols = [c for c in scols if c not in LOCAL_COLUMNS]
    missing = [c for c in scols if c not in tcols]
    if missing:
        raise UsageError(f"'{path}' has columns {', '.join(missing)} in {table} that '{target}' lacks (a newer "
                         "skillweave made it); merge with that version")
    cols = [c for c in scols if not (c == "id" and not pk and "id" in scols and table != "runs"
                                     and _is_autoinc(sconn, table))]
    collist = ", ".join(f"[{c}]" for c in cols)
    insert = f"INSERT INTO [{table}] ({collist}) VALUES ({', '.join('?' * len(cols))})"
    count = 0
    # no identity (events): the same row, all columns but an autoincrement id, is copied once; one set per table
    # instead of a full-table query per row
    seen = None if pk else {tuple(r) for r in tconn.execute(f"SELECT {collist} FROM [{table}]")}
    for src in sconn.execute(f"SELECT {collist} FROM [{table}]"):
        values = tuple(src)
        if seen is not None:
            if values not in seen:
                tconn.execute(insert, list(values))
                seen.add(values)
                count += 1
            continue
        row = dict(zip(cols, values, strict=True))
        cur = tconn.execute(f"SELECT * FROM [{table}] WHERE " + " AND ".join(f"[{c}] = ?" for c in pk),
                            [row[c] for c in pk])
        found = cur.fetchone()
        if found is None:
            tconn.execute(insert, list(values))
            count += 1
            continue
        existing = dict(zip([d[0] for d in cur.description], found, strict=True))
        where = f"'{path}' against '{target}'"
        if table == "runs":
            update = _merge_run(existing, row, where)
            if update:
                tconn.execute("UPDATE runs SET " + ", ".join(f"[{c}] = ?" for c in update) + " WHERE id = ?",
                              [*update.values(), row["id"]])
            continue
        diff = _differs(row, existing, LOCAL_COLUMNS)
        if not diff:
            continue
        if table == "items" and (row.get("status") == "pending") != (existing.get("status") == "pending"):
            if existing.get("status") == "pending" and row.get("status") != "pending":
                tconn.execute("UPDATE items SET " + ", ".join(f"[{c}] = ?" for c in row) + " WHERE id = ?",
                              [*row.values(), row["id"]])
            continue  # the source's pending item yields to the target's
        key = ", ".join(f"{c}={row[c]}" for c in pk)
        raise MergeConflict(f"{table} {key} differs between the stores ({where}) in {', '.join(diff)}; "
                            "not merged, the target is unchanged")
    return count


def _set_item_seq(tconn) -> None:
    """The target's rows of an item that were merged before the item (or without `item_seq`) point to its rowid."""
    for table in ITEM_SEQ_TABLES:
        if "item_seq" in {r[1] for r in tconn.execute(f"PRAGMA table_info([{table}])")}:
            tconn.execute(f"UPDATE [{table}] SET item_seq = {ITEM_SEQ.format(f'[{table}].item_id')} "
                          "WHERE item_seq IS NULL AND item_id IS NOT NULL")


def _is_autoinc(conn, table: str) -> bool:
    info = conn.execute(f"PRAGMA table_info([{table}])").fetchall()
    return any(r[1] == "id" and r[5] and r[2].upper() == "INTEGER" for r in info)
