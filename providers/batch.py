"""`--batch`: a run's OpenAI and Anthropic calls go through their batch APIs instead of one request each.

Requests that arrive within a short window (`$SKILLWEAVE_BATCH_WINDOW` seconds, default 5) are written as one
JSONL file, uploaded (`POST /files`, purpose `batch`), and submitted (`POST /batches`, endpoint
`/v1/chat/completions`, window 24h). The batch id and the call key of each request (its `custom_id`) are stored
(`batch_jobs`, `batch_requests`) in the same transaction that follows the submission. The batch is then polled
(`GET /batches/{id}`, every `$SKILLWEAVE_BATCH_POLL` seconds, default 30) until it is completed, expired,
cancelled or failed, and its output and error files are read (`GET /files/{id}/content`): each request gets its
reply, or its own error (a failed request, or `batch_expired` for one the window did not reach).

A killed process loses nothing: on resume, a call whose key is in a stored batch that has not handed it out
waits for that batch (polling it again) instead of being submitted again. Batch calls are billed at
`BATCH_DISCOUNT` of the standard price. `anthropic:` models go the same way through Message Batches
(`AnthropicBatcher`); other providers' calls go through their ordinary endpoints.
"""

from __future__ import annotations

import asyncio
import json
import os

from skillweave.errors import ModelCallError
from skillweave.providers.core import (
    AnthropicProvider,
    ChatRequest,
    ChatResult,
    OpenAIProvider,
    _openai_result,
    message_text,
)
from skillweave.store import Store, now

BATCH_DISCOUNT = 0.5  # OpenAI and Anthropic bill batch tokens at half the standard price
DONE = ("completed", "expired", "cancelled", "failed")


class BatchError(ModelCallError):
    """One request of a batch failed (its own error, the batch's expiry or the batch's failure)."""


class Batcher:
    """A run's `--batch`: hands each call to the batcher of its provider's kind (OpenAI or Anthropic); calls of
    other providers are not batched (`handles` is False)."""

    def __init__(self, store: Store, run_id: str, **kw):
        self.kinds = [OpenAIBatcher(store, run_id, **kw), AnthropicBatcher(store, run_id, **kw)]

    def _for(self, provider):
        return next((b for b in self.kinds if b.handles(provider)), None)

    def handles(self, provider) -> bool:
        return self._for(provider) is not None

    async def chat(self, call_key: str, provider, request: ChatRequest) -> ChatResult:
        return await self._for(provider).chat(call_key, provider, request)


class OpenAIBatcher:
    """Collects a run's OpenAI chat requests into batches, submits, polls and hands each reply to its caller."""

    kind = "openai"
    max_requests = 50_000  # the Batch API's limit of requests in one input file

    def __init__(self, store: Store, run_id: str, *, window: float | None = None, poll: float | None = None):
        self.store, self.run_id = store, run_id
        self.window = float(os.environ.get("SKILLWEAVE_BATCH_WINDOW", 5)) if window is None else window
        self.poll = float(os.environ.get("SKILLWEAVE_BATCH_POLL", 30)) if poll is None else poll
        self._pending: dict[tuple, list] = {}   # (base url, model) -> [(call_key, body, future)]
        self._flushers: dict[tuple, asyncio.Task] = {}
        self._waiters: dict[str, asyncio.Task] = {}  # batch id -> task returning {custom_id: result | error}

    @staticmethod
    def handles(provider) -> bool:
        return isinstance(provider, OpenAIProvider) and hasattr(provider, "url")

    @staticmethod
    def _base(provider) -> str:
        return provider.url.rsplit("/chat/completions", 1)[0]

    @staticmethod
    def _headers(provider) -> dict:
        return provider._headers

    async def chat(self, call_key: str, provider, request: ChatRequest) -> ChatResult:
        base = self._base(provider)
        stored = self.store._one(
            "SELECT r.batch_id FROM batch_requests r JOIN batch_jobs j ON j.id = r.batch_id "
            "WHERE r.call_key = ? AND r.delivered = 0 ORDER BY j.created_at DESC LIMIT 1", [call_key])
        if stored:  # submitted by an earlier (killed) process: wait for that batch, never submit twice
            batch_id = stored["batch_id"]
        else:
            future = asyncio.get_running_loop().create_future()
            key = (base, provider.model, json.dumps(self._headers(provider), sort_keys=True))
            self._pending.setdefault(key, []).append((call_key, self._body(provider, request), future))
            if key not in self._flushers or self._flushers[key].done():
                self._flushers[key] = asyncio.ensure_future(self._flush_later(key, provider))
            batch_id = await future
        results = await self._results(batch_id, base, provider)
        outcome = results.get(call_key, f"no result for this request in batch {batch_id}")
        if isinstance(outcome, str):
            self._delivered(batch_id, call_key)  # its error is recorded; a retry submits it anew
            raise BatchError(f"{provider.spec}: batch {batch_id}: {outcome}")
        outcome.batch_id = batch_id
        return outcome

    @staticmethod
    def _body(provider, request: ChatRequest) -> dict:
        options = dict(request.options)
        if options.pop("json", False):
            options["response_format"] = {"type": "json_object"}
        return {"model": provider.model, "messages": [{"role": m["role"], "content": provider._content(m)}
                                                      for m in request.messages],
                "temperature": request.temperature, "max_tokens": request.max_tokens, "n": request.n, **options}

    async def _flush_later(self, key: tuple, provider) -> None:
        await asyncio.sleep(self.window)
        pending, self._pending[key] = self._pending.get(key, []), []
        for start in range(0, len(pending), self.max_requests):
            await self._submit_part(key, provider, pending[start:start + self.max_requests])

    async def _submit_part(self, key: tuple, provider, entries: list) -> None:
        try:
            batch_id = await self._submit(key[0], provider, entries)
        except Exception as exc:  # nothing was submitted: every waiting call fails with the reason
            for _, _, future in entries:
                if not future.done():
                    future.set_exception(BatchError(f"{provider.spec}: submitting a batch failed: "
                                                    f"{type(exc).__name__}: {exc}"))
            return
        for _, _, future in entries:
            if not future.done():
                future.set_result(batch_id)

    async def _http(self, provider, method: str, url: str, **kw):
        import aiohttp

        async with aiohttp.ClientSession(headers=self._headers(provider)) as session:
            async with session.request(method, url, **kw) as response:
                body = await response.read()
                if response.status >= 400:
                    raise ModelCallError(f"HTTP {response.status} from {url}: {body[:300].decode(errors='replace')}")
                return body

    async def _submit(self, base: str, provider, entries: list) -> str:
        batch_id, fields = await self._create(base, provider, entries)
        with self.store.transaction():
            self.store._insert("batch_jobs", {
                "id": batch_id, "run_id": self.run_id, "provider": self.kind, "model": provider.model,
                "base_url": base, "status": fields["status"], "input_file_id": fields["input_file_id"],
                "output_file_id": None, "error_file_id": None, "requests": len(entries), "error": None,
                "created_at": now(), "updated_at": now()})
            for call_key, _, _ in entries:
                self.store._insert("batch_requests", {"batch_id": batch_id, "call_key": call_key,
                                                      "run_id": self.run_id, "delivered": 0}, "OR IGNORE")
        return batch_id

    async def _create(self, base: str, provider, entries: list) -> tuple[str, dict]:
        import aiohttp

        lines = "".join(json.dumps({"custom_id": call_key, "method": "POST", "url": "/v1/chat/completions",
                                    "body": body}) + "\n" for call_key, body, _ in entries)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", lines.encode(), filename="skillweave-batch.jsonl", content_type="application/jsonl")
        uploaded = json.loads(await self._http(provider, "POST", f"{base}/files", data=form))
        created = json.loads(await self._http(provider, "POST", f"{base}/batches", json={
            "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"skillweave_run": self.run_id}}))
        return created["id"], {"status": created.get("status", "validating"), "input_file_id": uploaded["id"]}

    def _results(self, batch_id: str, base: str, provider) -> asyncio.Task:
        if batch_id not in self._waiters:
            self._waiters[batch_id] = asyncio.ensure_future(self._poll(batch_id, base, provider))
        return self._waiters[batch_id]

    async def _poll(self, batch_id: str, base: str, provider) -> dict:
        while True:
            status, done, info = await self._status(base, provider, batch_id)
            with self.store.lock:
                self.store.db["batch_jobs"].update(batch_id, {"status": status, "updated_at": now(), **info})
            if done:
                break
            await asyncio.sleep(self.poll)
        return await self._collect(base, provider, batch_id, status, info)

    async def _status(self, base: str, provider, batch_id: str) -> tuple[str, bool, dict]:
        batch = json.loads(await self._http(provider, "GET", f"{base}/batches/{batch_id}"))
        status = batch.get("status")
        return status, status in DONE, {"output_file_id": batch.get("output_file_id"),
                                        "error_file_id": batch.get("error_file_id"),
                                        "error": json.dumps(batch["errors"]) if batch.get("errors") else None}

    async def _collect(self, base: str, provider, batch_id: str, status: str, info: dict) -> dict:
        results: dict = {}
        for file_id in (info.get("error_file_id"), info.get("output_file_id")):  # output wins over an error
            if file_id:
                text = (await self._http(provider, "GET", f"{base}/files/{file_id}/content")).decode()
                for line in text.splitlines():
                    if line.strip():
                        row = json.loads(line)
                        results[row.get("custom_id")] = _line_result(row, base)
        if status != "completed":
            reason = f"the batch ended {status}" + (f": {info['error']}" if info.get("error") else "")
            return _with_default(results, reason)
        return results

    def _delivered(self, batch_id: str, call_key: str) -> None:
        with self.store.lock:
            self.store.db.conn.execute("UPDATE batch_requests SET delivered = 1 WHERE batch_id = ? AND call_key = ?",
                                       [batch_id, call_key])


class _Defaulting(dict):
    def __init__(self, values: dict, default: str):
        super().__init__(values)
        self.default = default

    def get(self, key, default=None):
        return super().get(key, self.default)


def _with_default(results: dict, reason: str) -> dict:
    """Results of a batch that did not complete: a request without its own line fails with the batch's reason."""
    return _Defaulting(results, reason)


def _line_result(row: dict, base: str) -> ChatResult | str:
    """One line of an output or error file: the reply, or the request's error as text."""
    if row.get("error"):
        error = row["error"]
        return f"{error.get('code', 'error')}: {error.get('message', '')}" if isinstance(error, dict) else str(error)
    response = row.get("response") or {}
    if response.get("status_code") != 200:
        body = response.get("body") or {}
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body
        return f"HTTP {response.get('status_code')}: {message}"
    try:
        return _openai_result(response.get("body"), f"{base}/batches")
    except Exception as exc:
        return str(exc)


class AnthropicBatcher(OpenAIBatcher):
    """The same collecting, storing and polling through Anthropic's Message Batches API: `POST
    {base}/v1/messages/batches` with the requests inline, `GET {base}/v1/messages/batches/{id}` until its
    processing status is `ended`, then the JSONL at its `results_url`. A call with n replies is n requests
    (`custom_id` = call key + `-i`)."""

    kind = "anthropic"
    max_requests = 100_000  # the Message Batches API's limit of requests in one batch

    @staticmethod
    def handles(provider) -> bool:
        return isinstance(provider, AnthropicProvider)

    @staticmethod
    def _base(provider) -> str:
        entry = getattr(provider, "entry", None)
        if entry is not None and entry.base_urls:
            return entry.base_urls[0].rstrip("/")
        return (os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com").rstrip("/")

    @staticmethod
    def _headers(provider) -> dict:
        entry = getattr(provider, "entry", None)
        key = os.environ.get((entry.api_key_env if entry is not None else None) or "ANTHROPIC_API_KEY", "")
        return {"x-api-key": key or "no-key", "anthropic-version": "2023-06-01"}

    @staticmethod
    def _body(provider, request: ChatRequest) -> dict:
        system = "\n".join(message_text(m) for m in request.messages if m["role"] == "system")
        params = {"model": provider.model, "max_tokens": request.max_tokens, "temperature": request.temperature,
                  "messages": [{"role": m["role"], "content": provider._content(m)} for m in request.messages
                               if m["role"] != "system"]}
        if system:
            params["system"] = system
        if "top_p" in request.options:
            params["top_p"] = request.options["top_p"]
        return {"params": params, "n": request.n}

    async def _create(self, base: str, provider, entries: list) -> tuple[str, dict]:
        requests = [{"custom_id": f"{call_key}-{i}", "params": body["params"]}
                    for call_key, body, _ in entries for i in range(max(body["n"], 1))]
        created = json.loads(await self._http(provider, "POST", f"{base}/v1/messages/batches",
                                              json={"requests": requests}))
        return created["id"], {"status": created.get("processing_status", "in_progress"), "input_file_id": None}

    async def _status(self, base: str, provider, batch_id: str) -> tuple[str, bool, dict]:
        batch = json.loads(await self._http(provider, "GET", f"{base}/v1/messages/batches/{batch_id}"))
        status = batch.get("processing_status")
        return status, status == "ended", {"output_file_id": batch.get("results_url")}

    async def _collect(self, base: str, provider, batch_id: str, status: str, info: dict) -> dict:
        per_request: dict[str, object] = {}
        if info.get("output_file_id"):
            text = (await self._http(provider, "GET", info["output_file_id"])).decode()
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    per_request[row.get("custom_id")] = _anthropic_line(row.get("result") or {})
        results: dict = {}
        for custom_id in per_request:
            call_key = custom_id.rsplit("-", 1)[0]
            if call_key in results:
                continue
            parts = [per_request.get(f"{call_key}-{i}") for i in range(len(
                [c for c in per_request if c.rsplit("-", 1)[0] == call_key]))]
            error = next((p for p in parts if isinstance(p, str)), None)
            results[call_key] = error or ChatResult(
                texts=[p[0] for p in parts], input_tokens=sum(p[1] for p in parts),
                output_tokens=sum(p[2] for p in parts))
        return results


def _anthropic_line(result: dict):
    """(text, input tokens, output tokens) of a succeeded request, else its outcome as text."""
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        text = "".join(b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text")
        if not text.strip():
            return f"reply without text content (stop_reason {message.get('stop_reason')})"
        usage = message.get("usage") or {}
        return text, usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        return f"errored: {error.get('type', '')}: {error.get('message', '')}"
    return f"request {kind}" + (": the batch's 24-hour window ended first" if kind == "expired" else "")
