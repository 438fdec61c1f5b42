"""Review queue as a web page: list waiting items, show one (question, attempts, critic verdicts, solution), and
approve / edit / reject it, which resumes exactly that item's paused thread.

Design choices:
- Server-rendered HTML from Jinja templates with autoescaping on: generated text is untrusted, so every value is
  escaped and shown in pre-wrapped blocks; no script runs on the page, and a Content-Security-Policy forbids any.
- Binds 127.0.0.1 by default (the CLI); every request needs the access token: `?token=` once (it is moved into an
  HttpOnly, SameSite=Strict cookie and the URL is cleaned), the cookie, or `Authorization: Bearer <token>`. Forms
  also carry the token as a CSRF field, so a cookie alone cannot post a decision. Comparison is constant-time.
- Form bodies are parsed with the standard library (urlencoded only), so no multipart dependency.
- A decision is recorded at once (`agents.review.claim_decision`) and its thread is resumed in the background
  (web/resumer.py), so no reviewer waits on another's model calls; the page waits up to `settle_seconds` for
  the result, then redirects back to the queue (POST -> redirect -> GET), which lists each decision's progress.
"""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from skillweave.agents.review import (
    claim_decision,
    make_decision,
    ordered_fields,
    review_entry,
    review_queue,
)
from skillweave.errors import SkillweaveError
from skillweave.store import Store
from skillweave.store.payload import review_request
from skillweave.web.mathtext import render_math
from skillweave.web.resumer import BackgroundResumer

COOKIE = "skillweave_review"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.filters["math"] = render_math  # LaTeX -> MathML on the server (web/mathtext.py): no script, no CDN


def create_app(store: Store, *, token: str, prompts_dir: str | None = None,
               default_reviewer: str | None = None, settle_seconds: float = 5.0,
               allow_changed_prompts: bool = False) -> Starlette:
    if not token or len(token) < 8:
        raise ValueError("the review page needs an access token of at least 8 characters")
    resumer = BackgroundResumer(store, prompts_dir=prompts_dir, allow_changed_prompts=allow_changed_prompts)

    def render(name: str, status: int = 200, **values) -> HTMLResponse:
        html = _ENV.get_template(name).render(csrf=token, **values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def authorised(request: Request) -> bool:
        offered = [request.query_params.get("token"), request.cookies.get(COOKIE)]
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            offered.append(header[7:])
        return any(value and hmac.compare_digest(value.encode(), token.encode()) for value in offered)

    def guard(handler):
        async def wrapped(request: Request) -> Response:
            if not authorised(request):
                return render("denied.html", status=401)
            if "token" in request.query_params and request.method == "GET":  # keep the token out of the URL bar
                response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
            return await handler(request)
        return wrapped

    async def queue(request: Request) -> Response:
        rows = []
        for item in review_queue(store):
            request_ = review_request(item)
            rows.append({"id": item["id"], "run_id": item["run_id"], "skills": " + ".join(item["skills"]),
                         "question": (request_.get("editable") or {}).get("question", ""),
                         "since": item["updated_at"]})
        return render("queue.html", rows=rows, notice=request.query_params.get("notice", ""), jobs=resumer.jobs())

    async def show(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        try:
            entry = review_entry(store, item_id)
        except SkillweaveError as exc:
            return render("error.html", status=404, message=str(exc))
        return render("item.html", entry=entry, fields=ordered_fields(entry["current"]),
                      reviewer=default_reviewer or "")

    async def decide(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        if not hmac.compare_digest(form.get("csrf", "").encode(), token.encode()):
            return render("denied.html", status=403)
        try:
            entry = review_entry(store, item_id)
            editable = (entry["request"] or {}).get("editable") or {}
            action = form.get("action", "")
            changes = {}
            if action == "edit":  # only fields the reviewer actually changed
                changes = {f: form[f].replace("\r\n", "\n") for f in editable
                           if f in form and form[f].replace("\r\n", "\n") != editable[f]}
            decision = make_decision(action, reviewer=form.get("reviewer", "").strip() or default_reviewer,
                                     reason=form.get("reason", ""), changes=changes)
            claimed = await run_in_threadpool(claim_decision, store, item_id, decision)
        except SkillweaveError as exc:
            return render("error.html", status=400, message=str(exc))
        job = resumer.submit(item_id, claimed, decision)
        for _ in range(int(settle_seconds / 0.02)):  # a quick resume reports its outcome; a slow one goes on
            if job["done"].is_set():
                break
            await asyncio.sleep(0.02)
        if job["state"] == "done":
            notice = f"{decision['action']}: item {item_id} is now {job['status']}"
        elif job["state"] == "failed":
            notice = f"{decision['action']} of item {item_id} failed and the item is back in the queue: {job['error']}"
        else:
            notice = f"{decision['action']}: item {item_id} recorded; its thread resumes in the background"
        url = request.url_for("queue").include_query_params(notice=notice)
        return RedirectResponse(url, status_code=303)

    routes = [
        Route("/", guard(queue), name="queue"),
        Route("/item/{item_id}", guard(show), name="show"),
        Route("/item/{item_id}/decide", guard(decide), methods=["POST"], name="decide"),
    ]
    app = Starlette(routes=routes)
    app.state.resumer = resumer
    return app
