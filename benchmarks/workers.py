"""One run executed by 1 and by 2 worker processes (`--workers N`) against the local mock OpenAI server.

The server answers after `--latency` seconds, so with enough requests in flight (`--concurrency` per worker) the
client's CPU is the limit, not the server: a second worker process should raise requests/s by up to the number
of free cores while CPU per request stays flat. Measured in one run, on the same server:

  - the single-process run (`--workers 1`, the ordinary runtime in this process): requests/s, CPU ms/request;
  - the same run with `run_with_workers` and 1, then 2 spawned workers: requests/s while the workers execute
    (from the first worker's start to the last one's end; start-up and planning aside, printed separately),
    and each worker's CPU ms per request (its own process CPU while executing, over its requests);
  - the mock server's CPU share during each run (near 1.0 would mean the server is the limit);
  - how long the single process holds SQLite's write lock, as a share of its wall and CPU time: workers share
    one database file, so that share bounds how much a second process can add;
  - 2 workers that commit each write at once (`tick_batching=False`), against the default where each worker
    groups its writes into one transaction per event-loop tick as one process does;
  - the ratios 2 workers / 1 worker for requests/s and for CPU per request.

    python benchmarks/workers.py --latency 0.2 --concurrency 256 --items 1500 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mock_openai import run_in_process  # noqa: E402

CALLS_PER_ITEM = 3  # student turn 0, student turn 1, one judge call (grading samples in one request)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _new_run(db: str, items: int, concurrency: int):
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.store import Store

    store = Store(db)
    config = {
        "k": [2], "n": items, "rounds": 1, "seed": 10, "model": "openai:mock", "judge": "openai:mock",
        "grading_samples": 1, "concurrency": concurrency, "temperature": 0.7, "judge_temperature": 0.7,
        "max_tokens": 512, "student_template": "skillmix/student", "judge_template": "skillmix/judge",
        "skills_catalog": store.save_catalog("b", "skills", [s.as_dict() for s in bundled_skills()]),
        "topics_catalog": store.save_catalog("b", "topics", [{"name": t} for t in bundled_topics()]),
    }
    return store, store.create_run("skillmix", config)


def _ok_calls(store) -> int:
    return store.db["llm_calls"].count_where("error is null")


class LockClock:
    """How long this process holds SQLite's write lock: from each BEGIN IMMEDIATE to its COMMIT (statement trace).
    Another worker's writes wait meanwhile, so this share of the wall time bounds what more processes can add."""

    def __init__(self):
        self.held, self._since = 0.0, None

    def __call__(self, statement: str) -> None:
        head = statement.lstrip()[:16].upper()
        if head.startswith("BEGIN"):
            self._since = time.perf_counter()
        elif head.startswith(("COMMIT", "ROLLBACK")) and self._since is not None:
            self.held += time.perf_counter() - self._since
            self._since = None


def single(db: str, items: int, concurrency: int, server_pid: int) -> dict:
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline

    store, run_id = _new_run(db, items, concurrency)
    clock = LockClock()
    store.db.conn.set_trace_callback(clock)
    server0, start, cpu = _proc_cpu(server_pid), time.perf_counter(), time.process_time()
    summary = run_pipeline(get_pipeline("skillmix"), store, run_id, concurrency=concurrency, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    store.db.conn.set_trace_callback(None)
    calls = _ok_calls(store)
    assert summary.done == items and calls == items * CALLS_PER_ITEM, (summary, calls)
    return {"rps": calls / wall, "cpu_ms": [1000 * cpu / calls], "server": (_proc_cpu(server_pid) - server0) / wall,
            "calls": calls, "wall": wall, "lock_share": clock.held / wall, "lock_share_cpu": clock.held / cpu}


def with_workers(db: str, items: int, concurrency: int, workers: int, server_pid: int,
                 tick_batching: bool = True) -> dict:
    from skillweave.graphs.workers import run_with_workers
    from skillweave.pipelines import get_pipeline

    store, run_id = _new_run(db, items, concurrency)
    server0, start = _proc_cpu(server_pid), time.perf_counter()
    summary = run_with_workers(get_pipeline("skillmix"), store, run_id, workers=workers, concurrency=concurrency,
                               progress=False, tick_batching=tick_batching)
    wall = time.perf_counter() - start
    calls = _ok_calls(store)
    assert summary.done == items and calls == items * CALLS_PER_ITEM, (summary, calls)
    parts = summary.per_worker
    window = max(p["started_at"] + p["wall_s"] for p in parts) - min(p["started_at"] for p in parts)
    return {"rps": calls / window, "cpu_ms": [1000 * p["cpu_s"] / (p["finished"] * CALLS_PER_ITEM) for p in parts],
            "server": (_proc_cpu(server_pid) - server0) / wall, "calls": calls, "wall": wall, "window": window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=256, help="Threads in flight per worker.")
    parser.add_argument("--latency", type=float, default=0.2, help="Mock server latency per request (s).")
    parser.add_argument("--items", type=int, default=1500, help="Skill-Mix combinations (3 requests each).")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Rounds; the order of the three runs alternates between rounds (ABC, CBA, ...) and the "
                             "median of each is printed, so drift in the machine's load cancels out.")
    args = parser.parse_args()

    server, port = run_in_process(args.latency)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "mock"
    runs = {
        "single": lambda db: single(db, args.items, args.concurrency, server.pid),
        "w1": lambda db: with_workers(db, args.items, args.concurrency, 1, server.pid),
        "w2": lambda db: with_workers(db, args.items, args.concurrency, 2, server.pid),
        "w2commit": lambda db: with_workers(db, args.items, args.concurrency, 2, server.pid, tick_batching=False),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    load = [os.getloadavg()[0]]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            single(os.path.join(tmp, "warmup.db"), 16, args.concurrency, server.pid)  # imports, templates
            for round_ in range(args.repeat):
                order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
                for name in order:
                    results[name].append(runs[name](os.path.join(tmp, f"{name}-{round_}.db")))
    finally:
        server.terminate()
    load.append(os.getloadavg()[0])

    def median(name: str) -> dict:
        rows = sorted(results[name], key=lambda r: r["rps"])
        return rows[len(rows) // 2]

    one, w1, w2, w2commit = median("single"), median("w1"), median("w2"), median("w2commit")
    ideal = args.concurrency / args.latency
    print(f"{os.cpu_count()} cores, load average {load[0]:.1f} before and {load[1]:.1f} after; "
          f"median of {args.repeat} round(s)")
    print(f"latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency} per worker, "
          f"{args.items} items, {one['calls']} requests per run; ideal {ideal:.0f} req/s per worker")
    print(f"{'':28}{'req/s':>9}{'CPU ms/request per worker':>30}{'server CPU share':>18}{'wall s':>8}")
    for name, r in (("single process (--workers 1)", one), ("1 spawned worker", w1), ("2 spawned workers", w2),
                    ("2 workers, commit per write", w2commit)):
        cpu = " / ".join(f"{c:.2f}" for c in r["cpu_ms"])
        print(f"{name:28}{r['rps']:9.1f}{cpu:>30}{r['server']:18.2f}{r['wall']:8.1f}")
    mean = lambda r: sum(r["cpu_ms"]) / len(r["cpu_ms"])  # noqa: E731
    print(f"2 workers / 1 worker: requests/s {w2['rps'] / w1['rps']:.2f}x, CPU per request {mean(w2) / mean(w1):.2f}x")
    print(f"2 workers, tick batching (default) / commit per write: requests/s {w2['rps'] / w2commit['rps']:.2f}x, "
          f"CPU per request {mean(w2) / mean(w2commit):.2f}x")
    print(f"2 workers / single process: requests/s {w2['rps'] / one['rps']:.2f}x, "
          f"CPU per request {mean(w2) / mean(one):.2f}x")
    print(f"single process: SQLite write lock held {one['lock_share']:.0%} of the wall time "
          f"({one['lock_share_cpu']:.0%} of its CPU time); N processes add throughput while N x that share < 100%")
    print(f"start-up of the spawned runs (wall minus executing): 1 worker {w1['wall'] - w1['window']:.1f} s, "
          f"2 workers {w2['wall'] - w2['window']:.1f} s")


if __name__ == "__main__":
    main()
