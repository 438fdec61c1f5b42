"""The Skill-Mix index draws (agents/compactplan.py) of this checkout against another tree's, in one process.

`scale.py --plan` times planning in a fresh process per tree, one after the other; on a shared machine that moves
by a few percent from process to process. Here both trees' `official_compact` and `interleaved_compact` run in
the same process, alternated round by round (and which goes first) on the same catalogs (bundled, k=3, the plan's arguments), and the
ratio this / other is printed per round with its median. The other tree's module is loaded from its file; any
`skillweave` import in it resolves to the skillweave this interpreter imports.

    python benchmarks/plan_draws.py --against /tmp/old/agents/compactplan.py --n 30000 --rounds 9
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time


def _load(path: str):
    spec = importlib.util.spec_from_file_location("other_compactplan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, metavar="FILE",
                        help="the other tree's agents/compactplan.py (e.g. a detached worktree of main)")
    parser.add_argument("--n", type=int, default=30_000, help="combinations per draw (default 30000)")
    parser.add_argument("--rounds", type=int, default=9, help="alternated rounds per sampler (default 9)")
    args = parser.parse_args(argv)

    from skillweave.agents import compactplan as this
    from skillweave.catalog import bundled_skills, bundled_topics

    other = _load(args.against)
    skills, topics, n = bundled_skills(), bundled_topics(), args.n
    draws = {
        "official": lambda m: m.official_compact(skills, topics, 3, n, 10, "test"),
        "interleaved": lambda m: m.interleaved_compact(skills, topics, 3, n, 10, "k3_s10"),
    }
    for name, draw in draws.items():
        for m in (this, other):  # the same rows from both trees, and a warm-up
            rows = list(draw(m))
        assert [list(r) for r in draw(this)] == [list(r) for r in rows], f"{name}: the trees draw differently"
        ratios, this_us = [], []
        for i in range(args.rounds):  # which tree goes first alternates too
            if i % 2:
                after, before = _cpu(draw, this), _cpu(draw, other)
            else:
                before, after = _cpu(draw, other), _cpu(draw, this)
            ratios.append(after / before)
            this_us.append(1e6 * after / n)
        print(f"{name:>11}: this / other CPU per round {' '.join(f'{r:.3f}' for r in sorted(ratios))}; "
              f"median {statistics.median(ratios):.3f}; this code {statistics.median(this_us):.1f} CPU us per "
              f"combination (median)", flush=True)


if __name__ == "__main__":
    main()
