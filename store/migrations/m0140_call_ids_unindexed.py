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
    conn = db.conn
    info = conn.execute("PRAGMA table_info(llm_calls)").fetchall()
    if not info or not any(r[5] for r in info):
        return  # no table, or no primary key to drop
    columns = ", ".join(f"[{name}] {kind}" + (" NOT NULL" if notnull else "")
                        + (f" DEFAULT {default}" if default is not None else "")
                        for _, name, kind, notnull, default, _ in info)
    names = ", ".join(f"[{r[1]}]" for r in info)
    indexes = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                              "AND tbl_name = 'llm_calls' AND sql IS NOT NULL")]
    conn.execute(f"CREATE TABLE [llm_calls_m0140] ({columns})")
    conn.execute(f"INSERT INTO [llm_calls_m0140] (rowid, {names}) SELECT rowid, {names} FROM llm_calls ORDER BY rowid")
    conn.execute("DROP TABLE llm_calls")
    conn.execute("ALTER TABLE [llm_calls_m0140] RENAME TO llm_calls")
    for sql in indexes:
        conn.execute(sql)
