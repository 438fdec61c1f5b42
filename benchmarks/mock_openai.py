"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1 for benchmarks and tests.

Plain asyncio streams with HTTP/1.1 keep-alive, so the server itself costs little CPU. Every reply waits
`--latency` seconds, then returns a Skill-Mix-shaped answer (a judge table when the prompt asks for grading).
Optional `--fail-every N` answers every Nth request with 429 and a Retry-After header; `--fail-after N`
answers every request after the Nth with 503 (a replica that dies mid-run); `--log FILE` appends one line per
request (`<request number> <status>`), so a test or a person can see how load was spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json

STUDENT = "Answer: Sewing is patience, stitched one careful loop at a time. Explanation: metaphor."
JUDGE = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 5 + "| Total | 5 |"


class MockServer:
    BAD = {"empty_choices": b'{"id": "x", "object": "chat.completion", "choices": []}',
           "null_content": b'{"id": "x", "choices": [{"index": 0, "finish_reason": "stop", '
                           b'"message": {"role": "assistant", "content": null}}]}',
           "garbage": b"<html>502 bad gateway</html>"}

    def __init__(self, latency: float, fail_every: int = 0, fail_after: int = 0, log: str | None = None,
                 bad: str | None = None):
        self.latency = latency
        self.bad = bad
        self.fail_every = fail_every
        self.fail_after = fail_after
        self.log = log
        self.count = 0
        self.statuses: list[int] = []  # one per request, in arrival order

    def _note(self, status: int) -> None:
        self.statuses.append(status)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{self.count} {status}\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.count += 1
                if self.fail_after and self.count > self.fail_after:
                    self._note(503)
                    payload = b'{"error": {"message": "replica down", "type": "server_error"}}'
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
                    await writer.drain()
                    continue
                if self.fail_every and self.count % self.fail_every == 0:
                    self._note(429)
                    payload = b'{"error": {"message": "rate limited", "type": "rate_limit"}}'
                    writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                                 b"retry-after: 0.05\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
                    await writer.drain()
                    continue
                await asyncio.sleep(self.latency)
                self._note(200)
                if self.bad:
                    payload = self.BAD[self.bad]
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(payload), payload))
                    await writer.drain()
                    continue
                prompt = json.dumps(body.get("messages", []))
                text = JUDGE if "grading" in prompt else STUDENT
                n = int(body.get("n") or 1)
                payload = json.dumps({
                    "id": f"cmpl-{self.count}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "mock"),
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}} for i in range(n)],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 20 * n,
                              "total_tokens": len(prompt) // 4 + 20 * n},
                }).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(port: int, latency: float, fail_every: int = 0, ready=None, *, fail_after: int = 0,
                log: str | None = None) -> None:
    server = MockServer(latency, fail_every, fail_after, log)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=1024)
    if ready is not None:
        ready.put(srv.sockets[0].getsockname()[1])
    async with srv:
        await srv.serve_forever()


def run_in_process(latency: float, fail_every: int = 0):
    """Start the server in a child process; returns (process, port)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(latency, fail_every, queue), daemon=True)
    proc.start()
    return proc, queue.get(timeout=30)


def _child(latency, fail_every, queue):
    asyncio.run(serve(0, latency, fail_every, queue))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--fail-after", type=int, default=0, help="Answer 503 after this many requests.")
    parser.add_argument("--log", default=None, help="Append '<request number> <status>' per request here.")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency, args.fail_every, fail_after=args.fail_after, log=args.log))
