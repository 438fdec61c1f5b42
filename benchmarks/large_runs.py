"""Large-run tools on the fake provider with a simulated remote latency: what the reply cache, `rejudge` and
`merge` save or cost, as ratios measured in this one run (no timed assertions).

  1. reply cache: a second identical run through the cache against the first (wall time, provider calls);
  2. rejudge: re-grading a run's texts against running it again (wall time, model calls made);
  3. shards: the same run as N shards run one after another, plus `merge`, against the unsharded run
     (the merge's share of the total; the merged report must equal the unsharded one).

Run: .venv/bin/python benchmarks/large_runs.py [--n 60] [--shards 4] [--latency 0.02] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path


def cli(*args: str) -> tuple[int, float]:
    from skillweave.cli import main

    start = time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code or 0
    return code, time.perf_counter() - start


def calls(db: str, run: str = "latest", provider_only: bool = True) -> int:
    from skillweave.store import Store

    store = Store(db)
    run_id = store.get_run(run)["id"]
    where = "run_id = ?" + (" and attempts > 0" if provider_only else "")
    return store.db["llm_calls"].count_where(where, [run_id])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ["SKILLWEAVE_FAKE_LATENCY"] = str(args.latency)
    os.environ["SKILLWEAVE_PROGRESS_EVERY"] = "0"
    run = ["run", "skillmix", "--model", "fake", "--k", "2", "--n", str(args.n), "--rounds", "1",
           "--grading-samples", "3", "--concurrency", str(args.concurrency)]
    with tempfile.TemporaryDirectory() as tmp:
        db, cache = str(Path(tmp) / "a.db"), str(Path(tmp) / "replies.db")
        print(f"Skill-Mix, fake provider, {args.latency * 1000:.0f} ms per call, k=2, n={args.n}, "
              f"concurrency {args.concurrency}")

        cli("--db", str(Path(tmp) / "warmup.db"), *run[:-4], "--n", "2")  # imports and first-use costs, untimed
        _, cold = cli("--db", db, *run, "--reply-cache", cache)
        cold_calls = calls(db)
        _, warm = cli("--db", db, *run, "--reply-cache", cache)
        print(f"1. reply cache: first run {cold:.2f} s, {cold_calls} provider calls; second run {warm:.2f} s, "
              f"{calls(db)} provider calls; time ratio {warm / cold:.2f}")

        _, full = cli("--db", db, *run)
        full_calls = calls(db)
        _, again = cli("--db", db, "rejudge", "latest", "--judge", "fake:judge2")
        print(f"2. rejudge: full run {full:.2f} s, {full_calls} calls; rejudge {again:.2f} s, {calls(db)} calls; "
              f"time ratio {again / full:.2f}, call ratio {calls(db) / full_calls:.2f}")

        whole = str(Path(tmp) / "whole.db")
        _, unsharded = cli("--db", whole, *run)
        parts, shard_time = [], 0.0
        for i in range(1, args.shards + 1):
            parts.append(str(Path(tmp) / f"shard{i}.db"))
            shard_time += cli("--db", parts[-1], *run, "--shard", f"{i}/{args.shards}")[1]
        merged = str(Path(tmp) / "all.db")
        code, merge_time = cli("merge", *parts, "--into", merged)
        from skillweave.metrics.skillmix import run_report
        from skillweave.store import Store

        same = (run_report(Store(merged), Store(merged).get_run("latest"))["metrics"]
                == run_report(Store(whole), Store(whole).get_run("latest"))["metrics"])
        print(f"3. shards: unsharded {unsharded:.2f} s; {args.shards} shards one after another {shard_time:.2f} s "
              f"(ratio {shard_time / unsharded:.2f}); merge {merge_time:.2f} s = "
              f"{merge_time / (shard_time + merge_time):.1%} of shards + merge; merged report equals unsharded: "
              f"{same} (merge exit {code})")


if __name__ == "__main__":
    main()
