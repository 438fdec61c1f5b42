"""The model calls, grades and events of an item are indexed by the item's rowid (`item_seq`), not by its id.

An item's id is a hash (of its run, kind, combination and round), so an index whose first column is `item_id` put
every new call, grade and event at a random place of a B-tree that grows with the store: three random page touches
per item (`llm_calls(item_id, call_key)`, `grades(item_id, id)`, `events(item_id)`), each a page read and a WAL
write once the index outgrows SQLite's page cache. An item's rowid grows in the order items are created, so the
rows of the items a run is working on go to the right edge of each index, on pages that stay in the cache.

Each of the three tables gets an `item_seq` column (the rowid of the item named by `item_id`, set when the row is
written: `(SELECT rowid FROM items WHERE id = ?)`, NULL for a row of no item or of an item not in the store), and
its index is rebuilt on it: `llm_calls(item_seq, call_key)`, a unique `grades(item_seq, id)`, `events(item_seq)`.
`item_id` stays as it was, for users, exports, `merge` and every query, which looks the item's rowid up once
through the items' primary key and filters on both columns. `merge` recomputes `item_seq` in the target, whose
rowids differ (store/merge.py). An item's rowid never changes: items are created with `INSERT OR IGNORE` and
updated in place, and a migration that rebuilds `items` must keep its rowids (as m0140 does for `llm_calls`).
SQLite's VACUUM keeps the rowids of a table that has an index, as `items` does (tests/test_scale_item_seq.py).

A row written without `item_seq` (by raw SQL, or by an older skillweave that does not know the column) gets it from
a trigger, `<table>_item_seq`, after the insert; skillweave's own writes set it in the INSERT, so the trigger's
condition is false for them (but for rows of an item not in the store) and it does nothing. A row is linked when it
is written, so it must be written after its item: every pipeline does (tests/test_scale_item_seq.py runs five and
checks every row); `merge`, which copies tables in name order, links its rows at the end.
"""

TABLES = {  # table -> (index dropped, index created)
    "llm_calls": ("idx_llm_calls_item_id_call_key",
                  "CREATE INDEX idx_llm_calls_item_seq_call_key ON llm_calls (item_seq, call_key)"),
    "grades": ("idx_grades_item_id_id", "CREATE UNIQUE INDEX idx_grades_item_seq_id ON grades (item_seq, id)"),
    "events": ("idx_events_item_id", "CREATE INDEX idx_events_item_seq ON events (item_seq)"),
}


def migrate(db):
    conn = db.conn
    for table, (old, new) in TABLES.items():
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info([{table}])")]
        if not columns:
            continue
        if "item_seq" not in columns:
            conn.execute(f"ALTER TABLE [{table}] ADD COLUMN item_seq INTEGER")
        conn.execute(f"DROP INDEX IF EXISTS [{old}]")
        conn.execute(f"UPDATE [{table}] SET item_seq = (SELECT rowid FROM items WHERE items.id = [{table}].item_id) "
                     "WHERE item_id IS NOT NULL")
        conn.execute(new)
        conn.execute(TRIGGER.format(table=table))


# one line: store/schema.sql is split into statements at ";\n"
TRIGGER = ("CREATE TRIGGER IF NOT EXISTS [{table}_item_seq] AFTER INSERT ON [{table}] WHEN NEW.item_seq IS NULL AND "
           "NEW.item_id IS NOT NULL BEGIN UPDATE [{table}] SET item_seq = (SELECT rowid FROM items WHERE id = "
           "NEW.item_id) WHERE rowid = NEW.rowid; END")
