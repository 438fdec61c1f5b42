"""A Skill-Mix run on a student fleet of 3 mock servers (one dies mid-run) and a separate judge server.

Starts the servers on 127.0.0.1 (separate processes, each logging `<request number> <status>` per request),
writes a models file naming the fleet and the judge, runs `skillweave run skillmix` through the CLI and prints,
from the servers' logs and the store: requests and statuses per server, items done and failed, and calls that
needed a second attempt.

    python benchmarks/fleet_demo.py --items 60 --fail-after 10 --concurrency 12
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--fail-after", type=int, default=10, help="Replica C answers 503 after this many requests.")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    import multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        names = ["student-a", "student-b", "student-c", "judge"]
        logs = {n: os.path.join(tmp, f"{n}.log") for n in names}
        procs, urls = [], {}
        ctx = mp.get_context("spawn")
        for name in names:
            queue = ctx.Queue()
            fail_after = args.fail_after if name == "student-c" else 0
            proc = ctx.Process(target=_child, args=(args.latency, fail_after, logs[name], queue), daemon=True)
            proc.start()
            procs.append(proc)
            urls[name] = f"http://127.0.0.1:{queue.get(timeout=30)}/v1"
        models = os.path.join(tmp, "models.yaml")
        with open(models, "w") as f:
            f.write("models:\n  students:\n    kind: openai\n    model: student\n    cooldown: 60\n    base_urls:\n")
            f.writelines(f"      - {urls[n]}\n" for n in names[:3])
            f.write(f"  judge:\n    kind: openai\n    model: judge\n    base_urls: [{urls['judge']}]\n")
        db = os.path.join(tmp, "fleet.db")
        env = {**os.environ, "SKILLWEAVE_MODELS": models}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "skillweave", "--db", db, "run", "skillmix", "--model", "students", "--judge",
                 "judge", "--k", "2", "--n", str(args.items), "--rounds", "1", "--grading-samples", "1",
                 "--concurrency", str(args.concurrency)], env=env, capture_output=True, text=True)
        finally:
            for proc in procs:
                proc.terminate()
        if done.returncode:
            print(done.stderr, file=sys.stderr)
        from skillweave.store import Store

        store = Store(db)
        statuses = [r["status"] for r in store.db.query("select status from items")]
        retried = store.db.execute("select count(*) from llm_calls where attempts > 1").fetchone()[0]
        errors = store.db.execute("select count(*) from llm_calls where error is not null").fetchone()[0]
        print(f"exit {done.returncode}; items: {statuses.count('done')} done, {len(statuses) - statuses.count('done')} "
              f"not done; calls with an error: {errors}; calls that needed a second attempt: {retried}")
        for name in names:
            lines = Path(logs[name]).read_text().split("\n")[:-1] if Path(logs[name]).exists() else []
            codes = [line.split()[1] for line in lines]
            print(f"{name:10s} requests {len(codes):4d}   200: {codes.count('200'):4d}   503: {codes.count('503'):4d}")


def _child(latency, fail_after, log, queue):
    import asyncio

    from mock_openai import serve

    asyncio.run(serve(0, latency, 0, queue, fail_after=fail_after, log=log))


if __name__ == "__main__":
    main()
