"""Client CPU per request: the plain `openai:` provider against a named model of the models file
(providers/fleet.py: endpoint choice, rate-limit bookkeeping), one endpoint and a 3-endpoint fleet.

Each variant replays the same request `--requests` times with `--concurrency` workers against mock servers
on 127.0.0.1 (separate processes) and prints requests/s and this process's CPU ms per request, measured in one
run, with the ratios to the plain provider. The variants run interleaved, `--rounds` times; the best round of
each is printed.

    python benchmarks/fleet_overhead.py --concurrency 64 --requests 2000 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Write one sentence about sewing that uses a metaphor. " * 8}]


async def replay(provider, concurrency: int, count: int) -> tuple[float, float]:
    from skillweave.providers.core import ChatRequest

    left = [count]

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            await provider.chat(ChatRequest(messages=MESSAGES, temperature=0.7, max_tokens=256))

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu_ms = time.perf_counter() - start, (time.process_time() - cpu) * 1000
    await provider.aclose()
    return count / elapsed, cpu_ms / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from skillweave.providers.core import OpenAIProvider
    from skillweave.providers.fleet import FleetOpenAIProvider
    from skillweave.providers.model_config import ModelEntry

    servers = [run_in_process(args.latency) for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}/v1" for _, port in servers]
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = urls[0], "mock"
    variants = {
        "openai: provider": lambda: OpenAIProvider("mock", max_concurrency=args.concurrency),
        "named, 1 endpoint": lambda: FleetOpenAIProvider("mock", name="one", max_concurrency=args.concurrency,
                                                         entry=ModelEntry(kind="openai", model="mock",
                                                                          base_urls=urls[:1])),
        "named, 3-endpoint fleet": lambda: FleetOpenAIProvider("mock", name="three", max_concurrency=args.concurrency,
                                                               entry=ModelEntry(kind="openai", model="mock",
                                                                                base_urls=urls)),
        "named, 1 endpoint + rpm/tpm": lambda: FleetOpenAIProvider(
            "mock", name="limited", max_concurrency=args.concurrency,
            entry=ModelEntry(kind="openai", model="mock", base_urls=urls[:1], requests_per_minute=10**7,
                             tokens_per_minute=10**10)),
    }
    best: dict[str, tuple[float, float]] = {}
    try:
        for make in variants.values():  # warm-up: imports, connections
            asyncio.run(replay(make(), args.concurrency, args.concurrency))
        for _ in range(args.rounds):
            for name, make in variants.items():
                rps, cpu = asyncio.run(replay(make(), args.concurrency, args.requests))
                if name not in best or cpu < best[name][1]:
                    best[name] = (rps, cpu)
    finally:
        for proc, _ in servers:
            proc.terminate()
    base_rps, base_cpu = best["openai: provider"]
    print(f"concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, {args.requests} requests, "
          f"best of {args.rounds} rounds")
    print(f"{'variant':30s} {'req/s':>8s} {'CPU ms/req':>11s} {'req/s ratio':>12s} {'CPU ratio':>10s}")
    for name, (rps, cpu) in best.items():
        print(f"{name:30s} {rps:8.1f} {cpu:11.3f} {rps / base_rps:12.2f} {cpu / base_cpu:10.2f}")


if __name__ == "__main__":
    main()
