"""The review queue's statements on `items`: listing by status and the compare-and-set claim protocol.

`agents/review.py` decides what a claim is and when it is abandoned; these functions are the SQL behind it.
Every transition is one UPDATE guarded by the item's current status (and, for a reopen, its `updated_at`), so
two reviewers or processes racing for the same item cannot both win; each returns whether it changed the row.
"""

from __future__ import annotations

import json

from skillweave.store import _decode_item, now


def items_with_status(store, status: str, run_id: str | None = None) -> list[dict]:
    """Decoded items in `status` (optionally of one run), oldest update first."""
    where, args = "status = ?", [status]
    if run_id:
        where, args = where + " and run_id = ?", [*args, run_id]
    return [_decode_item(r) for r in store.db["items"].rows_where(where, args, order_by="updated_at, id")]


def has_status(store, item_id: str, status: str) -> bool:
    return bool(store.db["items"].count_where("id = ? and status = ?", [item_id, status]))


def claimed_rows(store, status: str, run_id: str | None = None) -> list[dict]:
    """Raw rows (id, run_id, payload as JSON text, updated_at) of items in the claimed `status`."""
    sql, args = "SELECT id, run_id, payload, updated_at FROM items WHERE status = ?", [status]
    if run_id:
        sql, args = sql + " AND run_id = ?", [*args, run_id]
    return store._all(sql, args)


def claim(store, item_id: str, claim: dict, *, from_status: str, to_status: str) -> bool:
    """Move an item from `from_status` to `to_status`, storing `claim` as its payload's `review_claim`."""
    with store.lock:
        return bool(store.db.execute(
            "update items set status = ?, updated_at = ?, payload = json_set(payload, '$.review_claim', json(?)) "
            "where id = ? and status = ?", [to_status, now(), json.dumps(claim), item_id, from_status]).rowcount)


def reopen(store, item_id: str, updated_at: str, *, from_status: str, to_status: str) -> bool:
    """Drop an abandoned claim: back to `to_status` only if the row is unchanged since it was read."""
    with store.lock:
        return bool(store.db.conn.execute(
            "UPDATE items SET status = ?, updated_at = ?, payload = json_remove(payload, '$.review_claim') "
            "WHERE id = ? AND status = ? AND updated_at = ?",
            [to_status, now(), item_id, from_status, updated_at]).rowcount)


def release(store, item_ids, *, from_status: str, to_status: str) -> None:
    """After a decision was applied (or failed): items still in `from_status` go back to `to_status`, and every
    one loses its `review_claim`."""
    with store.lock:
        for item_id in item_ids:
            store.db.execute("update items set status = ? where id = ? and status = ?",
                             [to_status, item_id, from_status])
            store.db.execute("update items set payload = json_remove(payload, '$.review_claim') where id = ?",
                             [item_id])
