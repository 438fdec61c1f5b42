"""Applying a reviewer's decision: check it against the item's pending request, claim the item, and resume
exactly the paused thread of its run. (The review step inside a graph is `agents.review`.)"""

from __future__ import annotations

from typing import Any

from skillweave.agents.review import CLAIMED_STATUS, REVIEW_STATUS, _open_clause
from skillweave.errors import UsageError
from skillweave.store import Store, now


def submit_decision(store: Store, item_id: str, decision: dict, *, prompts_dir: str | None = None) -> dict:
    """Check a decision against the item's pending request and resume exactly that thread."""
    from skillweave.graphs.runtime import run_pipeline  # LangGraph: only when a decision is applied
    from skillweave.pipelines import get_pipeline

    item = store.get_item(item_id)
    request: dict[str, Any] = item["payload"].get("review_request") or {}
    where, args = _open_clause()
    if not request or not store.db["items"].count_where(f"id = ? and {where}", [item_id, *args]):
        raise UsageError(f"item '{item_id}' is not waiting for review (status: {item['status']})")
    unknown = sorted(set(decision.get("changes") or {}) - set(request.get("editable") or {}))
    if unknown:
        raise UsageError(f"cannot edit {', '.join(unknown)}; editable fields: {', '.join(request.get('editable') or {})}")
    with store.lock:
        claimed = store.db.execute(f"update items set status = ?, updated_at = ? where id = ? and {where}",
                                   [CLAIMED_STATUS, now(), item_id, *args]).rowcount
    if not claimed:
        raise UsageError(f"item '{item_id}' was just decided by someone else; `skillweave review show {item_id}`")
    try:
        summary = run_pipeline(get_pipeline(request["pipeline"]), store, request["run_id"], prompts_dir=prompts_dir,
                               progress=False, only_threads={request["thread_id"]: decision})
    finally:  # a resume that failed leaves the item in the queue
        with store.lock:
            store.db.execute("update items set status = ? where id = ? and status = ?",
                             [REVIEW_STATUS, item_id, CLAIMED_STATUS])
    after = store.get_item(item_id)
    if after["status"] == REVIEW_STATUS:
        raise UsageError(f"thread {request['thread_id']} did not resume; is the run's checkpoint in {store.path}?")
    return {"item_id": item_id, "run_id": request["run_id"], "thread_id": request["thread_id"],
            "action": decision["action"], "status": after["status"], "run_status": summary.status,
            "paused_in_run": summary.paused}
