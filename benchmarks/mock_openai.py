"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1 for benchmarks and tests.

Plain asyncio streams with HTTP/1.1 keep-alive, so the server itself costs little CPU. Every reply waits
`--latency` seconds, then returns a Skill-Mix-shaped answer (a judge table when the prompt asks for grading).
Optional `--fail-every N` answers every Nth request with 429 and a Retry-After header.
"""

from __future__ import annotations

import argparse
import asyncio
import json

STUDENT = "Answer: Sewing is patience, stitched one careful loop at a time. Explanation: metaphor."
JUDGE = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 5 + "| Total | 5 |"


class MockServer:
    def __init__(self, latency: float, fail_every: int = 0):
        self.latency = latency
        self.fail_every = fail_every
        self.count = 0

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
                if self.fail_every and self.count % self.fail_every == 0:
                    payload = b'{"error": {"message": "rate limited", "type": "rate_limit"}}'
                    writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                                 b"retry-after: 0.05\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
                    await writer.drain()
                    continue
                await asyncio.sleep(self.latency)
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


async def serve(port: int, latency: float, fail_every: int = 0, ready=None) -> None:
    server = MockServer(latency, fail_every)
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
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency, args.fail_every))
