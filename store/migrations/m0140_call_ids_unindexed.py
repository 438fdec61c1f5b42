"""Model-call ids are no longer a primary key: `llm_calls` is rebuilt without the index on `id`.

A call's id is a random uuid4 (`logs show` takes it by a short prefix, which needs the randomness), and the primary
key's index put every new call on a random page of a B-tree that grows with the store: three such page touches per
Skill-Mix item, each a page read, a WAL write and a checkpoint copy once the index outgrows SQLite's page cache.
Nothing at run time looks a call up by id: a stored reply is found by item and call key (`m0130_call_lookup`), a
grade's call through its item (`store.queries.grades_by_step`). `logs show` finds an id by scanning the table's
`id` column (`store.queries.call_by_id`), and `merge` indexes the target's ids for the length of a merge
(`store/merge.py`), where they stay a key: a call with an id the target holds must agree with it.

The table is copied with its rowids (the running spend of a progress line reads calls by rowid), its columns as
they are (types, NOT NULL, defaults: whatever earlier migrations added) and its other indexes.
"""


def migrate(db):
    rebuild_without_primary_key(db.conn, "llm_calls")


def rebuild_without_primary_key(conn, table: str, drop_indexes=()) -> None:
    """Copy `table` into one without a primary key (rowids, columns with their types, NOT NULL and defaults, and
    its indexes but `drop_indexes` kept); nothing when the table is absent or has no primary key."""
    info = conn.execute(f"PRAGMA table_info([{table}])").fetchall()
    if not info or not any(r[5] for r in info):
        return
    columns = ", ".join(f"[{name}] {kind}" + (" NOT NULL" if notnull else "")
                        + (f" DEFAULT {default}" if default is not None else "")
                        for _, name, kind, notnull, default, _ in info)
    names = ", ".join(f"[{r[1]}]" for r in info)
    indexes = [sql for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                                                 "tbl_name = ? AND sql IS NOT NULL", [table]) if name not in drop_indexes]
    if conn.execute(f"SELECT 1 FROM [{table}] LIMIT 1").fetchone() is None:  # a new store: nothing to copy
        conn.execute(f"DROP TABLE [{table}]")
        conn.execute(f"CREATE TABLE [{table}] ({columns})")
    else:
        conn.execute(f"CREATE TABLE [{table}_rebuilt] ({columns})")
        conn.execute(f"INSERT INTO [{table}_rebuilt] (rowid, {names}) SELECT rowid, {names} FROM [{table}] "
                     "ORDER BY rowid")
        conn.execute(f"DROP TABLE [{table}]")
        conn.execute(f"ALTER TABLE [{table}_rebuilt] RENAME TO [{table}]")
    for sql in indexes:
        conn.execute(sql)
