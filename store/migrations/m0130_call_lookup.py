"""A stored reply is looked up by its item and call key through one index, `llm_calls(item_id, call_key)`.

It replaces the index on `call_key` alone and the one on `item_id` alone (a query by item uses the new index's
first column). A call key is a hash, so the index on it put each new call on a random page of a B-tree that grows
with the store; the calls of one item now sit side by side in one index, on a page their item's other calls touch.
"""


def migrate(db):
    db.execute("CREATE INDEX IF NOT EXISTS idx_llm_calls_item_id_call_key ON llm_calls (item_id, call_key)")
    db.execute("DROP INDEX IF EXISTS idx_llm_calls_item_id")
    db.execute("DROP INDEX IF EXISTS idx_llm_calls_call_key")
