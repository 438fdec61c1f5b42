"""Large runs: per-item cost of a pipeline run, and report / export / items list on a large store.

Two parts, each measured in one run of this script:

1. `run`: Skill-Mix with the fake provider (k=3, one round, one judge sample) at each size in --run-sizes, each
   in its own process; prints CPU ms per item (the whole run, and the threads' first and second half: the second
   half carries none of the run's fixed start), read and write syscalls per item, peak RSS (the whole command, and
   until its threads ended, before the report `run` prints); with --repeat, sizes and codes interleave and the
   median and min of each size are compared with the smallest size and with 1,000 items (flat = 1.00).
2. `reads`: a store with --items graded Skill-Mix items (two judge samples each, every third reviewed) written
   in bulk; times `report --json`, `export` (JSONL) and `items list --json` (to /dev/null) as the CLI runs them,
   each in a fresh process (CPU s, items per CPU second, the process's peak RSS), and the per-item reads they
   replaced (`Store.items` + `Store.grades` + a review lookup per item).

Instead of those, `--fixed RUNS` measures a run's fixed cost (its set-up and close): one-item and 100-item runs into a
new and into an existing file after a warm-up, CPU and SQL statements phase by phase; `--breakdown N` what grows within
one run; `--plan SIZES` the plan's memory.

With --against PYTHONPATH (a folder holding another checkout as `skillweave`), every measurement is also made with
that code, alternating with this code's, and the ratios are printed; export prints a digest of its output.

    python benchmarks/scale.py --run-sizes 100,1000,10000 --items 100000
    python benchmarks/scale.py --run-sizes 100,100000 --items 0 --against /tmp/ppold   # old and new, one run
    python benchmarks/scale.py --run-sizes "" --items 100000 --repeat 3 --against /tmp/ppold
    python benchmarks/scale.py --run-sizes 100,1000,10000,100000 --items 0 --repeat 2 --against /tmp/ppold
    python benchmarks/scale.py --breakdown 100000 --against /tmp/ppold   # what grows within one run
    python benchmarks/scale.py --run-sizes 100,1000 --items 0 --same-store   # a run into an existing store
    python benchmarks/scale.py --plan 100000,1000000 --against /tmp/ppold   # the plan's memory per combination
    python benchmarks/scale.py --fixed 10 --repeat 3 --against /tmp/ppold   # a run's fixed cost, phase by phase
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

HWM = (  # peak RSS of this process in KiB: VmHWM (ru_maxrss would include the parent's RSS at fork; Linux keeps
    # it across exec), else ru_maxrss
    "def hwm():\n"
    "    try:\n"
    "        return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    "    except (OSError, StopIteration):\n"
    "        import resource\n"
    "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n")

RUN = (  # a child process's read/write syscalls so far, and one Skill-Mix run on the fake provider (as `run` measures)
    "from skillweave.cli import main\n"
    "def io():\n"
    "    fields = dict(line.split(': ') for line in open('/proc/self/io').read().splitlines())\n"
    "    return int(fields['syscr']), int(fields['syscw'])\n"
    "def run(db, n):\n"
    "    args = ['--db', db, 'run', 'skillmix', '--model', 'fake', '--k', '3', '--n', str(n), '--rounds', '1',"
    " '--grading-samples', '1', '--concurrency', '64']\n"
    "    try:\n        main(args)\n    except SystemExit:\n        pass\n")


def run_size(n: int, folder: str, against: str | None = None, same_store: bool = False) -> dict:
    db = os.path.join(folder, f"run-{n}{'-against' if against else ''}.db")
    for stale in (db, db + "-wal", db + "-shm"):  # --repeat: every pass starts without the last pass's store
        if os.path.exists(stale):
            os.remove(stale)
    warm = db if same_store else db + ".warm"  # --same-store: creating the store file is not counted either
    code = (  # a 20-item warm-up run first, so imports and start-up are not counted per item
        "import os, sys, time\n"
        + HWM + RUN +
        "import skillweave.graphs.runtime as rt\n"
        "import skillweave.graphs.progress as progress\n"
        "_close, ran, half = rt.close_clients, [], []\n"
        "async def close():  # the threads are done: peak RSS of the run itself, before the closing report\n"
        "    ran.append((hwm(), time.process_time(), *io()))\n"
        "    return await _close()\n"
        "rt.close_clients = close\n"
        "_update = progress.Progress.update\n"
        "def update(self, k=1):  # the moment the measured run's threads are half done\n"
        "    _update(self, k)\n"
        f"    if measuring and not half and self.finished >= {n // 2}:\n"
        "        half.append((self.finished, time.process_time(), *io()))\n"
        "progress.Progress.update = update\n"
        "measuring = False\n"
        f"run({warm!r}, 20)\n"
        "measuring = True\n"
        "start = (time.process_time(), *io())\n"
        f"run({db!r}, {n})\n"
        "end = ran[-1]\n"
        "print('RESULT', time.process_time() - start[0], hwm(), end[0], half[0][0], half[0][1] - start[0],"
        " end[1] - half[0][1], end[2] - start[1], end[3] - start[2])\n"
    )
    env = dict(os.environ, PYTHONPATH=against) if against else None  # another checkout's code (--against)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    if not line:
        raise SystemExit(f"run of {n} items failed: {out.stderr[-2000:]}")
    _, cpu, rss_kb, run_rss_kb, mid, first, second, reads, writes = line[0].split()
    mid = int(mid)
    return {"items": n, "cpu_ms_per_item": 1000 * float(cpu) / n, "peak_rss_mib": int(rss_kb) / 1024,
            "run_rss_mib": int(run_rss_kb) / 1024,
            # CPU per item of the threads' first and second half (to the end of the threads, not the closing
            # report): the second half carries none of the run's fixed start (plan, first batch)
            "first_ms": 1000 * float(first) / mid, "second_ms": 1000 * float(second) / (n - mid),
            "reads": int(reads) / n, "writes": int(writes) / n}


PLAN = r"""
import gc, sys, time, tracemalloc
from types import SimpleNamespace
from skillweave.agents.skillmix import plan_threads
from skillweave.catalog import bundled_skills, bundled_topics
from skillweave.pipelines.skillmix import SkillMixConfig
n, traced = int(sys.argv[1]), sys.argv[2] == "1"
def rss(field):
    return int(next(x for x in open('/proc/self/status') if x.startswith(field)).split()[1])
class Catalogs:  # what plan_threads reads before it returns its lazy plan
    def get_catalog(self, name):
        return {"entries": [s.as_dict() for s in bundled_skills()] if name == "s" else
                [{"name": t} for t in bundled_topics()]}
config = SkillMixConfig(k=[3], n=n, seed=10, rounds=1, skills_catalog="s", topics_catalog="t")
ctx = SimpleNamespace(config=config, store=Catalogs(), run_id="r")
plan_threads(SimpleNamespace(config=config.model_copy(update={"n": 2}), store=Catalogs(), run_id="w"))  # warm
gc.collect()
if traced:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    plan = plan_threads(ctx)
    held, peak = tracemalloc.get_traced_memory()
    print("RESULT", (held - before) / n, (peak - before) / n)
else:
    rss0, t = rss("VmRSS"), time.process_time()
    plan = plan_threads(ctx)
    cpu = time.process_time() - t
    print("RESULT", cpu, (rss("VmRSS") - rss0) * 1024 / n, (rss("VmHWM") - rss0) * 1024 / n)
"""


FIXED = RUN + r"""
import collections, contextlib, functools, gc, json, os, sqlite3, sys, tempfile, time
runs, profile = int(sys.argv[1]), sys.argv[2] == "1"
cpu = time.process_time
spent = collections.defaultdict(float)  # phase -> CPU s (exclusive: a phase inside another is not counted twice)
stmts = collections.Counter()  # phase -> SQL statements (only in the counting run)
state = {"phase": "CLI: options and other", "at": 0.0, "threads": 0, "outer": None}

def switch(name):
    t = cpu()
    spent[state["phase"]] += t - state["at"]
    state["at"], prev, state["phase"] = t, state["phase"], name
    return prev

def sync(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prev = switch(name)
        try:
            return fn(*args, **kwargs)
        finally:
            switch(prev)
    return wrapper

def coro(name, fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        prev = switch(name)
        try:
            return await fn(*args, **kwargs)
        finally:
            switch(prev)
    return wrapper

def threads(fn):  # the graph threads, however many are in flight: one phase
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        if state["threads"] == 0:
            state["outer"] = switch("threads (the items' own work)")
        state["threads"] += 1
        try:
            return await fn(*args, **kwargs)
        finally:
            state["threads"] -= 1
            if state["threads"] == 0:
                switch(state["outer"])
    return wrapper

collecting = []  # the phase a garbage collection interrupted

def collected(phase, _info):  # a collection is its own phase, wherever it happens to start
    if phase == "start":
        collecting.append(switch("garbage collection"))
    elif collecting:
        switch(collecting.pop())

gc.callbacks.append(collected)
counting = [False]
_connect = sqlite3.connect
def connect(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    conn.set_trace_callback(lambda _sql: counting[0] and stmts.update((state["phase"],)))
    return conn
sqlite3.connect = connect

import skillweave.agents.skillmix as skillmix
import skillweave.api as api
import skillweave.cli.run as cli_run
import skillweave.graphs.runtime as rt
import skillweave.store as store_module
import skillweave.store.checkpoints as checkpoints
import skillweave.store.leases as leases
from skillweave.graphs.progress import Progress
from skillweave.pipeline import Pipeline
from skillweave.store import Store

PHASES = [  # (owner, attribute, phase); an attribute the code measured does not have is skipped
    (cli_run, "start_run", "CLI: run set-up (other)"), (skillmix, "input_catalogs", "catalogs: read input files"),
    (Pipeline, "new_config", "settings checks"), (cli_run, "preflight", "settings checks"),
    (cli_run, "check_new_run", "settings checks"), (api, "load_template", "templates: check"),
    (Store, "__init__", "store: open (connection, PRAGMAs, checks)"),
    (store_module, "_copy_template", "store: new file copied from the template"),
    (Store, "_migrate", "store: schema (snapshot, migrations, check)"),
    (Store, "save_catalog", "catalogs: save"), (Store, "link_run_catalog", "catalogs: link to the run"),
    (Store, "create_run", "run row: insert"), (cli_run, "apply_cost_settings", "run row: read back"),
    (rt, "run_pipeline", "runtime: event loop, other"), (leases.RunLease, "acquire", "lease: take"),
    (leases.RunLease, "release", "lease: release"), (rt, "run_context", "run context (run row, settings, prompts)"),
    (Store, "set_run_status", "run status"), (Pipeline, "plan", "plan (catalogs read, combinations drawn)"),
    (checkpoints, "store_checkpointer", "checkpointer set-up"), (Pipeline, "build_graph", "graph: copy, direct executor"),
    (rt, "direct_graph", "graph: copy, direct executor"),
    (rt, "threads_with_checkpoints", "checkpoint lookup per batch of threads"),
    (Progress, "__init__", "progress"), (Progress, "start", "progress"), (Progress, "close", "progress"),
    (Store, "flush_writes", "commits at the ends of ticks"), (cli_run, "echo_table", "closing report"),
]
for owner, attribute, phase in PHASES:
    if hasattr(owner, attribute):
        setattr(owner, attribute, sync(phase, getattr(owner, attribute)))
for attribute, phase in (("arun_pipeline", "runtime: run set-up and close (other)"),
                         ("execute", "runtime: scheduling (items made, progress, other)"),
                         ("close_clients", "runtime: run set-up and close (other)")):
    setattr(rt, attribute, coro(phase, getattr(rt, attribute)))
rt._run_thread = threads(rt._run_thread)
_reporter = Pipeline.reporter
Pipeline.reporter = lambda self: (lambda fn: fn and sync("closing report", fn))(_reporter(self))

folder = tempfile.mkdtemp()
def one(db, n):
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        run(db, n)

one(os.path.join(folder, "warm.db"), 20)  # imports, first-use caches, the store template (if the code has one)
one(os.path.join(folder, "warm-new.db"), 1)
cases = [("new file", 1), ("existing file", 1), ("new file", 100), ("existing file", 100)]
made = 0
for label, n in cases:
    for r in range(runs + 1):  # the last run counts statements (the trace callback costs CPU, so only then)
        made += 1
        db = os.path.join(folder, f"new-{made}.db" if label == "new file" else "warm.db")
        counting[0] = r == runs
        spent.clear()
        stmts.clear()
        state["phase"], state["at"] = "CLI: options and other", cpu()
        t = cpu()
        if profile and r == runs - 1 and n == 1 and label == "new file":
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            one(db, n)
            prof.disable()
            prof_stats = pstats.Stats(prof).stats
        else:
            one(db, n)
        total = cpu() - t
        switch("CLI: options and other")
        print("FIXED", json.dumps({"case": f"{label}, {n} item{'s' if n > 1 else ''}", "count": counting[0],
                                   "total": total, "phases": dict(spent), "statements": dict(stmts)}))
if profile:
    top = sorted(prof_stats.items(), key=lambda kv: -kv[1][2])[:25]
    for (path, line, name), (_cc, calls, own, cum, _callers) in top:
        print("PROFILE", json.dumps([1000 * own, 1000 * cum, calls, f"{os.path.basename(path)}:{line}({name})"]))
"""


def fixed_cost(runs: int, repeat: int, against: str | None, profile: bool) -> None:
    """A run's fixed cost: one-item and 100-item runs into a new file and into an existing one, each after a warm-up
    in the same process, with the CPU of each phase of the run (set-up, the threads, closing) and, in one more run
    of each, the SQL statements per phase; `repeat` processes per code, alternating with --against."""
    import statistics

    trees = ([("against", against)] if against else []) + [("this code", None)]
    got: dict = {}
    for r in range(repeat):
        for label, path in (trees if r % 2 == 0 else trees[::-1]):
            env = dict(os.environ, PYTHONPATH=path) if path else None
            out = subprocess.run([sys.executable, "-c", FIXED, str(runs), "1" if profile and r == 0 else "0"],
                                 capture_output=True, text=True, env=env)
            lines = [x.split(" ", 1) for x in out.stdout.splitlines() if x.startswith(("FIXED ", "PROFILE "))]
            if out.returncode or not lines:
                raise SystemExit(f"--fixed failed: {out.stderr[-2000:]}")
            for kind, text in lines:
                got.setdefault((label, kind), []).append(json.loads(text))
            print(f"{label}: process {r + 1} done, load {os.getloadavg()[0]:.1f}", flush=True)
    cases = list(dict.fromkeys(x["case"] for x in got[(trees[0][0], "FIXED")]))
    totals = {}
    for label, _ in trees:
        rows = got[(label, "FIXED")]
        timed = {case: [x for x in rows if x["case"] == case and not x["count"]] for case in cases}
        counted = {case: next(x for x in rows if x["case"] == case and x["count"]) for case in cases}
        phases = sorted({p for x in rows for p in x["phases"]},
                        key=lambda p: -statistics.median(x["phases"].get(p, 0) for x in timed[cases[0]]))
        totals[label] = {case: statistics.median(x["total"] for x in timed[case]) for case in cases}
        print(f"\n{label}: CPU ms per run (median of {len(timed[cases[0]])} runs in {repeat} process(es)) and SQL "
              f"statements, by phase")
        print(f"  {'phase':<52}" + "".join(f"{case:>24}" for case in cases))
        for phase in phases:
            cells = [f"{1000 * statistics.median(x['phases'].get(phase, 0) for x in timed[c]):8.2f} ms"
                     f"{counted[c]['statements'].get(phase, 0):6d} st" for c in cases]
            print(f"  {phase:<52}" + "".join(f"{cell:>24}" for cell in cells))
        print(f"  {'whole run':<52}" + "".join(
            f"{1000 * totals[label][c]:10.2f} ms{sum(counted[c]['statements'].values()):6d} st" for c in cases))
        for where in ("new file", "existing file"):
            one, hundred = totals[label][f"{where}, 1 item"], totals[label][f"{where}, 100 items"]
            per_item = (hundred - one) / 99
            print(f"  {where}: an item {1000 * per_item:.3f} CPU ms (from the 100- and 1-item runs); fixed cost "
                  f"{1000 * (one - per_item):.2f} CPU ms, {1000 * (one - per_item) / 100:.3f} ms per item at 10^2")
        if (label, "PROFILE") in got:
            print("  cProfile of one 1-item run into a new file (own ms, cumulative ms, calls), top by own time:")
            for own, cum, calls, where in got[(label, "PROFILE")]:
                print(f"    {own:7.3f} {cum:7.3f} {calls:6d}  {where}")
    if against:
        print("\nthis code / against, whole run: " + ", ".join(
            f"{case} {totals['this code'][case] / totals['against'][case]:.2f}x" for case in cases))


def summarise(sizes: list[int], trees: list, passes: dict, repeat: int) -> None:
    """Per code and size over the passes: median and min of CPU ms per item (whole run, and the threads' second
    half, which carries none of the fixed start), each as a ratio to the smallest size and to 1,000 items; the
    spread of the medians around their middle; syscalls per item and the highest peak RSS."""
    import statistics

    stat = {(label, n): {key: (statistics.median(x[key] for x in runs), min(x[key] for x in runs))
                         for key in ("cpu_ms_per_item", "second_ms", "reads", "writes")}
            | {"rss": max(x["peak_rss_mib"] for x in runs)} for (label, n), runs in passes.items()}
    refs = [sizes[0]] + ([1000] if 1000 in sizes and sizes[0] != 1000 else [])
    print(f"runs over {repeat} pass(es): median (min) CPU ms per item, x of {' and x of '.join(map(str, refs))} "
          "for the medians:")
    for key, name in (("cpu_ms_per_item", "whole run"), ("second_ms", "threads' second half")):
        for label, _ in trees:
            cells = []
            for n in sizes:
                med, low = stat[(label, n)][key]
                ratios = "/".join(f"{med / stat[(label, ref)][key][0]:.2f}x" for ref in refs)
                cells.append(f"{n}: {med:.3f} ({low:.3f}) {ratios}")
            meds = [stat[(label, n)][key][0] for n in sizes]
            middle = (max(meds) + min(meds)) / 2
            print(f"  {name:>20}, {label:>9}: " + "; ".join(cells)
                  + f"; spread ±{100 * (max(meds) - middle) / middle:.1f}% of its middle")
    for label, _ in trees:
        print(f"  read/write syscalls per item (median), peak RSS, {label:>9}: " + "; ".join(
            f"{n}: {stat[(label, n)]['reads'][0]:.1f}/{stat[(label, n)]['writes'][0]:.1f}, "
            f"{stat[(label, n)]['rss']:.0f} MiB" for n in sizes))
    if len(trees) == 2:
        for key, name in (("cpu_ms_per_item", "whole run"), ("second_ms", "threads' second half")):
            print(f"  this code / against, median CPU per item, {name}: " + ", ".join(
                f"{n}: {stat[('this code', n)][key][0] / stat[('against', n)][key][0]:.2f}x" for n in sizes))


def plan_memory(sizes: list[int], against: str | None = None) -> None:
    """Skill-Mix planning alone (official sampler, bundled catalogs, k=3): what the lazy plan holds and peaks at
    per combination, by tracemalloc and by RSS, and its CPU, each in a fresh process."""
    trees = ([("against", against)] if against else []) + [("this code", None)]
    got: dict = {}
    for n in sizes:
        for label, path in trees:
            env = dict(os.environ, PYTHONPATH=path) if path else None
            row = []
            for traced in ("0", "1"):
                out = subprocess.run([sys.executable, "-c", PLAN, str(n), traced], capture_output=True, text=True,
                                     env=env)
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
                if not line:
                    raise SystemExit(f"planning {n} failed: {out.stderr[-2000:]}")
                row += [float(v) for v in line[0].split()[1:]]
            got[(label, n)] = cpu, rss_held, rss_peak, held, peak = row
            print(f"{label:>9}: plan {n:>8} combinations: {1e6 * cpu / n:.1f} CPU us each; tracemalloc {held:.0f} "
                  f"bytes each held, {peak:.0f} at peak; RSS +{rss_held:.0f} bytes each held, +{rss_peak:.0f} at "
                  f"peak", flush=True)
        if against:
            new, old = got[("this code", n)], got[("against", n)]
            print(f"  this code / against at {n}: CPU {new[0] / old[0]:.2f}x, tracemalloc held {new[3] / old[3]:.3f}x,"
                  f" RSS peak growth {new[2] / max(old[2], 1e-9):.3f}x")


BREAKDOWN = RUN + r"""
import collections, gc, os, re, sqlite3, sys, time
n, db, windows = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cpu = time.process_time
sql = collections.defaultdict(lambda: [0, 0.0])  # statement text -> [count, CPU s]

def timed(method):
    def run(self, statement, *args):
        t = cpu()
        try:
            return method(self, statement, *args)
        finally:
            entry = sql[re.sub(r"\s+", " ", statement)[:110]]
            entry[0] += 1
            entry[1] += cpu() - t
    return run

class Cursor(sqlite3.Cursor):
    execute = timed(sqlite3.Cursor.execute)

class Connection(sqlite3.Connection):
    execute = timed(sqlite3.Connection.execute)

    def cursor(self, factory=Cursor):
        return super().cursor(factory)

_connect = sqlite3.connect
sqlite3.connect = lambda *a, **k: _connect(*a, **{"factory": Connection, **k})
full = [0, 0.0, 0.0]  # full (generation 2) collections, their CPU s, start of the current one

def collected(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            full[2] = cpu()
        else:
            full[0] += 1
            full[1] += cpu() - full[2]

import skillweave.graphs.progress as progress
marks, every = [], max(n // windows, 1)
_update = progress.Progress.update

def update(self, k=1):
    _update(self, k)
    if self.finished % every == 0:
        marks.append((self.finished, cpu(), *io(), sum(e[1] for e in sql.values()), os.times().system))

progress.Progress.update = update

run(db + ".warm", 20)
marks.clear()
sql.clear()
gc.callbacks.append(collected)
start = (0, cpu(), *io(), 0.0, os.times().system)
run(db, n)
end = cpu()
print(f"  whole run: {1000 * (end - start[1]) / n:.3f} CPU ms/item with the statement timer on (system "
      f"{1000 * (os.times().system - start[5]) / n:.3f}); "
      f"{full[0]} full collections, {1000 * full[1] / n:.4f} CPU ms/item")
prev = start
for mark in marks:
    d = mark[0] - prev[0]
    print(f"  threads {prev[0] + 1:>7}-{mark[0]:<7} {1000 * (mark[1] - prev[1]) / d:.3f} CPU ms/item (system "
          f"{1000 * (mark[5] - prev[5]) / d:.3f}), SQL {1000 * (mark[4] - prev[4]) / d:.3f}; read syscalls/item {(mark[2] - prev[2]) / d:5.1f}, write "
          f"{(mark[3] - prev[3]) / d:5.1f}")
    prev = mark
print(f"  SQL, whole run: {1000 * sum(e[1] for e in sql.values()) / n:.3f} CPU ms/item; by statement:")
for text, (count, seconds) in sorted(sql.items(), key=lambda x: -x[1][1])[:12]:
    print(f"    {1000 * seconds / n:.4f} ms/item {count / n:5.2f}/item {1e6 * seconds / count:8.1f} us each  {text}")
"""


def breakdown(n: int, folder: str, windows: int, against: str | None = None) -> None:
    """One run of n items in a fresh process: CPU (and its system part), SQL CPU and read/write syscalls per item in
    `windows` stretches
    of the run (what grows as the store grows), full collections, and SQL CPU by statement."""
    db = os.path.join(folder, f"breakdown-{n}{'-against' if against else ''}.db")
    env = dict(os.environ, PYTHONPATH=against) if against else None
    out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(n), db, str(windows)], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise SystemExit(f"breakdown of {n} items failed: {out.stderr[-2000:]}")
    print(f"{'against' if against else 'this code'}: {n} items, load {os.getloadavg()[0]:.1f}")
    print("\n".join(line for line in out.stdout.splitlines() if line.startswith("  ")), flush=True)


def fill(db: str, n: int) -> str:
    """A Skill-Mix run of n done items with two grades each and a review on every third, in bulk."""
    from skillweave.store import Store, jdump, now, stable_id

    store = Store(db)
    run_id = store.create_run("skillmix", {"k": [3], "n": n, "seed": 0}, command="benchmark")
    store.put_prompt_version("b2:bench", "skillmix/student", "text")
    stamp = now()
    items, grades, reviews = [], [], []
    for i in range(n):
        item_id = store.item_id(run_id, "skillmix.text", i, 0)
        items.append((item_id, run_id, "skillmix.text", i, 0, 3, jdump(["metaphor", "red herring", "hyperbole"]),
                      "gardening", "done", jdump({"prompt_0": f"Write about gardening, item {i}. " * 8,
                                                  "text_1": f"A text about gardening number {i}. " * 12}),
                      jdump(["b2:bench"]), stamp, stamp))
        for s in range(2):
            points = [1, 1, 1, i % 2, 1, 0] if s == 0 else [1, 1, 0, i % 2, 1, 1]
            grades.append((stable_id(item_id, "fake", s), item_id, run_id, "fake", s, jdump(points), sum(points),
                           "ok", stamp))
        if i % 3 == 0:
            reviews.append((stable_id("review", item_id), item_id, run_id, "bench", "approve", "", "{}", stamp))
    with store.transaction():  # one transaction for the three tables
        for table, rows in (("items", items), ("grades", grades), ("reviews", reviews)):
            store.insert_rows(table, rows)
    store.close()
    return run_id


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


READ_COMMANDS = {"report": ["report", "{run}", "--json"], "export": ["export", "{run}", "--out", "{out}", "--overwrite"],
                 "items list --json": ["items", "list", "{run}", "--json"]}


def read_command(name: str, db: str, run_id: str, small: str, small_run: str, out: str,
                 against: str | None = None) -> dict:
    """One read command on the big store in a fresh process (after the same command on a 20-item store, so
    imports and first-use costs are not counted): CPU s and the process's peak RSS."""
    args = [a.format(run=run_id, out=out) for a in READ_COMMANDS[name]]
    warm = [a.format(run=small_run, out=out + ".warm") for a in READ_COMMANDS[name]]
    code = (
        "import contextlib, os, sys, time\n"
        + HWM +
        "from skillweave.cli import main\n"
        "def cli(*args):\n"
        "    with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink):\n"
        "        try:\n            main(list(args))\n"
        "        except SystemExit as exc:\n            assert not exc.code, exc.code\n"
        f"cli('--db', {small!r}, *{warm!r})\n"
        "t = time.process_time()\n"
        f"cli('--db', {db!r}, *{args!r})\n"
        "print('RESULT', time.process_time() - t, hwm())\n")
    env = dict(os.environ, PYTHONPATH=against) if against else None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if not line:
        raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    _, cpu, rss = line[0].split()
    return {"cpu": float(cpu), "rss_mib": int(rss) / 1024}


def reads(n: int, folder: str, against: str | None = None, repeat: int = 1) -> None:
    from skillweave.store import Store

    db = os.path.join(folder, "reads.db")
    t = time.perf_counter()
    run_id = fill(db, n)
    print(f"filled {n} items in {time.perf_counter() - t:.1f} s")
    small = os.path.join(folder, "warm.db")
    small_run = fill(small, 20)
    out = os.path.join(folder, "export.jsonl")
    trees = ([("against", against)] if against else []) + [("this code", None)]
    best: dict = {}
    for r in range(repeat):  # the trees alternate, so both see the same load
        for name in READ_COMMANDS:
            for label, path in trees:
                result = read_command(name, db, run_id, small, small_run, out, path)
                if name == "export":
                    with open(out, "rb") as f:
                        result["digest"] = hashlib.sha256(f.read()).hexdigest()[:16]
                print(f"{label:>9} {name:>18} (pass {r + 1}): {result['cpu']:6.2f} CPU s, "
                      f"{n / result['cpu']:8.0f} items per CPU second, peak RSS {result['rss_mib']:.0f} MiB"
                      + (f", output sha256 {result['digest']}" if "digest" in result else "")
                      + f"; load {os.getloadavg()[0]:.1f}", flush=True)
                kept = best.setdefault((label, name), result)
                if result["cpu"] < kept["cpu"]:
                    best[(label, name)] = {**result, "rss_mib": max(result["rss_mib"], kept["rss_mib"])}
    for name in READ_COMMANDS:
        line = [f"{name:>18}, best of {repeat}:"]
        for label, _ in trees:
            b = best[(label, name)]
            line.append(f"{label} {b['cpu']:.2f} CPU s ({n / b['cpu']:.0f} items per CPU s), {b['rss_mib']:.0f} MiB")
        if against:
            old, new = best[("against", name)], best[("this code", name)]
            line.append(f"ratio {old['cpu'] / new['cpu']:.2f}x less CPU, peak RSS {new['rss_mib'] / old['rss_mib']:.2f}x")
        print("; ".join(line))

    store = Store(db)

    def per_item_reads():  # what report and export did before set-based reads: three statements per item
        for item in store.items(run_id):
            store.grades(item["id"])
            list(store.db["reviews"].rows_where("item_id = ?", [item["id"]], order_by="created_at desc", limit=1))

    wall, cpu = timed(per_item_reads)
    print(f"per-item reads alone (the reads before set-based reads): {cpu:.2f} CPU s, {n / cpu:.0f} items per CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-sizes", default="100,1000,10000", help="Comma-separated run sizes (empty: skip).")
    parser.add_argument("--items", type=int, default=100_000, help="Store size for the reads part (0: skip).")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Passes over the run sizes (sizes and codes interleaved; median and min CPU reported) "
                             "and over the read commands (best CPU kept, highest RSS).")
    parser.add_argument("--against", default=None, metavar="PYTHONPATH",
                        help="Also run each size with this PYTHONPATH (a folder holding another checkout as "
                             "`skillweave`), right before this code's run, and print both.")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N",
                        help="Instead: one run of N items (and with --against), CPU, SQL and syscalls per item in "
                             "--windows stretches of the run, and SQL CPU by statement.")
    parser.add_argument("--plan", default="", metavar="SIZES",
                        help="Instead: Skill-Mix planning alone at these comma-separated sizes (and with --against): "
                             "bytes held and at peak per combination (tracemalloc, RSS) and CPU per combination.")
    parser.add_argument("--same-store", action="store_true",
                        help="Run sizes: the warm-up run writes into the store the measured run then uses, so the "
                             "measured run does not pay for creating the store file (its migrations).")
    parser.add_argument("--fixed", type=int, default=0, metavar="RUNS",
                        help="Instead: a run's fixed cost. RUNS one-item and 100-item runs into a new and into an "
                             "existing file per process (after a warm-up), CPU and SQL statements by phase; --repeat "
                             "processes per code (with --against, alternating).")
    parser.add_argument("--profile", action="store_true",
                        help="--fixed: also print cProfile's top functions of a one-item run into a new file.")
    parser.add_argument("--windows", type=int, default=10, help="--breakdown: stretches of the run (default 10).")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        if args.plan:
            plan_memory([int(x) for x in args.plan.split(",") if x], args.against)
            return
        if args.fixed:
            fixed_cost(args.fixed, args.repeat, args.against, args.profile)
            return
        if args.breakdown:
            for path in ([args.against] if args.against else []) + [None]:
                breakdown(args.breakdown, folder, args.windows, path)
            return
        sizes = [int(s) for s in args.run_sizes.split(",") if s]
        trees = ([("against", args.against)] if args.against else []) + [("this code", None)]
        passes: dict = {}
        for r in range(args.repeat if sizes else 0):  # sizes and codes interleaved, so all see the same load
            for n in sizes:
                for label, path in (trees if r % 2 == 0 else trees[::-1]):  # the first code alternates per pass
                    result = run_size(n, folder, path, args.same_store)
                    passes.setdefault((label, n), []).append(result)
                    print(f"{label:>9}: run {n:>7} items (pass {r + 1}): {result['cpu_ms_per_item']:.3f} CPU ms/item"
                          f" (threads' first half {result['first_ms']:.3f}, second half {result['second_ms']:.3f}); "
                          f"read/write syscalls per item {result['reads']:.1f}/{result['writes']:.1f}; peak RSS "
                          f"{result['peak_rss_mib']:.0f} MiB (until the threads ended {result['run_rss_mib']:.0f}); "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
        if sizes:
            summarise(sizes, trees, passes, args.repeat)
        if args.items:
            reads(args.items, folder, args.against, args.repeat)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
