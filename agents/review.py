"""Review step shared by pipelines: `--reviewer human|llm:<model>|auto`, plugged into a graph mid-loop.

Design choices:
- A pipeline node calls `review_decision(...)` with what a reviewer should see: the editable fields
  (e.g. question, solution, answer) and read-only context sections (attempts, critic verdicts, ...).
- `human` pauses the thread with LangGraph `interrupt(request)`. Before pausing, the item's status becomes
  `review` and the request is stored in `payload.review_request`, so the review queue across runs is one SQL
  query (no checkpoint scans); the pause itself lives in the SQLite checkpointer and survives process exit.
- A decision is a plain dict `{action: approve|edit|reject, reviewer, reason, changes: {field: value}, at}`.
  `skillweave.decisions.submit_decision` checks it against the stored request and resumes exactly that thread
  (`run_pipeline(..., only_threads={thread_id: decision})`); the node then records it as provenance
  (`reviews` row: who, when, what changed before -> after) via `record_decision`.
- `llm:<model>` asks a model to approve or reject (template named by the pipeline, reply
  `Decision: approve|reject` + `Reason:`); an unparseable reply rejects with that reason. `auto` approves.
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from skillweave.errors import ConfigError, NotFound, UsageError
from skillweave.store import Store, now, queries, review_claims
from skillweave.store.payload import review_claim, review_request, review_request_update

ACTIONS = ("approve", "edit", "reject")
REVIEW_STATUS = "review"
CLAIMED_STATUS = "deciding"  # a decision is being applied: claimed atomically so two reviewers cannot both resume
# A claim names its process (pid, host, start time). On the claimer's host a claim is abandoned as soon as that
# process is gone (kill -9 mid-resume); from another host, once neither the claim nor the run's lease heartbeat
# is fresher than this. Abandoned claims are reopened by the queue, the next reviewer and `resume`.
STALE_CLAIM_SECONDS = 600


def _stale_before() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=STALE_CLAIM_SECONDS)).isoformat(timespec="milliseconds")


def _claim_alive(store: Store, row: dict) -> bool:
    from skillweave.store.leases import get_lease, holder_alive

    claim = review_claim(row.get("payload"))
    if not claim:  # a claim from before claims named their process: judged by its age
        return (row.get("updated_at") or "") >= _stale_before()
    beat = claim.get("claimed_at") or ""
    lease = get_lease(store, row["run_id"])
    if lease and (lease["pid"], lease["host"]) == (claim.get("pid"), claim.get("host")):
        beat = max(beat, lease["heartbeat_at"] or "")
    return holder_alive({**claim, "heartbeat_at": beat}, stale_seconds=STALE_CLAIM_SECONDS)


def reopen_dead_claims(store: Store, run_id: str | None = None) -> list[str]:
    """Put items whose claim's process is gone back in the review queue (their decision was never applied)."""
    reopened = []
    for row in review_claims.claimed_rows(store, CLAIMED_STATUS, run_id):
        if _claim_alive(store, row):
            continue
        claim = review_claim(row["payload"]) or {}
        if review_claims.reopen(store, row["id"], row["updated_at"], from_status=CLAIMED_STATUS,
                               to_status=REVIEW_STATUS):
            decision = claim.get("decision") or {}
            store.add_event(row["run_id"], row["id"], "review", "reopened",
                            f"claim by pid {claim.get('pid')} on {claim.get('host')} abandoned (process gone)"
                            + (f"; its {decision.get('action')} by {decision.get('reviewer')} was not applied"
                               if decision else ""))
            reopened.append(row["id"])
    return reopened
FIELD_ORDER = ("question", "solution", "answer")  # how editable fields are shown; others follow by name


def ordered_fields(editable: dict) -> list[tuple[str, str]]:
    names = [f for f in FIELD_ORDER if f in editable] + sorted(f for f in editable if f not in FIELD_ORDER)
    return [(name, editable[name]) for name in names]


def parse_reviewer(spec: str) -> str:
    """Validate `human`, `auto` or `llm:<model spec>` (e.g. `llm:fake`, `llm:openai:gpt-4o`)."""
    from skillweave.providers.core import parse_spec

    spec = (spec or "").strip()
    if spec in ("human", "auto"):
        return spec
    if spec.startswith("llm:"):
        try:
            parse_spec(spec[4:])
        except ConfigError as exc:
            raise ConfigError(f"--reviewer '{spec}': {exc}") from None
        return spec
    raise ConfigError(f"unknown reviewer '{spec}'; expected human, auto or llm:<model> (e.g. llm:local)")


def default_reviewer_name() -> str:
    try:
        return os.environ.get("SKILLWEAVE_REVIEWER") or getpass.getuser()
    except Exception:  # no login name (containers)
        return "reviewer"


def make_decision(action: str, *, reviewer: str | None = None, reason: str = "",
                  changes: dict[str, str] | None = None) -> dict:
    """A decision dict, checked for shape (the editable fields are checked by `submit_decision`)."""
    if action not in ACTIONS:
        raise UsageError(f"unknown review action '{action}'; expected one of {', '.join(ACTIONS)}")
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    if action == "edit" and not changes:
        raise UsageError("an edit needs at least one changed field (e.g. --question, --solution, --answer)")
    if action == "reject" and not reason.strip():
        raise UsageError("a rejection needs a reason (--reason '...')")
    # one rule for the CLI, imports and the web page: a blank or all-space name means the default reviewer
    return {"action": action, "reviewer": (reviewer or "").strip() or default_reviewer_name(), "reason": reason,
            "changes": changes if action == "edit" else {}, "at": now()}


# ---- inside a graph node ------------------------------------------------------------------------------
async def review_decision(ctx, item: dict, *, thread_id: str, pipeline: str, editable: dict[str, str],
                          context: list[dict], template: str | None = None, values: dict | None = None) -> dict:
    """The reviewer's decision for one item (pauses the thread when the reviewer is a person). The pipeline's
    settings have `reviewer` (human, llm:<model> or auto) and `review_max_tokens` fields."""
    reviewer = ctx.config.reviewer
    if reviewer == "auto":
        return {"action": "approve", "reviewer": "auto", "reason": "auto-approved", "changes": {}, "at": now()}
    if reviewer.startswith("llm:"):
        return await _llm_decision(ctx, item, reviewer[4:], template, values or {})
    from langgraph.types import interrupt

    request = {"item_id": item["id"], "run_id": ctx.run_id, "thread_id": thread_id, "pipeline": pipeline,
               "skills": item.get("skills") or [], "editable": editable, "context": context}
    if item.get("status") not in (REVIEW_STATUS, CLAIMED_STATUS):  # the node re-runs on resume; log it once
        ctx.store.update_item(item["id"], status=REVIEW_STATUS, payload_update=review_request_update(request))
        ctx.event(item["id"], "review", "waiting", "paused for a human reviewer")
    return interrupt(request)


async def _llm_decision(ctx, item: dict, model: str, template: str | None, values: dict) -> dict:
    from skillweave.agents.llm import call_template
    from skillweave.errors import ModelCallError

    if not template:
        raise ConfigError("this pipeline has no LLM review template; use --reviewer human or auto")
    try:
        reply = await call_template(ctx, item_id=item["id"], role="reviewer", template=template, values=values,
                                    model=model, temperature=0.0, max_tokens=ctx.config.review_max_tokens)
    except ModelCallError as exc:
        return {"action": "reject", "reviewer": f"llm:{model}", "reason": f"reviewer call failed: {exc}",
                "changes": {}, "at": now()}
    action, reason = parse_llm_review(reply.text)
    return {"action": action, "reviewer": f"llm:{model}", "reason": reason, "changes": {}, "at": now(),
            "call_id": reply.call_id}


def parse_llm_review(text: str) -> tuple[str, str]:
    """`Decision: approve|reject` and `Reason: ...`; anything else is a rejection that says so."""
    match = re.search(r"decision\s*[:\-]\s*\**\s*(approve|accept|reject)", text, re.I)
    reason_match = re.search(r"reason\s*[:\-]\s*(.+)", text, re.I | re.S)
    reason = reason_match.group(1).strip()[:500] if reason_match else ""
    if not match:
        return "reject", f"unparseable reviewer reply: {text.strip()[:200]!r}"
    action = "reject" if match.group(1).lower() == "reject" else "approve"
    return action, reason or ("approved by the LLM reviewer" if action == "approve" else "rejected by the LLM reviewer")


def record_decision(ctx, item_id: str, decision: dict, current: dict[str, str]) -> dict[str, dict]:
    """Store the decision as a `reviews` row with what changed (before -> after) and log the transition."""
    changes = {field: {"before": current.get(field), "after": value}
               for field, value in (decision.get("changes") or {}).items() if current.get(field) != value}
    ctx.store.add_review(item_id, ctx.run_id, decision.get("reviewer") or "unknown", decision["action"],
                         decision.get("reason") or "", {**changes, "_at": decision.get("at")})
    status = {"approve": "approved", "edit": "edited", "reject": "rejected"}[decision["action"]]
    ctx.event(item_id, "review", status,
                        f"{decision.get('reviewer')}: {decision.get('reason') or decision['action']}"
                        + (f" (changed {', '.join(changes)})" if changes else ""))
    return changes


# ---- outside the graph: queue, show, submit ------------------------------------------------------------
def review_queue(store: Store, run_id: str | None = None) -> list[dict]:
    """Items waiting for a person, across runs (or in one run), oldest first."""
    reopen_dead_claims(store, run_id)
    return review_claims.items_with_status(store, REVIEW_STATUS, run_id)


def review_entry(store: Store, item_id: str) -> dict:
    """An item with its review request, earlier reviews and events (for `review show` and the web page)."""
    reopen_dead_claims(store, store.get_item(item_id)["run_id"])
    item = store.get_item(item_id)
    request = review_request(item)
    reviews = queries.item_reviews(store, item_id)
    events = queries.item_events(store, item_id)
    waiting = review_claims.has_status(store, item_id, REVIEW_STATUS)
    editable = request.get("editable") or {}
    # after a decision, show the item's current values (an edit changed them), not the request's
    current = editable if waiting else {f: item["payload"].get(f, v) for f, v in editable.items()}
    return {"item": item, "request": request, "current": current, "reviews": reviews, "events": events,
            "waiting": waiting}


def resolve_item_id(store: Store, prefix: str) -> str:
    """A full item id from an id or an unambiguous prefix of at least 6 characters."""
    if queries.item_exists(store, prefix):
        return prefix
    if len(prefix) >= 6:
        rows = queries.item_ids_with_prefix(store, prefix, limit=3)
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise UsageError(f"item id prefix '{prefix}' is ambiguous; give more characters")
    raise NotFound(f"no item '{prefix}' in {store.path}; `skillweave review list` shows the queue")


def claim_decision(store: Store, item_id: str, decision: dict) -> dict:
    """Check a decision and claim the item for it (status `deciding`, the claim naming this process and the
    decision); returns the item's review request. Nothing is resumed yet: `apply_claimed_decision` does that."""
    from skillweave.store.leases import me

    item = store.get_item(item_id)
    reopen_dead_claims(store, item["run_id"])
    request: dict[str, Any] = review_request(item)
    if not request or not review_claims.has_status(store, item_id, REVIEW_STATUS):
        item = store.get_item(item_id)
        raise UsageError(f"item '{item_id}' is not waiting for review (status: {item['status']})")
    unknown = sorted(set(decision.get("changes") or {}) - set(request.get("editable") or {}))
    if unknown:
        raise UsageError(f"cannot edit {', '.join(unknown)}; editable fields: {', '.join(request.get('editable') or {})}")
    claim = {**me(), "claimed_at": now(), "decision": {k: decision.get(k) for k in ("action", "reviewer", "at")}}
    if not review_claims.claim(store, item_id, claim, from_status=REVIEW_STATUS, to_status=CLAIMED_STATUS):
        raise UsageError(f"item '{item_id}' was just decided by someone else; `skillweave review show {item_id}`")
    return request
