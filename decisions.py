"""Applying a reviewer's decision: check it against the item's pending request, claim the item, and resume
exactly the paused thread of its run. (The review step inside a graph is `agents.review`; claiming is
`agents.review.claim_decision`, so the web page can record a decision at once and resume it in the background.)"""

from __future__ import annotations

from skillweave.agents.review import CLAIMED_STATUS, REVIEW_STATUS, claim_decision
from skillweave.errors import UsageError
from skillweave.store import Store, review_claims


def submit_decision(store: Store, item_id: str, decision: dict, *, prompts_dir: str | None = None,
                    allow_changed_prompts: bool = False) -> dict:
    """Check a decision against the item's pending request and resume exactly that thread."""
    request = claim_decision(store, item_id, decision)
    return apply_claimed_decision(store, item_id, request, decision, prompts_dir=prompts_dir,
                                  allow_changed_prompts=allow_changed_prompts)


def apply_claimed_decision(store: Store, item_id: str, request: dict, decision: dict, *,
                           prompts_dir: str | None = None, allow_changed_prompts: bool = False) -> dict:
    """Resume the claimed item's thread with the decision; a resume that fails puts the item back in the queue."""
    [result] = apply_claimed_decisions(store, [(item_id, request, decision)], prompts_dir=prompts_dir,
                                       allow_changed_prompts=allow_changed_prompts)
    if isinstance(result, Exception):
        raise result
    return result


def apply_claimed_decisions(store: Store, claimed: list[tuple[str, dict, dict]], *,
                            prompts_dir: str | None = None, allow_changed_prompts: bool = False
                            ) -> list[dict | Exception]:
    """Resume the threads of claimed items of one run together (one run_pipeline call, one lease), each with its
    decision. Returns a result dict per item, or the exception that stopped it (its item is back in the queue)."""
    from skillweave.graphs.runtime import run_pipeline  # LangGraph: only when a decision is applied
    from skillweave.pipelines import get_pipeline

    request = claimed[0][1]
    summary, failure = None, None
    try:
        summary = run_pipeline(get_pipeline(request["pipeline"]), store, request["run_id"], prompts_dir=prompts_dir,
                               progress=False, only_threads={r["thread_id"]: d for _, r, d in claimed},
                               allow_changed_prompts=allow_changed_prompts)
    except Exception as exc:  # e.g. another process holds the run: every claim goes back to the queue
        failure = exc
    finally:  # a resume that failed leaves the item in the queue
        review_claims.release(store, [item_id for item_id, _, _ in claimed], from_status=CLAIMED_STATUS,
                             to_status=REVIEW_STATUS)
    results: list[dict | Exception] = []
    for item_id, req, decision in claimed:
        after = store.get_item(item_id)
        if failure is not None:
            results.append(failure)
        elif after["status"] == REVIEW_STATUS:
            results.append(UsageError(f"thread {req['thread_id']} did not resume; is the run's checkpoint in "
                                      f"{store.path}?"))
        else:
            results.append({"item_id": item_id, "run_id": req["run_id"], "thread_id": req["thread_id"],
                            "action": decision["action"], "status": after["status"], "run_status": summary.status,
                            "paused_in_run": summary.paused})
    return results
