"""A grade is kept unique, and found, through one index, `grades(item_id, id)`: the primary key on `id` and the index on
`item_id` alone are gone.

A grade's id is a hash of its item, judge and sample index, so the primary key's index put each new grade on a random
page of a B-tree that grows with the store, and the index on `item_id` on another one: two random page touches per
graded item. The unique index on `(item_id, id)` is one: it serves every lookup of an item's grades (its first
column) and keeps the ids unique (an id names one item, so an id is unique exactly when the pair is), so `INSERT OR
REPLACE` of a grade that is already stored replaces it as before. Reads order an item's grades by sample index,
then by rowid (the order the old index on `item_id` gave rows of one sample index). `merge` indexes the target's ids
while it merges (`store/merge.py`): a grade id both stores hold must agree.

The table is copied with its rowids, its columns as they are and its other indexes.
"""

from skillweave.store.migrations.m0140_call_ids_unindexed import rebuild_without_primary_key


def migrate(db):
    rebuild_without_primary_key(db.conn, "grades", drop_indexes=("idx_grades_item_id",))
    db.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_grades_item_id_id ON grades (item_id, id)")
