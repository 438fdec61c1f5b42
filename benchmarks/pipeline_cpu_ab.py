"""Client CPU per request of the Skill-Mix pipeline, two code trees alternated against one mock server.

Each tree is a folder that holds a `skillweave` package (e.g. a `git archive` of an older commit unpacked into
OLD/skillweave, and the working tree's parent). `--against REF` makes both trees itself: git REF (e.g. `main`)
checked out detached in a temporary worktree as `before`, this checkout as `after`; the worktree is removed at the
end. The script starts `benchmarks/mock_openai.py` once, then runs the pipeline (`openai:` provider, Skill-Mix, k=2,
three requests per item) in a fresh process per run, alternating the trees, so both see the same server and, on a
shared machine, the same load. It prints each run's CPU ms per request of the pipeline process (graph, store,
templates, HTTP client), its requests/s over those of a bare aiohttp three-step loop run in the same process
(the issue's ratio; the loop runs right before the pipeline, replaying the warm-up run's bodies cycled to the same
count, and right after it, replaying the run's own bodies, and the ratio is over the mean of the two), the run's
diagnostics (benchmarks/pipeline_throughput.py, `Probe`), and per tree the median and the worst round of both
numbers.

    python benchmarks/pipeline_cpu_ab.py --against main --rounds 7
    git archive <commit> | (mkdir -p /tmp/old/skillweave && tar -x -C /tmp/old/skillweave)
    python benchmarks/pipeline_cpu_ab.py --tree before=/tmp/old --tree after=/path/to/parent-of-checkout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from mock_openai import run_in_process  # noqa: E402
from pipeline_throughput import PROBE_LINE, spread  # noqa: E402

ONE_RUN = """
import asyncio, json, sys, tempfile, os
sys.path.insert(0, {here!r})
import pipeline_throughput as pt
import skillweave
with tempfile.TemporaryDirectory() as tmp:
    pt.pipeline({c}, 8, os.path.join(tmp, "warm.db"))
    warm = pt.recorded_requests(os.path.join(tmp, "warm.db"))
    before = asyncio.run(pt.bare_aiohttp_three_steps({c}, [warm[i % len(warm)] for i in range(3 * {n})]))
    items_ps, rps, calls = pt.pipeline({c}, {n}, os.path.join(tmp, "bench.db"), probe={probe})
    cpu_ms, gc_ms, probe = 1000 * pt.pipeline.cpu_s / calls, 1000 * pt.pipeline.gc_s / calls, pt.pipeline.probe
    after = asyncio.run(pt.bare_aiohttp_three_steps({c}, pt.recorded_requests(os.path.join(tmp, "bench.db"))))
print(json.dumps({{"cpu_ms": cpu_ms, "gc_ms": gc_ms, "rps": rps, "calls": calls, "three_rps": (before[0] + after[0]) / 2,
                  "three_cpu": (before[1] + after[1]) / 2, "three_each": [before[0], after[0]], "probe": probe,
                  "file": skillweave.__file__}}))
"""


@contextlib.contextmanager
def against(ref: str):
    """Two trees, [("before", REF in a temporary detached worktree), ("after", this checkout)], removed after."""
    repo = HERE.parent
    with tempfile.TemporaryDirectory(prefix="pipeline-ab-") as tmp:
        src = os.path.join(tmp, "before-src")
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", src, ref], check=True)
        try:
            for name, target in (("before", src), ("after", str(repo))):
                os.makedirs(os.path.join(tmp, name))
                os.symlink(target, os.path.join(tmp, name, "skillweave"))
            commit = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
            print(f"before: {ref} ({commit}), after: {repo} (with its uncommitted changes)", flush=True)
            yield [["before", os.path.join(tmp, "before")], ["after", os.path.join(tmp, "after")]]
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", src], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR (DIR holds skillweave/)")
    parser.add_argument("--against", metavar="REF",
                        help="Compare git REF (e.g. main), checked out in a temporary worktree, with this checkout.")
    parser.add_argument("--no-probe", action="store_true", help="Leave out the per-run diagnostics (Probe).")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="Runs per tree, alternated.")
    args = parser.parse_args()
    if bool(args.tree) == bool(args.against):
        parser.error("give either --against REF or two --tree NAME=DIR")
    with against(args.against) if args.against else contextlib.nullcontext([t.split("=", 1) for t in args.tree]) as trees:
        compare(args, trees)


def compare(args, trees: list) -> None:
    proc, port = run_in_process(args.latency)
    env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "mock"}
    results: dict[str, list[float]] = {name: [] for name, _ in trees}
    ratios: dict[str, list[float]] = {name: [] for name, _ in trees}
    bare_cpu: dict[str, list[float]] = {name: [] for name, _ in trees}
    try:
        for r in range(args.rounds):
            for name, tree in trees if r % 2 == 0 else list(reversed(trees)):
                code = ONE_RUN.format(here=str(HERE), c=args.concurrency, n=args.items, probe=not args.no_probe)
                out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": tree},
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                row = json.loads(out)
                results[name].append(row["cpu_ms"])
                ratios[name].append(row["rps"] / row["three_rps"])
                bare_cpu[name].append(row["three_cpu"])
                print(f"round {r} {name:10s} {row['cpu_ms']:6.2f} CPU ms/request ({row['gc_ms']:.2f} in GC) "
                      f"{row['rps']:7.1f} req/s, / 3-step {ratios[name][-1]:.2f} (3-step before/after "
                      f"{row['three_each'][0]:.0f}/{row['three_each'][1]:.0f} req/s, "
                      f"{row['three_cpu']:.2f} CPU ms/request)  ({row['calls']} requests, {row['file']})", flush=True)
                if row["probe"]:
                    print("    " + PROBE_LINE.format(**row["probe"]), flush=True)
    finally:
        proc.terminate()
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name in medians:
        print(f"{name:10s} CPU ms/request {spread(results[name], 'max')}")
        print(f"{name:10s} pipeline / bare aiohttp 3-step {spread(ratios[name], 'min')}; rounds below 0.5: "
              f"{sum(x < 0.5 for x in ratios[name])} of {len(ratios[name])}; 3-step CPU ms/request "
              f"{spread(bare_cpu[name], 'max')}")
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if len(trees) == 2:
        (a, _), (b, _) = trees
        print(f"{b} / {a} CPU per request (medians): {medians[b] / medians[a]:.2f}")
        pairs = [y / x for x, y in zip(results[a], results[b], strict=True)]  # one pair per round, run back to back
        print(f"{b} / {a} CPU per request, per round: median {statistics.median(pairs):.2f} (range {min(pairs):.2f}-"
              f"{max(pairs):.2f}); {b} lower in {sum(p < 1 for p in pairs)} of {len(pairs)} rounds")


if __name__ == "__main__":
    main()
