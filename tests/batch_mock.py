"""A local mock of the OpenAI Batch API (files upload and content, batch create and status) and of Anthropic's
Message Batches (create, retrieve, results) on 127.0.0.1, for tests/test_batch.py. Not a test module itself."""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

STUDENT = "Answer: Sewing is patience, stitched one careful loop at a time. Explanation: metaphor."
JUDGE = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 5 + "| Total | 5 |"


class BatchMock:
    """hold: batches stay in_progress; expire: a batch ends `expired` with its first half answered;
    fail: custom ids (or a predicate on the request line) answered with HTTP 400 in the output file."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.created: list[list[str]] = []  # custom ids of each created batch, in order
        self.hold = False
        self.expire = False
        self.fail = lambda line: False
        self.polls = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def _file(self, content: bytes) -> str:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return file_id

    async def upload(self, request: web.Request):
        form = await request.post()
        assert form["purpose"] == "batch"
        return web.json_response({"id": self._file(form["file"].file.read()), "object": "file", "purpose": "batch"})

    async def create(self, request: web.Request):
        body = await request.json()
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "status": "validating", "lines": lines,
                                  "input_file_id": body["input_file_id"], "output_file_id": None,
                                  "error_file_id": None}
        self.created.append([x["custom_id"] for x in lines])
        return web.json_response({k: v for k, v in self.batches[batch_id].items() if k != "lines"})

    def _finish(self, batch: dict) -> None:
        out, err = [], []
        lines = batch["lines"]
        answered = lines[: len(lines) // 2] if self.expire else lines
        for line in answered:
            if self.fail(line):
                out.append({"custom_id": line["custom_id"], "response": {
                    "status_code": 400, "body": {"error": {"message": "scripted bad request"}}}, "error": None})
                continue
            prompt = json.dumps(line["body"]["messages"])
            text = JUDGE if "grading" in prompt else STUDENT
            n = line["body"].get("n", 1)
            out.append({"custom_id": line["custom_id"], "error": None, "response": {"status_code": 200, "body": {
                "id": "chatcmpl-x", "object": "chat.completion",
                "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            for i in range(n)],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20 * n}}}})
        for line in lines[len(answered):]:
            err.append({"custom_id": line["custom_id"], "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                                                      "the completion window expired."}})
        batch["status"] = "expired" if self.expire else "completed"
        batch["output_file_id"] = self._file("".join(json.dumps(x) + "\n" for x in out).encode()) if out else None
        batch["error_file_id"] = self._file("".join(json.dumps(x) + "\n" for x in err).encode()) if err else None

    async def status(self, request: web.Request):
        self.polls += 1
        batch = self.batches[request.match_info["batch_id"]]
        if batch["status"] in ("validating", "in_progress"):
            if self.hold:
                batch["status"] = "in_progress"
            else:
                self._finish(batch)
        return web.json_response({k: v for k, v in batch.items() if k != "lines"})

    # ---- Anthropic Message Batches ----
    async def an_create(self, request: web.Request):
        assert request.headers.get("anthropic-version") and request.headers.get("x-api-key")
        body = await request.json()
        batch_id = f"msgbatch_{len(self.batches) + 1}"
        self.batches[batch_id] = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                                  "results_url": None, "lines": body["requests"]}
        self.created.append(sorted({r["custom_id"].rsplit("-", 1)[0] for r in body["requests"]}))
        return web.json_response({k: v for k, v in self.batches[batch_id].items() if k != "lines"})

    async def an_status(self, request: web.Request):
        self.polls += 1
        batch = self.batches[request.match_info["batch_id"]]
        if batch["processing_status"] == "in_progress" and not self.hold:
            lines = batch["lines"]
            answered = lines[: len(lines) // 2] if self.expire else lines
            out = []
            for line in lines:
                if line not in answered:
                    result = {"type": "expired"}
                elif self.fail(line):
                    result = {"type": "errored", "error": {"type": "error", "error": {
                        "type": "invalid_request_error", "message": "scripted bad request"}}}
                else:
                    text = JUDGE if "grading" in json.dumps(line["params"]["messages"]) else STUDENT
                    result = {"type": "succeeded", "message": {
                        "id": "msg_x", "type": "message", "role": "assistant", "stop_reason": "end_turn",
                        "content": [{"type": "text", "text": text}],
                        "usage": {"input_tokens": 100, "output_tokens": 20}}}
                out.append({"custom_id": line["custom_id"], "result": result})
            batch["results"] = "".join(json.dumps(x) + "\n" for x in out).encode()
            batch["processing_status"] = "ended"
            batch["results_url"] = f"http://127.0.0.1:{self.port}/v1/messages/batches/{batch['id']}/results"
        return web.json_response({k: v for k, v in batch.items() if k not in ("lines", "results")})

    async def an_results(self, request: web.Request):
        return web.Response(body=self.batches[request.match_info["batch_id"]]["results"],
                            content_type="application/binary")

    async def content(self, request: web.Request):
        return web.Response(body=self.files[request.match_info["file_id"]], content_type="application/jsonl")

    def start(self) -> str:
        app = web.Application()
        app.add_routes([web.post("/v1/files", self.upload), web.post("/v1/batches", self.create),
                        web.get("/v1/batches/{batch_id}", self.status),
                        web.get("/v1/files/{file_id}/content", self.content),
                        web.post("/v1/messages/batches", self.an_create),
                        web.get("/v1/messages/batches/{batch_id}", self.an_status),
                        web.get("/v1/messages/batches/{batch_id}/results", self.an_results)])
        runner = web.AppRunner(app)
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
