"""Typed accessors for the item payload keys that several modules share.

An item's `payload` is free-form JSON owned by its pipeline; most keys are read and written by one module. The
keys below cross modules (the review pause writes them, the CLI, the web page, the decision service and the
reports read them), so they are named once here: read them with these functions and write them with the
`payload_update` dicts these functions build, rather than spelling the key strings in each module.
"""

from __future__ import annotations

from typing import Any, TypedDict

from skillweave.store import jload

REVIEW_REQUEST = "review_request"  # what a paused item asks a reviewer (agents/review.py writes it)
REVIEW_CLAIM = "review_claim"  # who is applying a decision (store/review_claims.py writes and clears it)
DROP_STAGE, DROP_REASON = "drop_stage", "drop_reason"  # where and why a MATH² question was dropped


class ReviewRequest(TypedDict, total=False):
    item_id: str
    run_id: str
    thread_id: str  # the graph thread a decision resumes
    pipeline: str
    skills: list[str]
    editable: dict[str, Any]  # field -> value a reviewer may edit
    context: Any  # what the reviewer is shown beside the fields


def review_request(item: dict) -> ReviewRequest:
    """The item's review request (empty when it never paused for review)."""
    return item["payload"].get(REVIEW_REQUEST) or {}


def editable_fields(item: dict) -> dict[str, Any]:
    """The fields (and their values when the request was made) a reviewer may edit."""
    return review_request(item).get("editable") or {}


def review_request_update(request: ReviewRequest, **more: Any) -> dict:
    """The `payload_update` that stores a review request (plus any other keys given)."""
    return {REVIEW_REQUEST: request, **more}


def review_claim(payload: dict | str | None) -> dict | None:
    """The claim on an item, from its decoded payload or its payload's JSON text; None when unclaimed."""
    if not isinstance(payload, dict):
        payload = jload(payload, {})
    return payload.get(REVIEW_CLAIM)


def drop_stage(item: dict) -> str:
    """The stage at which the item was dropped ('unknown' when none is recorded)."""
    return item["payload"].get(DROP_STAGE) or "unknown"


def drop_update(stage: str, reason: str) -> dict:
    """The `payload_update` that records why an item was dropped."""
    return {DROP_STAGE: stage, DROP_REASON: reason}
