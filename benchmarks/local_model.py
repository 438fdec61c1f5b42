"""The embedded model: load time and decode throughput, continuous batching against transformers' generate.

Prints, measured in one run on the same machine:
  - warm load (a fresh process, weights already prepared): the continuous-batching engine (plain torch +
    tokenizers) with float32 and with float16 weights against transformers' AutoModelForCausalLM/AutoTokenizer,
    imports included, and for the engine the first token of a one-token reply (float16 weights are packed in
    the background, so that is when the load's work is all done);
  - the time from "the `local` provider is built" to the first token of a one-token reply (a fresh process);
  - output tokens/s aggregate and CPU ms per output token with `concurrency` requests in flight through the
    `local` provider, for each variant in its own process: the engine with float32, float16 (fbgemm), int8
    (fbgemm) and bfloat16 weights (SKILLWEAVE_LOCAL_DTYPE), float16 with prefix sharing switched off ("engine fp16
    unshared"), int8 with the float32 output layer in decode steps ("engine int8 f32-head") or quantised at every
    load ("engine int8 uncached"), and SKILLWEAVE_LOCAL_ENGINE=transformers (static batches of up to 8 rows that wait for their
    longest row); the ratios between them. Variants that do not set SKILLWEAVE_LOCAL_LOOKUP run with the default
    (prompt lookup on, K = 4); "engine fp16 nolookup" switches it off, "engine fp16 lookup" sets K = 4 (the same
    as the default here, prompt lookup without a gate in checkouts before it). `--temperature T` samples every
    request at T. The default workload (`--workload skillmix`) is the Skill-Mix
    chain as the pipeline sends it: per item, student turn 0, student turn 1 (the conversation so far) and the
    judge, rendered from the packaged templates over distinct skill pairs and topics; `--workload short` is
    the earlier set (short prompts, 12 texts twice over);
  - how many of the greedy texts each variant shares with the engine in float32 (and float32 with transformers),
    and with --samples N the first N texts of each variant.

    python benchmarks/local_model.py --concurrency 8 --requests 24 --max-tokens 96
    python benchmarks/local_model.py --variants "engine f32,engine fp16,engine int8" --samples 4
    python benchmarks/local_model.py --load 3 --variants "engine fp16,engine int8,engine int8 uncached"
    python benchmarks/local_model.py --stages 2   # the float16 load stage by stage, in fresh processes
    python benchmarks/local_model.py --kernels   # where a decode step's time goes, per weight format
    python benchmarks/local_model.py --step-profile float16   # one decode step's ops under torch.profiler
    python benchmarks/local_model.py --attention   # a step's attention per KV cache type (float32, bfloat16)
    python benchmarks/local_model.py --kv-steps int8   # int8's decode step, float32 against bfloat16 KV cache
    python benchmarks/local_model.py --int8-kernels   # one layer's int8 matmuls at 8-700 rows, fbgemm vs _int_mm
    python benchmarks/local_model.py --variants "engine fp16,engine fp16 kv32" --against /tmp/old
    python benchmarks/local_model.py --load 3 --against /tmp/old   # warm load and first token, old against new
    python benchmarks/local_model.py --variants "engine fp16,engine fp16 unshared" --against /tmp/old
    python benchmarks/local_model.py --variants "engine fp16" --timeline   # where the run's wall and CPU go
    python benchmarks/local_model.py --forward-ab 300 --against /tmp/old   # decode step CPU, old forward vs new
    python benchmarks/local_model.py --layout-ab /tmp/fp16.json --against /tmp/old   # steps of two engines, lockstep
    python benchmarks/local_model.py --temperature 0.7 --variants "engine fp16 lookup,engine fp16 nolookup"
    python benchmarks/local_model.py --temperature 0.7 --seed 1 --variants "engine fp16 lookup sampled,engine fp16"
    python benchmarks/local_model.py --verify-costs   # one-token and verify steps' CPU, sampled rows
    python benchmarks/local_model.py --agreement 16   # float16 and int8 next-token agreement with float32
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import json
import os
import subprocess
import sys
import time

LOAD = {
    "engine": "from skillweave.providers.local_engine import load_engine; load_engine('local')",
    "transformers": "from skillweave.providers.local_model import load_causal_lm; load_causal_lm('local')",
}

TOPICS = ["gardening", "chess", "a rainy city", "the history of bread", "learning to swim", "volcanoes",
          "a job interview", "space travel", "friendship", "a lost umbrella", "jazz", "the ocean"]
LENGTHS = [24, 160, 48, 96, 32, 128, 64, 200]  # max new tokens per request (scaled by --max-tokens / 96): rows of
# different lengths, as in a pipeline where replies end at different points
# Each variant runs in its own process with these environment variables.
VARIANTS = {"engine f32": {"SKILLWEAVE_LOCAL_DTYPE": "float32"},
            "engine fp16": {"SKILLWEAVE_LOCAL_DTYPE": "float16"},
            "engine fp16 kv32": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_KV": "float32"},
            "engine fp16 kv16": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_KV": "bfloat16"},
            "engine int8 kv32": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "SKILLWEAVE_LOCAL_KV": "float32"},
            "engine int8 kv16": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "SKILLWEAVE_LOCAL_KV": "bfloat16"},
            "engine fp16 unshared": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "BENCH_NO_PREFIX_SHARING": "1"},
            "engine fp16 nolookup": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "0"},
            "engine fp16 lookup": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "4"},
            "engine fp16 lookup2": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "2"},
            "engine fp16 lookup8": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "8"},
            "engine f32 lookup": {"SKILLWEAVE_LOCAL_DTYPE": "float32", "SKILLWEAVE_LOCAL_LOOKUP": "4"},
            "engine fp16 lookup sampled": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "4",
                                           "BENCH_LOOKUP_SAMPLED": "1"},
            "engine fp16 lookup one-lane": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_LOOKUP": "4",
                                            "BENCH_NO_LANES": "1"},
            "engine fp16 alongside": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "BENCH_PREFILL_ALONGSIDE": "1"},
            "engine fp16 torch-attention": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "SKILLWEAVE_LOCAL_KERNEL": "torch"},
            "engine fp16 one-call": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "BENCH_NO_KERNEL_LANES": "1"},
            "engine fp16 kernel-prefill": {"SKILLWEAVE_LOCAL_DTYPE": "float16", "BENCH_PREFILL_KERNEL": "1"},
            "engine int8": {"SKILLWEAVE_LOCAL_DTYPE": "int8"},
            "engine int8 torch-attention": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "SKILLWEAVE_LOCAL_KERNEL": "torch"},
            "engine int8 lookup": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "SKILLWEAVE_LOCAL_LOOKUP": "4"},
            "engine int8 f32-head": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "BENCH_INT8_HEAD": "0"},
            "engine int8 uncached": {"SKILLWEAVE_LOCAL_DTYPE": "int8", "BENCH_INT8_UNCACHED": "1"},
            "engine bf16": {"SKILLWEAVE_LOCAL_DTYPE": "bfloat16"},
            "transformers": {"SKILLWEAVE_LOCAL_ENGINE": "transformers"}}
SKILLS = ["metaphor", "red herring", "modus ponens", "self-serving bias", "hyperbole", "statistical syllogism"]


FIRST_TOKEN = ("import time; t = time.perf_counter(); import asyncio; "
               "from skillweave.providers.core import ChatRequest, LocalProvider; "
               "import os; from skillweave.providers import local_engine; "
               "os.environ.get('BENCH_INT8_UNCACHED') and setattr(local_engine, 'read_int8_cache', lambda *a: None); "
               "provider = LocalProvider('local'); t1 = time.perf_counter(); "
               "asyncio.run(provider.chat(ChatRequest(messages=[{'role': 'user', 'content': 'Say hi.'}], "
               "max_tokens=1, temperature=0))); "
               "print(t1 - t, time.perf_counter() - t1, time.process_time())")


def warm_load(kind: str, env: dict, pythonpath: str | None = None) -> tuple[float, float | None, float]:
    """A fresh process: for the engine, seconds from the start until the `local` provider is built, then from
    there until the first token of a one-token greedy reply is out (imports, weights, float16 packing, the
    tokenizer and the prompt's prefill all included), and the process's CPU seconds by then; for transformers,
    seconds until its model and tokenizer are loaded."""
    if kind == "engine":
        code = FIRST_TOKEN
    else:
        code = (f"import time; t = time.perf_counter(); {LOAD[kind]}; "
                "print(time.perf_counter() - t, -1, time.process_time())")
    extra = {"PYTHONPATH": pythonpath} if pythonpath else {}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env, **extra})
    built, first, cpu = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    return built, (None if first < 0 else first), cpu


def load_only(repeats: int, against: str | None, kinds=("engine f32", "engine fp16", "engine int8")) -> None:
    """--load: provider built -> first token, float32, float16 and int8 (or `kinds`), interleaved; with --against,
    the same for another checkout (a folder that holds `skillweave`, put first on PYTHONPATH) in the same run."""
    trees = {"this": os.environ.get("PYTHONPATH")}
    if against:
        trees = {"against": against, **trees}
    results: dict[str, list] = {}
    for _ in range(repeats):
        for tree, path in trees.items():
            for kind in kinds:
                results.setdefault(f"{tree} {kind}", []).append(warm_load("engine", VARIANTS[kind], path))
    for name, rows in results.items():
        print(f"{name:>20}: provider built after " + ", ".join(f"{r[0]:.2f}" for r in rows)
              + " s; built -> first token " + ", ".join(f"{r[1]:.2f}" for r in rows)
              + f" s (median {_median([r[1] for r in rows]):.2f}); CPU to first token "
              + ", ".join(f"{r[2]:.2f}" for r in rows) + " s")
    if against:
        for kind in kinds:
            old, new = results[f"against {kind}"], results[f"this {kind}"]
            print(f"{kind}, against / this (medians): built -> first token "
                  f"{_median([r[1] for r in old]) / _median([r[1] for r in new]):.2f}x, "
                  f"CPU {_median([r[2] for r in old]) / _median([r[2] for r in new]):.2f}x")


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def short_workload(args) -> list[list]:
    """The earlier prompt set: one call per request, short prompts, 12 texts twice over (prefix sharing gains
    more here than in a pipeline)."""
    from skillweave.providers.core import ChatRequest

    return [[ChatRequest(messages=[{"role": "user", "content": (
        f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} that shows the skills "
        f"{SKILLS[i % len(SKILLS)]} and {SKILLS[(i + 1) % len(SKILLS)]}.")}],
        temperature=args.temperature, max_tokens=LENGTHS[i % len(LENGTHS)] * args.max_tokens // 96,
        options=_seeded(args, i))] for i in range(args.requests)]


def _seeded(args, call: int) -> dict:
    """--seed S: call number `call` of the workload samples with seed S + 1000 * call (its rows S + 1000 * call + i),
    so a sampled run's texts are the same in every variant that samples exactly."""
    return {} if args.seed is None else {"seed": args.seed + 1000 * call}


async def skillmix_chain(provider, values: dict, args) -> list:
    """One Skill-Mix item as the pipeline sends it (agents/skillmix.py): student turns 0 and 1 (turn 1 repeats
    the conversation), then the judge on the revised answer; greedy, so variants can be compared text by text."""
    from skillweave.agents.llm import build_messages
    from skillweave.metrics.skillmix import extract_answer
    from skillweave.prompts import load_template
    from skillweave.providers.core import ChatRequest

    student, judge = load_template("skillmix/student"), load_template("skillmix/judge")
    outputs, results = [], []
    values = dict(values)
    item = values.pop("item")  # --seed: the item's calls are numbered 3 item .. 3 item + 2
    for turn in range(2):
        request = ChatRequest(messages=build_messages(student, values, turn, list(outputs)),
                              temperature=args.temperature, max_tokens=args.max_tokens,
                              options=_seeded(args, 3 * item + turn))
        result, _ = await provider.chat(request)
        outputs.append(result.texts[0])
        results.append(result)
    values = {**values, "text": extract_answer(outputs[1])}
    values.pop("shorten")
    result, _ = await provider.chat(ChatRequest(messages=build_messages(judge, values, 0, []),
                                                temperature=args.temperature, max_tokens=120 + 20 * values["k"],
                                                options=_seeded(args, 3 * item + 2)))
    return results + [result]


def skillmix_items(args) -> list[dict]:
    """Template values for requests // 3 items: distinct skill pairs (k = 2) and topics from the bundled
    catalogs, drawn as `run skillmix` draws them. More items than `concurrency` keep the batch full, as in a
    run; the last chains still leave it partly empty at the end."""
    from skillweave.agents.skillmix import sample_skill_combinations
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.metrics.skillmix import sentence_limit_words

    draws = sample_skill_combinations(bundled_skills(), bundled_topics(), 2, max(1, args.requests // 3), seed=7)
    return [{"skills": [s.as_dict() for s in combo], "topic": topics[0], "k": 2,
             "sentence_limit": sentence_limit_words(2), "shorten": False, "item": i}
            for i, (combo, topics) in enumerate(draws)]


def throughput(args) -> dict:
    import asyncio

    from skillweave.providers import local_engine
    from skillweave.providers.core import ChatRequest, LocalProvider

    if os.environ.get("BENCH_NO_PREFIX_SHARING"):
        local_engine.PREFIX_MIN_TOKENS = 10 ** 9  # no prompt is ever long enough to share its keys/values
    if os.environ.get("BENCH_INT8_UNCACHED"):
        local_engine.read_int8_cache = lambda *a: None  # quantise at every load (the file is still written)
    if os.environ.get("BENCH_NO_LANES"):
        local_engine.LANES = False  # decode steps in one pass over all rows, torch's own threads
    if os.environ.get("BENCH_NO_KERNEL_LANES"):
        local_engine.KERNEL_ONE_TOKEN_LANES = False  # a one-token step's native attention in one call
    if os.environ.get("BENCH_PREFILL_KERNEL"):
        local_engine.PREFILL_KERNEL = True  # prefills attend with the native kernel
    if os.environ.get("BENCH_PREFILL_ALONGSIDE"):
        local_engine.PREFILL_ALONGSIDE = True  # with 2+ threads, prefills on a second thread beside decode steps
    if os.environ.get("BENCH_LOOKUP_SAMPLED"):
        local_engine.LOOKUP_SAMPLED = True  # sampled rows draft too (verified by speculative sampling)
    if os.environ.get("BENCH_INT8_HEAD") == "0":
        local_engine.INT8_HEAD = False  # decode steps use the float32 output layer
    provider = LocalProvider("local", max_concurrency=args.concurrency)
    engine, prefilled = None, [0]

    async def main():
        await provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=2))  # load
        prefilled[0] = engine.prefilled if engine else 0
        if timeline:
            timeline.start()
        wall, cpu = time.perf_counter(), time.process_time()
        if args.workload == "skillmix":  # as the runtime runs items: at most `concurrency` chains at a time
            slots = asyncio.Semaphore(args.concurrency)

            async def item(values):
                CHAIN.set(id(values))  # this task's context: --timeline matches a chain's calls
                async with slots:
                    return await skillmix_chain(provider, values, args)

            chains = await asyncio.gather(*(item(v) for v in skillmix_items(args)))
            results = [r for chain in chains for r in chain]
        else:
            results = [r for r, _ in await asyncio.gather(*(provider.chat(c[0]) for c in short_workload(args)))]
        if timeline:
            timeline.stop()
            for line in timeline.lines(wall, cpu):
                print(line)
        return results, time.perf_counter() - wall, time.process_time() - cpu

    seen, timeline = [], None
    if os.environ.get("SKILLWEAVE_LOCAL_ENGINE") != "transformers":
        engine = local_engine.load_engine("local", provider.batch_size)  # the engine the provider uses
        if args.timeline:
            timeline = Timeline(engine, local_engine)
        if args.dump:  # every request the engine admits, to write its prompt and output token ids below
            add = engine.add
            engine.add = lambda request: (seen.append(request), add(request))[1]
    results, wall, cpu = asyncio.run(main())
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump([{"prompt": r.prompt_ids, "output": r.outputs[0]} for r in seen[1:]], f)  # [0]: the load's
    tokens = sum(r.output_tokens for r in results)
    return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, "tokens_per_s": tokens / wall,
            "cpu_ms_per_token": 1000 * cpu / tokens, "texts": [r.texts[0] for r in results],
            "prompt_tokens": sum(r.input_tokens for r in results),
            "prefilled": engine.prefilled - prefilled[0] if engine else None,
            "steps": engine.steps if engine else None, "accepted": getattr(engine, "accepted", None),
            "drafted": getattr(engine, "drafted", None)}  # (None for a checkout without prompt lookup)


CHAIN = contextvars.ContextVar("chain", default=None)  # --timeline: which Skill-Mix chain a request belongs to


class Timeline:
    """--timeline: where the wall time and the CPU of one throughput run go, phase by phase.

    Wraps the engine's methods in this process (instance attributes, so any checkout's engine works): `run`
    (one call per scheduler turn: the engine thread is busy from its start to its end), `add` (a prefill),
    `step` (a decode step: rows, columns of the window, torch threads) and the scheduler's `submit` (when a
    request arrives). Outside `run` the engine is idle: nobody is in `run`, waiting for a request or for the
    event loop to call it again. Process CPU (all threads) is summed per phase; /proc/self/task/*/stat gives each
    thread's CPU over the run. `profile_steps` decode steps in the middle run under torch.profiler: the sum of
    the torch ops' self time on the engine thread against the steps' wall (Python between ops is the rest)."""

    def __init__(self, engine, local_engine, profile_steps: int = 20):
        self.engine, self.le = engine, local_engine
        self.t0 = None
        self.phases: dict[str, list[float]] = {}  # name -> [wall s, process CPU s, count]
        self.steps: list[tuple] = []  # (start, wall, rows, columns, threads)
        self.layout = [0] * 6  # (row, column) pairs attended: all, rows' own keys, gaps, padding, tight; steps
        self.prefills: list[tuple] = []  # (start, wall, tokens, threads)
        self.calls = 0
        self.profile_steps, self.profiled = profile_steps, None
        self.in_run = False
        self.idle_from = None
        self.arrivals: list[float] = []  # submit times
        self.admits: list[float] = []  # prefill start times
        self.finishes: list[tuple] = []  # (time, request): a request's last row done
        self.chain_of: dict[int, object] = {}  # id(request) -> the chain (CHAIN) that submitted it
        self.submitted: dict[object, list[float]] = {}  # chain -> its submit times
        cls = type(engine)  # wrapped on the class, for this engine only (a copy of it, `_side_engine`, is not timed)
        real_run, real_add, real_step = cls.run, cls.add, cls.step

        def add_phase(name, wall, cpu):
            entry = self.phases.setdefault(name, [0.0, 0.0, 0])
            entry[0] += wall
            entry[1] += cpu
            entry[2] += 1

        self.add_phase = add_phase

        def run(eng, admit, **kwargs):
            if self.t0 is None or eng is not engine:
                return real_run(eng, admit, **kwargs)
            start, cpu = time.perf_counter(), time.process_time()
            if self.idle_from is not None:
                add_phase("idle: between engine.run calls", start - self.idle_from[0], cpu - self.idle_from[1])
            self.inner = [0.0, 0.0]
            try:
                return real_run(eng, admit, **kwargs)
            finally:
                end, cpu_end = time.perf_counter(), time.process_time()
                add_phase("engine.run: scheduling, _finish_rows and the rest", end - start - self.inner[0],
                          cpu_end - cpu - self.inner[1])
                self.idle_from = (end, cpu_end)
                self.calls += 1

        def add(eng, request):
            if self.t0 is None:
                return real_add(eng, request)
            import torch

            start, cpu, cpu_process = time.perf_counter(), time.thread_time(), time.process_time()
            self.admits.append(start)
            result = real_add(eng, request)
            wall = time.perf_counter() - start
            if eng is not engine:  # PREFILL_ALONGSIDE: on the second thread, overlapping the decode steps
                add_phase("(overlapping the steps) prefill beside decode steps: wall, its thread's CPU", wall,
                          time.thread_time() - cpu)
                self.prefills.append((start, wall, len(request.prompt_ids), torch.get_num_threads()))
                return result
            used = time.process_time() - cpu_process
            add_phase("prefill (engine.add)", wall, used)
            self.inner[0] += wall
            self.inner[1] += used
            self.prefills.append((start, wall, len(request.prompt_ids), torch.get_num_threads()))
            return result

        def step(eng):
            if self.t0 is None or eng is not engine:
                return real_step(eng)
            real = functools.partial(real_step, eng)
            import torch

            rows, columns = len(engine.rows), engine.hi + 1 - getattr(engine, "lo", 0)  # lo: older checkouts
            self._layout(engine, rows, columns)
            before = len(engine.finished)
            profile = (self.profiled is None and len(self.steps) >= 150 and rows >= 6)
            start, cpu = time.perf_counter(), time.process_time()
            if profile:
                self.profiled = self._profile(real, rows, columns)
            else:
                real()
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            add_phase("decode steps (engine.step)", wall, used)
            self.inner[0] += wall
            self.inner[1] += used
            self.steps.append((start, wall, rows, columns, torch.get_num_threads()))
            done = time.perf_counter()
            self.finishes.extend((done, r) for r in engine.finished[before:])
            return None

        cls.run, cls.add, cls.step = run, add, step
        real_submit = local_engine.Scheduler.submit

        async def submit(scheduler, request):
            if self.t0 is not None:
                self.arrivals.append(time.perf_counter())
                chain = CHAIN.get()
                self.chain_of[id(request)] = chain
                self.submitted.setdefault(chain, []).append(self.arrivals[-1])
            return await real_submit(scheduler, request)

        local_engine.Scheduler.submit = submit

    def _layout(self, engine, rows, columns):
        """What a step attends, before it runs: its rows x window columns, split per row into the row's own keys
        (its position + the key this step writes), gaps (invalid columns inside the row's span: drafts a verify
        step did not keep, in a checkout whose rows share one write column) and padding (columns before the
        row's first key or after its last). `tight`: rows x (the longest row's keys), the least a step attending
        one window for all rows can read."""
        if not rows:
            return
        lo, hi = getattr(engine, "lo", 0), engine.hi  # every row's keys start at column 0 since the layout by position
        own = [r.position + 1 for r in engine.rows]
        valid = getattr(engine, "valid", None)
        if valid is not None:  # one shared write column: each row's span ends at hi
            first = valid[:rows, lo: hi].int().argmax(1).tolist()
            counts = valid[:rows, lo: hi].sum(1).tolist()
            gaps = sum(hi - lo - f - c for f, c in zip(first, counts, strict=True))
        else:
            gaps = 0
        attended = sum(own) + gaps if _uses_kernel(engine) else rows * columns  # the kernel: no padding
        entry = self.layout
        entry[0] += attended
        entry[1] += sum(own)
        entry[2] += gaps
        entry[3] += attended - sum(own) - gaps
        entry[4] += rows * max(own)
        entry[5] += 1

    def _profile(self, real_step, rows, columns):
        import torch

        steps = []
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            real_step()
            steps.append(time.perf_counter() - start)
        ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
        return {"rows": rows, "columns": columns, "wall": steps[0], "ops": ops}

    @staticmethod
    def threads() -> dict[str, tuple[str, float]]:
        hz = os.sysconf("SC_CLK_TCK")
        out = {}
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            name = text[text.index("(") + 1: text.rindex(")")]
            fields = text[text.rindex(")") + 2:].split()
            out[task] = (name, (int(fields[11]) + int(fields[12])) / hz)
        return out

    def start(self):
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.idle_from = (self.t0, self.cpu0)
        self.tasks0 = self.threads()

    def stop(self):
        self.t1, self.cpu1 = time.perf_counter(), time.process_time()
        if self.idle_from is not None:
            self.add_phase("idle: between engine.run calls", self.t1 - self.idle_from[0],
                           self.cpu1 - self.idle_from[1])
        self.tasks1 = self.threads()
        import threading

        self.names = {str(t.native_id): ("main (event loop)" if t is threading.main_thread() else t.name)
                      for t in threading.enumerate()}
        self.t0 = None

    def lines(self, t0, cpu0) -> list[str]:
        wall, cpu = self.t1 - t0, self.cpu1 - cpu0
        out = [f"timeline: {wall:.2f} s wall, {cpu:.2f} s process CPU ({cpu / wall:.2f} cores busy), "
               f"{self.calls} engine.run calls, {len(self.steps)} decode steps, {len(self.prefills)} prefills",
               "| phase | wall s | wall share | process CPU s | CPU share | cores busy during it | count |",
               "|---|---|---|---|---|---|---|"]
        for name, (w, c, n) in sorted(self.phases.items(), key=lambda kv: -kv[1][0]):
            out.append(f"| {name} | {w:.2f} | {100 * w / wall:.1f}% | {c:.2f} | {100 * c / cpu:.1f}% | "
                       f"{c / w if w else 0:.2f} | {n} |")
        if self.steps:
            sw = sum(s[1] for s in self.steps)
            rows = sum(s[1] * s[2] for s in self.steps) / sw
            cols = sum(s[1] * s[3] for s in self.steps) / sw
            threads = {}
            for s in self.steps:
                threads[s[4]] = threads.get(s[4], 0) + s[1]
            out.append(f"decode steps: {1000 * sw / len(self.steps):.1f} ms each on average, "
                       f"{sum(s[2] for s in self.steps) / len(self.steps):.2f} rows, "
                       f"{sum(s[3] for s in self.steps) / len(self.steps):.0f} columns (wall-weighted {rows:.2f} rows, "
                       f"{cols:.0f} columns); torch threads (share of step wall): "
                       + ", ".join(f"{k}: {100 * v / sw:.0f}%" for k, v in sorted(threads.items())))
            by_rows = {}
            for s in self.steps:
                entry = by_rows.setdefault(s[2], [0, 0.0])
                entry[0] += 1
                entry[1] += s[1]
            a, own, gaps, pad, tight, n = self.layout
            if a:
                out.append(f"attended (row, column) pairs per step: {a / n:.0f} = rows' own keys {own / n:.0f} "
                           f"({100 * own / a:.1f}%) + gaps {gaps / n:.0f} ({100 * gaps / a:.1f}%) + padding "
                           f"{pad / n:.0f} ({100 * pad / a:.1f}%); rows x longest row's keys {tight / n:.0f} "
                           + (f"({100 * (a - tight) / a:.1f}% less than attended)" if tight <= a else
                              f"({100 * (tight - a) / a:.1f}% more than attended: the native kernel reads each "
                              "row's own keys only)"))
            out.append("decode steps by rows: " + ", ".join(
                f"{r} rows {n} steps {1000 * w / n:.1f} ms" for r, (n, w) in sorted(by_rows.items())))
        if self.prefills:
            pw = sum(p[1] for p in self.prefills)
            out.append(f"prefills: {sum(p[2] for p in self.prefills)} prompt tokens (before prefix sharing), "
                       f"{1000 * pw / len(self.prefills):.1f} ms each on average, threads "
                       + ", ".join(sorted({str(p[3]) for p in self.prefills})))
        # rows in flight over time: the step's rows over the whole wall (no step running counts as 0 rows)
        if self.steps:
            busy = sum(s[1] * s[2] for s in self.steps) / wall
            out.append(f"rows in flight x wall, averaged over the whole run: {busy:.2f} (8 = always full)")
        if self.profiled:
            p = self.profiled
            out.append(f"one decode step under torch.profiler ({p['rows']} rows, {p['columns']} columns): "
                       f"{1000 * p['wall']:.1f} ms wall, torch ops' self time {1000 * p['ops']:.1f} ms on the engine "
                       f"thread: {100 * (1 - p['ops'] / p['wall']):.0f}% outside torch ops (profiler overhead included)")
        # gaps: a request finished -> the next request arrived (submit) -> admitted (prefill starts)
        if self.arrivals and self.admits:
            waits = []
            admits = sorted(self.admits)
            for a in sorted(self.arrivals):
                later = [x for x in admits if x >= a]
                if later:
                    waits.append(later[0] - a)
            out.append(f"submit -> prefill start: median {1000 * _median(waits):.1f} ms, mean "
                       f"{1000 * sum(waits) / len(waits):.1f} ms, max {1000 * max(waits):.1f} ms over {len(waits)}")
        gaps = []
        for f, request in self.finishes:
            chain = self.chain_of.get(id(request))
            later = [x for x in self.submitted.get(chain, []) if x >= f] if chain is not None else []
            if later:
                gaps.append(later[0] - f)
        if gaps:
            out.append(f"a request finished in a step -> its chain's next submit: median {1000 * _median(gaps):.1f} "
                       f"ms, mean {1000 * sum(gaps) / len(gaps):.1f} ms, max {1000 * max(gaps):.1f} ms over {len(gaps)} "
                       "(the result back on the event loop, the chain's next messages, chat template, tokenizer)")
        out.append("per-thread CPU over the run (/proc/self/task):")
        for task, (name, total) in sorted(self.tasks1.items(), key=lambda kv: -kv[1][1]):
            used = total - self.tasks0.get(task, (name, 0.0))[1]
            if used >= 0.05:
                name = self.names.get(task, "not a Python thread (OpenMP / torch)")
                out.append(f"  thread {task} {name}: {used:.2f} s CPU, {100 * used / wall:.0f}% of a core")
        return out


TIMELINE = """
import asyncio, time
t0 = time.perf_counter()
events = []

def note(name):
    events.append((time.perf_counter() - t0, time.process_time(), name))

from skillweave.providers import local_engine as le
from skillweave.providers.core import ChatRequest, LocalProvider

def wrap(owner, name, before, after):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        note(before)
        result = real(*args, **kwargs)
        note(after)
        return result

    setattr(owner, name, wrapper)

wrap(le.ChatTokenizer, "__init__", "tokenizer: start", "tokenizer: built")
wrap(le, "local_dtype_name", "weight type check (the first imports torch): start", "weight type check: done")
real_init, real_forward = le.LlamaLite.__init__, le.LlamaLite.forward

def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    note("LlamaLite returns")
    if self._pending is not None:
        for i, future in enumerate(self._pending[1]):
            future.add_done_callback(lambda _, i=i: note(f"layer {i} packed") if i % 10 == 9 else None)
        self._pending[0].add_done_callback(lambda _: note("output layer packed"))

def forward(self, ids, positions, kv_write, attend, first_token=False):
    import torch

    note(f"forward: start ({ids.shape[1]} tokens, {torch.get_num_threads()} threads)")

    def write(layer, k, v):
        if layer % 10 == 9:
            note(f"forward: layer {layer} done")
        kv_write(layer, k, v)

    return real_forward(self, ids, positions, write, attend, first_token)

le.LlamaLite.__init__, le.LlamaLite.forward = init, forward
wrap(le.Engine, "_allocate", "KV cache: allocate", "KV cache: allocated")
provider = LocalProvider("local")
note("provider built")
asyncio.run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "Say hi."}], max_tokens=1, temperature=0)))
note("first token")
import sys
note("transformers imported" if "transformers" in sys.modules else "transformers not imported")
built = next(t for t, _, name in events if name == "provider built")
for t, cpu, name in sorted(events):
    print(f"{t - built:6.3f} s after the provider was built, process CPU {cpu:5.2f} s: {name}")
"""


# --stages: is it worth building the tokenizer in a thread while torch is imported? Both orders, fresh processes.
OVERLAP = """
import sys, threading, time
t0 = time.perf_counter()
from skillweave.providers import local_engine
from skillweave.providers.local_model import resolve_model_path
path, done = resolve_model_path("local"), {}

def tokenizer():
    local_engine.ChatTokenizer(path)
    done["tokenizer"] = time.perf_counter() - t0

if sys.argv[1] == "thread":
    thread = threading.Thread(target=tokenizer)
    thread.start()
    import torch
    done["torch"] = time.perf_counter() - t0
    thread.join()
else:
    import torch
    done["torch"] = time.perf_counter() - t0
    tokenizer()
print(done["torch"], done["tokenizer"], time.perf_counter() - t0)
"""


def tokenizer_overlap(repeats: int) -> None:
    """Fresh processes, alternating: torch imported then the tokenizer built, against the tokenizer built in a
    thread while torch is imported; medians of when torch was imported and when both were done."""
    results: dict[str, list] = {"in order": [], "tokenizer in a thread": []}
    for _ in range(repeats):
        for name, mode in (("in order", "serial"), ("tokenizer in a thread", "thread")):
            out = subprocess.run([sys.executable, "-c", OVERLAP, mode], capture_output=True, text=True, check=True)
            results[name].append([float(x) for x in out.stdout.split()])
    for name, rows in results.items():
        print(f"import torch and build the tokenizer, {name:>21}: torch imported at "
              f"{_median([r[0] for r in rows]):.3f} s, both done at {_median([r[2] for r in rows]):.3f} s "
              f"(medians of {len(rows)}: " + ", ".join(f"{r[2]:.2f}" for r in rows) + ")")


def stages() -> None:
    """--stages, in a fresh child process: the default (float16) load's stages one after another on this thread,
    wall and CPU seconds each, then packing and prefill layer by layer. The real load overlaps some of them
    (`--load` times that); here they run in order, so each stage's own cost shows."""
    t0 = time.perf_counter()
    last = [t0, time.process_time()]

    def mark(name: str, note: str = "") -> None:
        now, cpu = time.perf_counter(), time.process_time()
        print(f"{name:>46}: {now - last[0]:6.3f} s wall, {cpu - last[1]:6.3f} s CPU (at {now - t0:5.2f} s){note}")
        last[:] = [now, cpu]

    import torch

    mark("import torch")
    from safetensors.torch import load_file

    from skillweave.providers import local_engine
    from skillweave.providers.local_model import resolve_model_path

    mark("import safetensors and skillweave's engine")
    path = resolve_model_path("local")
    tokenizer = local_engine.ChatTokenizer(path)
    mark("tokenizer and chat template")
    ids = tokenizer.encode(tokenizer.chat_prompt([{"role": "user", "content": "Say hi."}]))
    mark("render and encode the prompt", f"; {len(ids)} tokens")
    config = json.loads((path / "config.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    mark("read the weights (load_file)")
    threads = local_engine.adaptive_threads(force=True)
    done: dict = {}
    model = local_engine.LlamaLite(config, weights, dtype=getattr(torch, local_engine.local_dtype_name()))
    mark(f"LlamaLite ({local_engine.local_dtype_name()}) returns")
    pending = model._pending
    if pending is not None:
        for i, future in enumerate(pending[1]):
            future.add_done_callback(lambda _, i=i: done.setdefault(i, time.perf_counter() - t0))
        for future in pending[1]:
            future.result()
        mark(f"{model.layers} layers fused and packed", "; layer i packed at (s): " + ", ".join(
            f"{i}: {done[i]:.2f}" for i in range(0, model.layers, max(1, model.layers // 6))))
        model.wait_packed()
        mark("output layer packed")
    F = torch.nn.functional
    for run in ("first", "second"):
        keep, times = [], []

        def kv_write(layer, k, v, keep=keep, times=times):
            keep.append((k, v))
            times.append(time.perf_counter())

        with torch.no_grad():
            start = time.perf_counter()
            model.forward(torch.tensor([ids]), torch.arange(len(ids))[None], kv_write,
                          lambda layer, q, keep=keep: F.scaled_dot_product_attention(
                              q, *keep[layer], is_causal=True, enable_gqa=model.kv_heads != model.heads),
                          first_token=True)
        per_layer = [b - a for a, b in zip([start] + times[:-1], times, strict=True)]
        mark(f"{run} prefill, {threads} threads", f"; ms per layer: median {1000 * _median(per_layer):.1f}, "
             f"max {1000 * max(per_layer):.1f}")
    if pending is not None:  # one layer again on this thread: fusing and packing apart (CPU s)
        fuse = pack = 0.0
        for i in range(3):
            cpu = time.thread_time()
            blk = model._block(weights, i)
            fuse += time.thread_time() - cpu
            cpu = time.thread_time()
            for name in ("qkv", "o", "gate_up", "down"):
                torch.ops.quantized.linear_prepack_fp16(blk[name], blk[name + "_b"])
            pack += time.thread_time() - cpu
        print(f"one layer on one thread (mean of 3): fusing {1000 * fuse / 3:.1f} CPU ms, float16 packing "
              f"{1000 * pack / 3:.1f} CPU ms; x {model.layers} layers = {model.layers * (fuse + pack) / 3:.2f} CPU s")


def forward_ab(against: str, steps: int, rows: int = 8) -> None:
    """--forward-ab DIR: the engine's decode steps with this checkout's `LlamaLite.forward` (and its rotary) and
    with DIR's, alternating step by step in one process on one torch thread (8 rows of about 250-550 columns, the
    float16 weights): the engine thread's CPU ms per step, medians. Both see the same rows and windows, and the
    order alternates, so the load of other processes and the growing window fall on both alike."""
    import importlib.util

    import torch

    os.environ["SKILLWEAVE_TORCH_THREADS"] = "1"
    from skillweave.providers import local_engine as le

    spec = importlib.util.spec_from_file_location("against_engine",
                                                  os.path.join(against, "skillweave", "providers", "local_engine.py"))
    other = importlib.util.module_from_spec(spec)
    sys.modules["against_engine"] = other  # dataclasses look their module up
    spec.loader.exec_module(other)
    engine = le.load_engine("local")
    engine.model.wait_packed()
    torch.set_num_threads(1)
    tok = engine.tokenizer
    for i in range(rows):
        ids = tok.encode(tok.chat_prompt([{"role": "user", "content": (
            f"Essay {i} on {TOPICS[i % len(TOPICS)]}, with a {SKILLS[i % len(SKILLS)]}. ") * 12}]))
        engine.add(le.GenRequest(ids, max_tokens=10 ** 6))
    engine.eos_ids = set()
    names = ("forward", "_rope", "_rotate")
    versions = {"this": {n: getattr(le.LlamaLite, n) for n in names},
                "against": {n: getattr(other.LlamaLite, n) for n in names}}
    cpu: dict[str, list[float]] = {"this": [], "against": []}
    columns = engine.hi
    for i in range(2 * steps):
        name = ("this", "against")[(i // 2 + i) % 2]  # this, against, against, this, ...
        for n, f in versions[name].items():
            setattr(le.LlamaLite, n, f)
        start = time.thread_time()
        engine.step()
        cpu[name].append(1000 * (time.thread_time() - start))
    for n, f in versions["this"].items():
        setattr(le.LlamaLite, n, f)
    print(f"{rows} rows, {columns}-{engine.hi} columns, {steps} decode steps each, one thread:")
    for name, values in cpu.items():
        print(f"  {name}: engine thread CPU per step median {_median(values):.2f} ms, mean "
              f"{sum(values) / len(values):.2f} ms")
    print(f"against / this (medians): {_median(cpu['against']) / _median(cpu['this']):.3f}x the CPU per step")


def kernels(rows: int = 8, repeats: int = 5) -> None:
    """CPU ms, one thread: (1) the matmuls of one decode step (SmolLM2-135M's shapes, random weights) per weight
    format; (2) one decode step of the real model at `rows` rows per weight type, outside the matmuls included."""
    import torch

    from skillweave.providers import local_engine

    torch.set_num_threads(1)
    os.environ["SKILLWEAVE_TORCH_THREADS"] = "1"
    shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]  # 30 layers, output layer
    gen = torch.Generator().manual_seed(0)
    formats = {}
    bare = local_engine.LlamaLite(dict(model_type="llama", hidden_size=576, num_attention_heads=9, num_hidden_layers=0,
                                       vocab_size=8), {"model.embed_tokens.weight": torch.zeros(8, 576),
                                                       "model.norm.weight": torch.ones(576)})
    for name in ("float32", "bfloat16", "fbgemm float16", "fbgemm int8, one scale per batch",
                 "fbgemm int8, rows alone (int8)", "int8 weight-only", "int4 weight-only (groups of 32)"):
        mats = []
        for n, k in shapes:
            w = torch.randn(n, k, generator=gen) * 0.02
            if name == "bfloat16":
                mats.append((lambda x, w=w.bfloat16(): torch.nn.functional.linear(x.bfloat16(), w).float(), k))
            elif name == "fbgemm float16":
                packed = torch.ops.quantized.linear_prepack_fp16(w, None)
                mats.append((lambda x, p=packed: torch.ops.quantized.linear_dynamic_fp16(x, p), k))
            elif name == "fbgemm int8, one scale per batch":  # fbgemm's own dynamic quantisation of its input
                packed = bare._pack_int8(w, None).packed
                mats.append((lambda x, p=packed: torch.ops.quantized.linear_dynamic(x, p, False), k))
            elif name.startswith("fbgemm int8"):
                packed = bare._pack_int8(w, None)
                mats.append((lambda x, p=packed: bare._linear_int8(x, p), k))
            elif name == "int8 weight-only":
                q, scale = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen), torch.rand(n) * 1e-3
                mats.append((lambda x, q=q, s=scale: torch.ops.aten._weight_int8pack_mm(x, q, s), k))
            elif name.startswith("int4"):
                q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
                packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8)
                scales = torch.rand(k // 32, n, 2) * 1e-3
                mats.append((lambda x, p=packed, s=scales: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p, 32, s), k))
            else:
                mats.append((lambda x, w=w: torch.nn.functional.linear(x, w), k))
        formats[name] = mats
    inputs = {k: torch.randn(rows, k, generator=gen) for k in (576, 1536)}
    base = None
    for name, mats in formats.items():
        for f, k in mats:  # warm up
            f(inputs[k])
        cpu = time.process_time()
        for _ in range(repeats):
            for f, k in mats:
                f(inputs[k])
        ms = 1000 * (time.process_time() - cpu) / repeats
        base = base or ms
        print(f"matmuls of one decode step at {rows} rows, {name:>31}: {ms:7.1f} CPU ms ({ms / base:.2f}x float32)")
    prompt = "Write a short paragraph about gardening that shows metaphor and hyperbole."
    base = base_prefill = None
    long_prompt = " ".join([prompt] * 10)  # about 200 tokens, as a Skill-Mix prompt
    for dtype in ("float32", "float16", "bfloat16", "int8"):
        os.environ["SKILLWEAVE_LOCAL_DTYPE"] = dtype
        engine = local_engine.load_engine("local", rows)
        engine.model.wait_packed()
        tok = engine.tokenizer
        ids = tok.encode(tok.chat_prompt([{"role": "user", "content": prompt}]))
        eos, engine.eos_ids = engine.eos_ids, set()
        for _ in range(rows):
            engine.add(local_engine.GenRequest(ids, max_tokens=10 ** 6))
        for _ in range(3):
            engine.step()
        best = float("inf")
        for _ in range(6):
            cpu = time.process_time()
            for _ in range(5):
                engine.step()
            best = min(best, (time.process_time() - cpu) / 5)
        engine.reset()
        engine.eos_ids = eos
        long_ids = tok.encode(tok.chat_prompt([{"role": "user", "content": long_prompt}]))
        prefill = float("inf")
        for _ in range(3):
            engine.prefixes.clear()  # the whole prompt, every time
            cpu = time.process_time()
            engine.add(local_engine.GenRequest(long_ids, max_tokens=1))
            prefill = min(prefill, time.process_time() - cpu)
            engine.reset()
        base, base_prefill = base or best, base_prefill or prefill
        print(f"decode step, real model, {rows} rows, {dtype:>8}: {1000 * best:6.1f} CPU ms (best of 6), "
              f"{1000 * best / rows:.2f} per token ({base / best:.2f}x less than float32); prefill of "
              f"{len(long_ids)} tokens {1000 * prefill:.0f} CPU ms ({base_prefill / prefill:.2f}x less)")


def int8_kernels(sizes=(8, 41, 100, 300, 700), repeats: int = 7) -> None:
    """--int8-kernels: CPU ms (one thread, median of `repeats`) of one layer's four matmuls (SmolLM2-135M's shapes,
    random weights) at M rows: the engine's int8 path (`LlamaLite._linear_int8`: fbgemm's `linear_dynamic` with each
    row quantised on its own), fbgemm's own one scale per batch (not usable: a row would depend on its batch),
    torch's `_int_mm` (int8 x int8 -> int32, oneDNN) with each row quantised symmetrically to int8 by a few torch
    ops and scaled back (a candidate replacement, quantisation and scaling included), and fbgemm float16. M = 8 is a
    one-token step at 8 rows, 41 a verify step of 8 rows with 4 drafted tokens each, 100-700 prefills. Also checks
    that the `_int_mm` candidate gives each row the same bits alone as in the batch."""
    import torch

    from skillweave.providers import local_engine

    torch.set_num_threads(1)
    bare = local_engine.LlamaLite(dict(model_type="llama", hidden_size=576, num_attention_heads=9, num_hidden_layers=0,
                                       vocab_size=8), {"model.embed_tokens.weight": torch.zeros(8, 576),
                                                       "model.norm.weight": torch.ones(576)})
    gen = torch.Generator().manual_seed(0)
    layer = []
    for n, k in ((960, 576), (576, 576), (3072, 576), (576, 1536)):
        w = torch.randn(n, k, generator=gen) * 0.02
        ints = bare._pack_int8(w, None)
        scale = (w.abs().amax(1) / 127).clamp(min=1e-12)
        ints_t = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8).t()  # [k, n]
        layer.append((k, ints, torch.ops.quantized.linear_prepack_fp16(w, None), ints_t, scale))

    def int_mm(x, ints_t, scale):  # each row: x / (peak / 127) rounded to int8; int32 products; scaled back
        step = x.abs().amax(-1, keepdim=True).clamp_(min=1e-30).div_(127.0)
        q = torch.div(x, step).round_().to(torch.int8)
        return torch.mul(torch._int_mm(q, ints_t), scale).mul_(step)

    def timed(f):
        f()
        values = []
        for _ in range(repeats):
            cpu = time.thread_time()
            f()
            values.append(1000 * (time.thread_time() - cpu))
        return _median(values)

    for M in sizes:
        xs = {k: torch.randn(M, k, generator=gen) for k in (576, 1536)}
        ours = timed(lambda xs=xs: [bare._linear_int8(xs[k], p) for k, p, *_ in layer])
        batch = timed(lambda xs=xs: [torch.ops.quantized.linear_dynamic(xs[k], p.packed, False) for k, p, *_ in layer])
        mm = timed(lambda xs=xs: [int_mm(xs[k], t, s) for k, _, _, t, s in layer])
        half = timed(lambda xs=xs: [torch.ops.quantized.linear_dynamic_fp16(xs[k], h) for k, _, h, *_ in layer])
        k, _, _, t, s = layer[2]
        alone = torch.cat([int_mm(xs[k][i: i + 1], t, s) for i in range(M)])
        same = torch.equal(alone, int_mm(xs[k], t, s))
        print(f"one layer's matmuls at M = {M:>3}: engine int8 (fbgemm, rows alone) {ours:6.2f} CPU ms; fbgemm one "
              f"scale per batch {batch:6.2f}; _int_mm, rows alone {mm:6.2f} ({ours / mm:.2f}x less than the engine's; "
              f"a row alone equals the batch: {same}); fbgemm float16 {half:6.2f}")


def dump_requests(dump: str, engine_module) -> list:
    """The requests of a `--dump` FILE as `engine_module`'s GenRequests (any checkout's local_engine): each prompt,
    greedy, with as many new tokens as its recorded output."""
    with open(dump) as f:
        records = json.load(f)
    return [engine_module.GenRequest(list(r["prompt"]), max_tokens=max(1, len(r["output"]))) for r in records]


def layout_ab(dump: str, against: str, weights: str = "float16") -> None:
    """`--layout-ab FILE --against DIR`: this checkout's engine and DIR's, in one process on one torch thread, fed
    the requests of a `--dump` FILE (each prompt, greedy, as many new tokens as its recorded output; at most 8 rows,
    a finished row replaced by the next request) in lockstep: both engines share the model (`weights`), and each step
    of one is followed by the same step of the other (which goes first alternates), so the two see the same rows
    and the same load. Prints the engine thread's CPU per step and per output token of each, (row, column) pairs
    attended per step, and how many outputs are identical. Prefills are not timed (the same code in both)."""
    import importlib.util

    from skillweave.providers import local_engine as le

    path = os.path.join(against, "skillweave", "providers", "local_engine.py")
    spec = importlib.util.spec_from_file_location("against_local_engine", path)
    old_le = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_le)
    engine = timing_engine(weights)
    other = old_le.Engine(engine.model, engine.tokenizer, set(), max_rows=engine.max_rows, share_prefixes=False,
                          kv_dtype="float32")
    other.lookup = engine.lookup
    runs = {"this": (engine, le), "against": (other, old_le)}
    queues = {name: dump_requests(dump, mod) for name, (_, mod) in runs.items()}
    done = {name: list(q) for name, q in queues.items()}
    cpu, steps, pairs = {"this": 0.0, "against": 0.0}, {"this": 0, "against": 0}, {"this": 0, "against": 0}
    turn = 0
    while any(queues.values()) or any(e.rows for e, _ in runs.values()):
        order = ("this", "against") if turn % 2 == 0 else ("against", "this")
        turn += 1
        for name in order:
            eng, queue = runs[name][0], queues[name]
            while queue and eng.free_rows >= queue[0].n:
                eng.add(queue.pop(0))
            eng.finished = []
            if not eng.rows:
                continue
            pairs[name] += (sum(r.position + 1 for r in eng.rows) if _uses_kernel(eng)  # each row's own columns
                            else len(eng.rows) * (eng.hi + 1 - getattr(eng, "lo", 0)))
            start = time.thread_time()
            eng.step()
            cpu[name] += time.thread_time() - start
            steps[name] += 1
    tokens = sum(len(r.outputs[0]) for r in done["this"])
    same = sum(a.outputs == b.outputs for a, b in zip(done["this"], done["against"], strict=True))
    for name in ("against", "this"):
        print(f"{name:>8}: {steps[name]} steps, {1000 * cpu[name] / steps[name]:.1f} CPU ms per step, "
              f"{1000 * cpu[name] / tokens:.2f} CPU ms per output token, {pairs[name] / steps[name]:.0f} (row, column) "
              f"pairs attended per step")
    print(f"this / against: {cpu['against'] / cpu['this']:.2f}x less CPU in steps, "
          f"{pairs['against'] / pairs['this']:.2f}x fewer (row, column) pairs attended; {tokens} output tokens; "
          f"identical outputs {same}/{len(done['this'])}")


def replay_profile(dump: str, weights: str = "float16") -> None:
    """`--replay-profile FILE`: the requests of a `--dump` FILE (each prompt, greedy, as many new tokens as its
    recorded output; at most 8 rows, a finished row replaced by the next request) through this checkout's engine on
    one torch thread, with the engine thread's CPU split by function: decode/verify steps against prefills, and
    within each the attention (the native kernel, the grouped matmuls of `Engine._attention`, torch's SDPA), the
    matmuls (`LlamaLite._linear`), the norms and the rotary embedding. Set SKILLWEAVE_LOCAL_KERNEL=torch for the
    steps without the native kernel, BENCH_PREFILL_KERNEL=1 for prefills with it (PREFILL_KERNEL)."""
    import collections

    import torch

    from skillweave.providers import local_engine as le
    from skillweave.providers import native

    if os.environ.get("BENCH_PREFILL_KERNEL"):
        le.PREFILL_KERNEL = True  # prefills attend with the native kernel
    engine = timing_engine(weights)
    spent: collections.Counter = collections.Counter()

    def timed(name, f):
        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - start
        return wrapper

    real = {"sdpa": (torch.nn.functional, "scaled_dot_product_attention"), "grouped": (le.Engine, "_attention"),
            "native": (native.Kernel, "attention"), "linear": (le.LlamaLite, "_linear"),
            "norm": (le.LlamaLite, "_rms"), "rotary": (le.LlamaLite, "_rotate")}
    saved = {name: getattr(owner, attr) for name, (owner, attr) in real.items()}
    for name, (owner, attr) in real.items():
        setattr(owner, attr, timed(name, saved[name]))
    try:
        queue = dump_requests(dump, le)
        phases: dict[str, collections.Counter] = {"prefill": collections.Counter(), "step": collections.Counter()}
        cpu = collections.Counter()
        while queue or engine.rows:
            while queue and engine.free_rows >= 1:
                before, start = spent.copy(), time.thread_time()
                engine.add(queue.pop(0))
                cpu["prefill"] += time.thread_time() - start
                phases["prefill"].update(spent - before)
            before, start = spent.copy(), time.thread_time()
            engine.step()
            cpu["step"] += time.thread_time() - start
            phases["step"].update(spent - before)
    finally:
        for name, (owner, attr) in real.items():
            setattr(owner, attr, saved[name])
    kernel = "native kernel" if _uses_kernel(engine) else "torch's attention"
    print(f"{weights}, one thread, {kernel}: {engine.steps} decode/verify steps, {cpu['step']:.2f} CPU s "
          f"({1000 * cpu['step'] / engine.steps:.1f} ms per step); prefills {cpu['prefill']:.2f} CPU s")
    for phase, parts in phases.items():
        attention = parts["native"] + parts["grouped"] + parts["sdpa"]
        print(f"  {phase}: attention {attention:.2f} s ({100 * attention / max(cpu[phase], 1e-9):.0f}%; native "
              f"{parts['native']:.2f}, grouped matmuls {parts['grouped']:.2f}, SDPA {parts['sdpa']:.2f}), matmuls "
              f"{parts['linear']:.2f}, norms {parts['norm']:.2f}, rotary {parts['rotary']:.2f}, the rest "
              f"{cpu[phase] - attention - parts['linear'] - parts['norm'] - parts['rotary']:.2f}")


def _uses_kernel(engine) -> bool:
    """Whether `engine` (any checkout's) attends with the native kernel (providers/native.py)."""
    return getattr(engine, "native", False) and engine._native() is not None


def native_bench(rows: int = 8, repeats: int = 5) -> None:
    """--native: the native attention kernel (providers/native.py). Its first use in a fresh cache folder (the
    compiler's version, the build, the load) three times, and a later process's load of the cached build; then
    CPU ms, one thread, of one step's attention over SmolLM2-135M's 30 layers (9 query heads, 3 key/value heads,
    head dim 64) at `rows` rows of 200-600 columns in a wider float32 cache: a one-token step (the kernel against
    torch's SDPA with a length mask, as the engine ran it) and verify steps (against the grouped matmuls over every
    row padded to the longest draft, as the engine ran them), with every row feeding 5 positions and with half the
    rows feeding 1; then a one-token step on two threads, one kernel call against two halves (the second on a
    pool thread), wall ms per step."""
    import tempfile
    import types
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import torch

    from skillweave.providers import local_engine, native

    for _ in range(3):
        with tempfile.TemporaryDirectory() as folder:
            native.forget()
            start = time.perf_counter()
            kernel = native.attention_kernel(Path(folder))
            built = time.perf_counter() - start
            native.forget()
            start = time.perf_counter()
            native.attention_kernel(Path(folder))
            cached = time.perf_counter() - start
            if kernel is None:
                print("no kernel: no C compiler, a failed build, or SKILLWEAVE_LOCAL_KERNEL=torch")
                return
            print(f"first use in a fresh cache folder (compiler version, build, load): {1000 * built:.0f} ms; "
                  f"the cached build loaded by a later process: {1000 * cached:.1f} ms")
    native.forget()
    kernel = native.attention_kernel()
    H, KV, D, layers, grouped, sdpa, gen = attention_setup()
    ends = torch.randint(200, 600, (rows,), generator=gen)
    ends[0] = 600
    caches = [(torch.randn(rows, KV, 1100, D, generator=gen), torch.randn(rows, KV, 1100, D, generator=gen))
              for _ in range(layers)]

    def timed(f, clock=time.thread_time):  # ms per step (all layers), best of `repeats`, after one warm-up step
        for layer in range(layers):
            f(layer)
        best = float("inf")
        for _ in range(repeats):
            start = clock()
            for layer in range(layers):
                f(layer)
            best = min(best, clock() - start)
        return 1000 * best

    def compare(name, counts):
        counts = torch.tensor(counts)
        T, positions = int(counts.max()), ends - counts
        spans = torch.stack([counts.cumsum(0) - counts, counts, positions], 1)
        n = int(counts.sum())
        flat = torch.randn(n, H + KV, D, generator=gen)[:, :H]
        width = int(ends.max())
        mask = local_engine.Engine._length_mask(grouped.__self__, positions + 1, T, width)
        padded = torch.zeros(rows, H, T, D)
        owner = torch.repeat_interleave(torch.arange(rows), counts)
        offset = torch.cat([torch.arange(c) for c in counts.tolist()])
        padded[owner, :, offset] = flat
        out = torch.empty(n, H, D)

        def ours(layer):
            kernel.attention(spans, flat, caches[layer][0], caches[layer][1], out, D ** -0.5)

        def theirs(layer):
            k, v = caches[layer][0][:, :, :width], caches[layer][1][:, :, :width]
            if T == 1:
                return sdpa(padded, k, v, attn_mask=mask, enable_gqa=True)
            return grouped(padded, k, v, mask)

        def read(layer):  # the rows' own keys and values, summed: what reading them costs
            k, v = caches[layer]
            return sum(float(k[b, :, :e].sum() + v[b, :, :e].sum()) for b, e in enumerate(ends.tolist()))

        ours(0)
        error = float((out - theirs(0)[owner, :, offset]).abs().max())
        a, b, r = timed(ours), timed(theirs), timed(read)
        pairs = sum(c * (p + (c + 1) / 2) for c, p in zip(counts.tolist(), positions.tolist(), strict=True))
        flops = 4 * D * H * layers * pairs  # scores and weighted values: a multiply-add each per (query, column)
        print(f"{name}, {rows} rows of 200-600 columns ({int(ends.sum())} in all), {layers} layers: "
              f"{'SDPA' if T == 1 else 'grouped matmuls, rows padded'} {b:.1f} CPU ms, kernel {a:.1f} "
              f"({b / a:.2f}x less; {flops / a / 1e6:.1f} GFLOP/s); reading the rows' keys and values {r:.1f}; "
              f"max difference {error:.1e}")

    for name, counts in (("one-token step", [1] * rows), ("verify step, every row 5 positions", [5] * rows),
                         ("verify step, half the rows 5 positions", [5, 1] * (rows // 2))):
        compare(name, counts)
    spans = torch.stack([torch.arange(rows), torch.ones(rows, dtype=torch.long), ends - 1], 1)
    flat = torch.randn(rows, H + KV, D, generator=gen)[:, :H]
    out = torch.empty(rows, H, D)
    split = local_engine.Engine._lane_split(types.SimpleNamespace(torch=types.SimpleNamespace(
        get_num_threads=lambda: 2)), ends.tolist())
    high = torch.stack([torch.arange(rows - split), torch.ones(rows - split, dtype=torch.long), ends[split:] - 1], 1)
    pool = ThreadPoolExecutor(1)

    def one(layer):
        kernel.attention(spans, flat, caches[layer][0], caches[layer][1], out, D ** -0.5)

    def halves(layer):
        k, v = caches[layer]
        job = pool.submit(kernel.attention, high, flat[split:], k[split:], v[split:], out[split:], D ** -0.5)
        kernel.attention(spans[:split], flat[:split], k[:split], v[:split], out[:split], D ** -0.5)
        job.result()

    walls = {}
    for f in (one, halves, one, halves):
        best = timed(f, time.perf_counter)
        walls[f.__name__] = min(walls.get(f.__name__, best), best)
    print(f"one-token step on two threads, wall ms per step: one call {walls['one']:.1f}, two halves "
          f"(rows 0-{split - 1} here, {split}-{rows - 1} on a pool thread) {walls['halves']:.1f} "
          f"({walls['one'] / walls['halves']:.2f}x faster)")
    pool.shutdown()


def attention_setup():
    """What --attention and --native share: one torch thread; SmolLM2-135M's attention shapes (9 query heads, 3
    key/value heads, head dim 64, 30 layers); the engine's grouped matmuls (`Engine._attention`) bound to a stub;
    torch's SDPA; a seeded generator."""
    import types

    import torch

    from skillweave.providers import local_engine

    torch.set_num_threads(1)
    H, KV, D, layers = 9, 3, 64, 30
    stub = types.SimpleNamespace(torch=torch, model=types.SimpleNamespace(kv_heads=KV))
    return (H, KV, D, layers, local_engine.Engine._attention.__get__(stub),
            torch.nn.functional.scaled_dot_product_attention, torch.Generator().manual_seed(0))


def attention(rows: int = 8, repeats: int = 5) -> None:
    """--attention: CPU ms, one thread, of the attention of SmolLM2-135M's 30 layers (9 query heads, 3 key/value
    heads, head dim 64) over random keys/values, each window a slice of a wider cache as in the engine: a one-token
    decode step at `rows` rows and several window widths (torch's float32 attention over a float32 cache, as before;
    the engine's grouped matmuls over a float32 and a bfloat16 cache), a verify step of 5 positions per row; the
    bfloat16 step with a width that changes at every call against widths in steps of 64 columns (`Engine._window`);
    and a prefill of one prompt over a bfloat16 cache (float32 attention over the upcast keys, as the engine does,
    against grouped bfloat16 matmuls with a causal mask)."""
    import torch


    H, KV, D, layers, grouped, sdpa, gen = attention_setup()

    def timed(f, *args, **kwargs):
        f(*args, **kwargs)
        best = float("inf")
        for _ in range(repeats):
            cpu = time.process_time()
            for _ in range(layers):
                f(*args, **kwargs)
            best = min(best, time.process_time() - cpu)
        return 1000 * best

    for T, columns in ((1, 200), (1, 400), (1, 600), (1, 1000), (5, 600)):
        q = torch.randn(rows, H, T, D, generator=gen)
        k, v = (torch.randn(rows, KV, columns + 300, D, generator=gen)[:, :, 100: 100 + columns],
                torch.randn(rows, KV, columns + 300, D, generator=gen)[:, :, 100: 100 + columns])
        mask = torch.zeros(rows, 1, T, columns)
        mask[:, :, :, : columns // 3] = float("-inf")  # left padding
        kb = torch.zeros(rows, KV, columns + 300, D, dtype=torch.bfloat16)[:, :, 100: 100 + columns].copy_(k)
        vb = torch.zeros(rows, KV, columns + 300, D, dtype=torch.bfloat16)[:, :, 100: 100 + columns].copy_(v)
        old = timed(sdpa, q, k, v, attn_mask=mask, enable_gqa=True)
        f32 = timed(grouped, q, k, v, mask)
        b16 = timed(grouped, q, kb, vb, mask)
        exact = sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
        error = float((grouped(q, kb, vb, mask) - exact).abs().max() / exact.abs().max())
        print(f"{'decode' if T == 1 else 'verify'} step attention, {rows} rows x {T} positions, {columns} columns, "
              f"{layers} layers: torch float32 {old:.1f} CPU ms; grouped float32 {f32:.1f} ({old / f32:.2f}x less); "
              f"grouped bfloat16 cache {b16:.1f} ({old / b16:.2f}x less); bfloat16 max error {error:.1e} relative")
    q = torch.randn(rows, H, 1, D, generator=gen)
    kb, vb = (torch.randn(rows, KV, 1200, D, generator=gen).bfloat16(),
              torch.randn(rows, KV, 1200, D, generator=gen).bfloat16())
    timings = {}
    for widen in (1, 64):
        cpu = time.process_time()
        for i in range(200):  # one call per step: the first layer of a step meets a new width
            width = -(-(500 + i) // widen) * widen
            grouped(q, kb[:, :, 1100 - width: 1100], vb[:, :, 1100 - width: 1100], torch.zeros(rows, 1, 1, width))
        timings[widen] = 1000 * (time.process_time() - cpu) / 200
    print(f"bfloat16 decode attention, one layer, the window growing by a column a call from 500: widths as they "
          f"come {timings[1]:.2f} CPU ms a call, in steps of 64 columns {timings[64]:.2f} "
          f"({timings[1] / timings[64]:.2f}x less)")
    for T in (100, 300):
        q = torch.randn(1, H, T, D, generator=gen)
        kb, vb = torch.randn(1, KV, T, D, generator=gen).bfloat16(), torch.randn(1, KV, T, D, generator=gen).bfloat16()
        causal = torch.zeros(T, T).masked_fill_(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))[None, None]
        up = timed(lambda q, k, v: sdpa(q, k.float(), v.float(), is_causal=True, enable_gqa=True), q, kb, vb)
        b16 = timed(grouped, q, kb, vb, causal)
        print(f"prefill attention, {T} tokens, {layers} layers, bfloat16 cache: torch float32 over the upcast "
              f"keys {up:.1f} CPU ms; grouped bfloat16 {b16:.1f} ({up / b16:.2f}x less)")
    real_steps(rows)


def agreement(items: int, max_tokens: int = 96) -> None:
    """How closely float16 and int8 weights follow float32 (the dequantised weights exactly): float32 writes greedy
    replies to the first student turn of `items` Skill-Mix items; each weight type then reads prompt + reply in one
    pass, and at every reply position its top token is compared with float32's, with KL(p_float32 || p) of the two
    next-token distributions. Teacher-forced, so one early difference does not change every later position."""
    import types

    import torch

    from skillweave.agents.llm import build_messages
    from skillweave.prompts import load_template
    from skillweave.providers import local_engine

    def engine(weights):
        os.environ["SKILLWEAVE_LOCAL_DTYPE"] = weights
        local_engine._load_engine.cache_clear()
        return local_engine.load_engine("local")

    def logits(eng, ids):  # every position's logits over ids, in the weights' type (as decode steps compute them)
        m, keys, values = eng.model, [], []

        def kv_write(layer, k, v):
            keys.append(k)
            values.append(v)

        def attend(layer, q):
            return torch.nn.functional.scaled_dot_product_attention(
                q, keys[layer], values[layer], is_causal=True, enable_gqa=m.kv_heads != m.heads)

        with torch.no_grad():
            return m.forward(torch.tensor([ids]), torch.arange(len(ids))[None], kv_write, attend,
                             every_position=True)[0].float()

    student = load_template("skillmix/student")
    reference = engine("float32")
    prompts = []
    for values in skillmix_items(types.SimpleNamespace(requests=3 * items))[:items]:
        values = {k: v for k, v in values.items() if k != "item"}
        text = reference.tokenizer.chat_prompt(build_messages(student, values, 0, []))
        prompts.append(reference.tokenizer.encode(text))
    requests = [local_engine.GenRequest(prompt_ids=ids, max_tokens=max_tokens) for ids in prompts]
    reference.generate(requests)
    pairs = [(ids, r.outputs[0]) for ids, r in zip(prompts, requests, strict=True)]
    expected = [logits(reference, ids + out)[len(ids) - 1: len(ids) + len(out) - 1] for ids, out in pairs]
    total = sum(len(out) for _, out in pairs)
    print(f"float32 greedy replies to {len(pairs)} Skill-Mix student prompts: {total} reply positions")
    for weights in ("float16", "int8"):
        eng, same, kl = engine(weights), 0, 0.0
        for (ids, out), want in zip(pairs, expected, strict=True):
            got = logits(eng, ids + out)[len(ids) - 1: len(ids) + len(out) - 1]
            same += int((got.argmax(-1) == want.argmax(-1)).sum())
            kl += float(torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True,
                                                   reduction="sum"))
        print(f"{weights:>8}: top token equal to float32's at {same}/{total} positions ({same / total:.2%}); "
              f"mean KL(p_float32 || p) {kl / total:.2e} nats")


def timing_engine(weights: str, rows: int = 8, kv: str | None = None, drafts: bool = True):
    """A fresh embedded-model engine with `weights` (and KV cache `kv`) for timing steps in this process: one torch
    thread, weights packed, no stop tokens (rows run as long as asked), no shared prefixes, and with `drafts` False
    prompt lookup off (every step a one-token step)."""
    import torch

    from skillweave.providers import local_engine

    os.environ.update(SKILLWEAVE_TORCH_THREADS="1", SKILLWEAVE_LOCAL_DTYPE=weights)
    if kv:
        os.environ["SKILLWEAVE_LOCAL_KV"] = kv
    local_engine._load_engine.cache_clear()
    engine = local_engine.load_engine("local", rows)
    engine.model.wait_packed()
    torch.set_num_threads(1)
    engine.eos_ids, engine.share_prefixes = set(), False
    if not drafts:
        engine.lookup = 0
    return engine


def real_steps(rows: int, rounds: int = 3, weights: str = "float16", no_drafts: bool = False) -> None:
    """The embedded model's one-token decode step (float16 weights, or `weights`; one thread) at `rows` rows whose
    prompts fill windows of about 150, 450 and 900 columns, float32 against bfloat16 cache, interleaved `rounds`
    times; the best of 5 runs of 4 steps each time (a shared machine's noise mostly slows a run down). `no_drafts`
    (--kv-steps): prompt lookup off, so that every step is a one-token step (the repeated prompts would draft)."""
    from skillweave.providers import local_engine

    engines = {kv: timing_engine(weights, rows, kv, drafts=not no_drafts) for kv in ("float32", "bfloat16")}
    best: dict = {}
    for _ in range(rounds):
        for repeat in (6, 20, 40):
            for kv, engine in engines.items():
                tok = engine.tokenizer
                for i in range(rows):
                    text = " ".join([f"Write a short paragraph about gardening, number {i}, with a metaphor."] * repeat)
                    engine.add(local_engine.GenRequest(tok.encode(tok.chat_prompt([{"role": "user", "content": text}])),
                                                       max_tokens=10 ** 6))
                for _ in range(2):
                    engine.step()
                width = engine.hi
                for _ in range(5):
                    cpu = time.process_time()
                    for _ in range(4):
                        engine.step()
                    ms = 1000 * (time.process_time() - cpu) / 4
                    key = (repeat, kv)
                    best[key] = (min(best.get(key, (ms, width))[0], ms), width)
                engine.reset()
    for repeat in (6, 20, 40):
        old, new = best[repeat, "float32"], best[repeat, "bfloat16"]
        print(f"decode step, real model ({weights} weights), {rows} rows, about {old[1]} columns: float32 cache "
              f"{old[0]:.1f} CPU ms, bfloat16 cache {new[0]:.1f} ({old[0] / new[0]:.2f}x less; best of {5 * rounds})")


def step_profile(weights: str, rows: int = 8, columns: int = 600, steps: int = 5) -> None:
    """`--step-profile WEIGHTS`: the embedded model's one-token decode step (prompt lookup off, one thread) at `rows`
    rows whose windows reach about `columns` columns (rows of different lengths, the longest first): CPU ms per step
    (10 steps), then torch.profiler's ops by self CPU time over `steps` more."""
    import torch

    from skillweave.providers import local_engine

    engine = timing_engine(weights, rows, drafts=False)
    tok = engine.tokenizer
    text = tok.encode("Write about gardening and the many ways plants grow. " * (columns // 8))
    for i in range(rows):
        engine.add(local_engine.GenRequest(text[: columns - 30 * i] + tok.encode(f" item {i}"), max_tokens=10 ** 6))
    for _ in range(3):
        engine.step()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(10):
        engine.step()
    print(f"{weights}, one thread, {len(engine.rows)} rows, window {engine.hi} columns: "
          f"{100 * (time.process_time() - cpu):.1f} CPU ms, {100 * (time.perf_counter() - wall):.1f} ms wall per step")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    print(f"torch.profiler over {steps} steps, ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def verify_costs(temperature: float, rows: int = 8, rounds: int = 12) -> None:
    """`--verify-costs`: CPU ms of the embedded model's decode steps (float16 weights, one thread, `rows` rows sampled
    at `temperature`, windows of about 300 and 850 columns), by kind of step, interleaved `rounds` times (medians):
    a one-token step and verify steps with drafts of 4 on every row, 4 on two rows, 2 on one row and 2 on four rows.
    From them: a drafted position's cost, and an unused query position's (a row that feeds fewer positions than the
    longest draft); then the sampling's share (`Engine._choose`, one call per sampled position) and what one batched
    softmax/cumsum/searchsorted over all of a step's rows would cost instead."""
    import statistics

    import torch

    from skillweave.providers import local_engine

    local_engine.LOOKUP_SAMPLED = False  # `_draft` is replaced below; no step-level gate for sampled drafts either
    engine = timing_engine("float16", rows)
    real_choose, sampling = engine._choose, [0.0]

    def choose(*args):
        cpu = time.process_time()
        try:
            return real_choose(*args)
        finally:
            sampling[0] += time.process_time() - cpu

    engine._choose = choose
    kinds = {"one-token step": None, "8 rows draft 4": [4] * rows, "2 rows draft 4": [4, 4] + [0] * (rows - 2),
             "1 row drafts 2": [2] + [0] * (rows - 1), "4 rows draft 2": [2] * 4 + [0] * (rows - 4)}
    noise = torch.Generator().manual_seed(0)
    vocab = engine.model.embed.shape[0]
    for repeat in (16, 60):
        tok = engine.tokenizer
        for i in range(rows):
            text = " ".join([f"Write a short paragraph about gardening, number {i}, with a metaphor."] * repeat)
            engine.add(local_engine.GenRequest(tok.encode(tok.chat_prompt([{"role": "user", "content": text}])),
                                               max_tokens=10 ** 6, temperature=temperature, seed=i))
        times = {k: [] for k in kinds}
        shares = {k: [] for k in kinds}
        for _ in range(rounds):
            for kind, lengths in kinds.items():
                engine.lookup = 4 if lengths else 0
                if lengths:  # the row's own n-gram guess, filled up with random tokens (the cost does not depend on
                    # how many are kept)
                    it = iter(lengths)
                    engine._draft = lambda row, it=it: (lambda n: (engine._guess(row, n) + torch.randint(
                        0, vocab, (n,), generator=noise).tolist())[:n] if n else [])(next(it))
                sampling[0] = 0.0
                cpu = time.process_time()
                engine.step()
                times[kind].append(1000 * (time.process_time() - cpu))
                shares[kind].append(1000 * sampling[0])
        columns = engine.hi
        med = {k: statistics.median(v) for k, v in times.items()}
        one = med["one-token step"]
        print(f"{rows} rows at temperature {temperature}, window about {columns} columns (medians of {rounds}):")
        for kind in kinds:
            print(f"  {kind}: {med[kind]:.1f} CPU ms ({med[kind] / one:.2f}x a one-token step), of which sampling "
                  f"{statistics.median(shares[kind]):.2f} ms")
        position = (med["8 rows draft 4"] - one) / (4 * rows)  # no unused position in that step
        unused = statistics.median([(med["2 rows draft 4"] - one - 8 * position) / (4 * rows - 8),
                                    (med["1 row drafts 2"] - one - 2 * position) / (2 * rows - 2),
                                    (med["4 rows draft 2"] - one - 8 * position) / (2 * rows - 8)])
        print(f"  a drafted position {position:.2f} CPU ms, an unused query position {unused:.2f} ms; a row's "
              f"one-token step {one / rows:.2f} ms: {position / (one / rows):.2f} and {unused / (one / rows):.2f} of it")
        engine.__dict__.pop("_draft", None)
        engine.reset()
    logits = torch.randn((rows, vocab)) * 3
    generator = torch.Generator().manual_seed(1)

    def per_row():
        return [real_choose(logits[i], temperature, generator) for i in range(rows)]

    def batched():
        cdf = torch.cumsum(torch.softmax(logits / temperature, dim=-1), -1)
        u = torch.tensor([engine._uniform(generator) for _ in range(rows)]) * cdf[:, -1]
        return torch.searchsorted(cdf, u[:, None], right=True).clamp_(max=vocab - 1).flatten().tolist()

    best = {}
    for _ in range(5):
        for name, f in (("per row", per_row), ("batched", batched)):
            cpu = time.process_time()
            for _ in range(20):
                f()
            best[name] = min(best.get(name, 1e9), 1000 * (time.process_time() - cpu) / 20)
    print(f"sampling {rows} rows' tokens over {vocab} logits: one _choose per row {best['per row']:.2f} CPU ms, one "
          f"batched softmax/cumsum/searchsorted {best['batched']:.2f} ms ({best['per row'] / best['batched']:.2f}x)")


def with_load_average(work) -> None:
    """Run `work`, printing the machine's load average before and after (each mode's output starts and ends so)."""
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    work()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def stages_runs(count: int) -> None:
    """`--stages`: each stage alone in a fresh process, then the real load with its timeline, then the tokenizer
    against torch's import, `count` times each."""
    for _ in range(count):
        subprocess.run([sys.executable, __file__, "--child", "stages"], check=True)
    for _ in range(count):  # the real load, stages overlapped, as `--load` times it
        print("a fresh process, the `local` provider's load and one-token reply:")
        subprocess.run([sys.executable, "-c", TIMELINE], check=True)
    tokenizer_overlap(max(3, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int,
                        help="model calls (default 24; skillmix: requests // 3 items of three calls each, at most "
                             "`concurrency` items at a time; default 48)")
    parser.add_argument("--max-tokens", type=int,
                        help="skillmix: the student's max new tokens per turn (default 256; the judge gets "
                             "120 + 20 k as in the pipeline); short: scales the per-request lengths (default 96)")
    parser.add_argument("--workload", choices=("skillmix", "short"), default="skillmix",
                        help="skillmix: the pipeline's three-call chains over distinct skill pairs (default); "
                             "short: the earlier short prompts, 12 texts twice over")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature of every request (default 0, greedy; `run skillmix` samples its "
                             "student at 0.7); the identical-text counts mean little when sampling without --seed")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="with --temperature: seed every call (call c with S + 1000 c), so that variants that "
                             "sample exactly (prompt lookup's speculative sampling or none) write the same texts")
    parser.add_argument("--variants",
                        help=f"comma-separated, each in its own process (choose from {', '.join(VARIANTS)}; default "
                             "engine f32,engine fp16,engine int8; with --load: the variants timed)")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="print the first N texts of each variant (their first 400 characters), to judge them")
    parser.add_argument("--kernels", action="store_true",
                        help="instead: CPU ms of one decode step's matmuls per weight format, and of one decode "
                             "step of the real model per weight type (one thread)")
    parser.add_argument("--attention", action="store_true",
                        help="instead: CPU ms of the attention of a decode, verify and prefill step per KV cache type "
                             "(one thread, random keys/values of the embedded model's shapes)")
    parser.add_argument("--load", type=int, metavar="REPEATS",
                        help="instead: provider built -> first token only, float32 and float16, REPEATS times each")
    parser.add_argument("--against", metavar="DIR",
                        help="also measure another checkout (DIR holds a `skillweave` folder), alternating with "
                             "this one: with --load, and for each variant's throughput")
    parser.add_argument("--stages", type=int, metavar="REPEATS", nargs="?", const=1,
                        help="instead: the float16 load's stages (import torch, tokenizer, weights, packing and "
                             "prefill per layer) one after another, wall and CPU s each, in REPEATS fresh "
                             "processes (default 1); then REPEATS real loads with when each stage ended, and whether building "
                             "the tokenizer while torch is imported would gain")
    parser.add_argument("--dump", metavar="FILE",
                        help="with one variant: write each request's prompt and output token ids (JSON, in the "
                             "order the engine admitted them) to FILE, e.g. for benchmarks/prompt_lookup.py")
    parser.add_argument("--timeline", action="store_true",
                        help="with the throughput run: where each variant's wall time and CPU go (decode steps with "
                             "their rows and columns, prefills, the engine idle between calls, Python between torch "
                             "ops, torch threads, per-thread CPU), printed as a table per variant")
    parser.add_argument("--forward-ab", type=int, metavar="STEPS",
                        help="instead, with --against DIR: STEPS decode steps with this checkout's model forward and "
                             "STEPS with DIR's, alternating in one process (one thread, 8 rows): CPU ms per step")
    parser.add_argument("--verify-costs", action="store_true",
                        help="instead, CPU ms of one-token and verify steps (8 rows, one thread, float16, sampled at "
                             "--temperature or 0.7): a drafted and an unused query position's cost, the sampling's share")
    parser.add_argument("--kv-steps", choices=("float16", "int8"), metavar="WEIGHTS",
                        help="instead: the real model's one-token decode step with WEIGHTS (float16 or int8) and a "
                             "float32 against a bfloat16 KV cache, at 8 rows and about 150, 450 and 900 columns "
                             "(one thread, interleaved; the last part of --attention)")
    parser.add_argument("--int8-kernels", action="store_true",
                        help="instead: CPU ms of one layer's int8 matmuls at 8 to 700 rows, the engine's fbgemm path "
                             "against torch's _int_mm with rows quantised alone and fbgemm float16 (one thread)")
    parser.add_argument("--replay-profile", metavar="FILE",
                        help="the requests of a --dump FILE through this checkout's engine on one thread, CPU split "
                             "into steps and prefills, attention, matmuls, norms, rotary (weights: --layout-weights)")
    parser.add_argument("--native", action="store_true",
                        help="the native attention kernel: first-use build time, and one step's attention against "
                             "torch's (one thread), one call against two halves on two threads")
    parser.add_argument("--step-profile", choices=("float16", "float32", "int8", "bfloat16"), metavar="WEIGHTS",
                        help="instead: the real model's one-token decode step with WEIGHTS at 8 rows of about 600 "
                             "columns (one thread, prompt lookup off): CPU ms per step and torch.profiler's ops")
    parser.add_argument("--layout-ab", metavar="FILE",
                        help="instead, with --against DIR: the requests of a --dump FILE through this checkout's "
                             "engine and DIR's in lockstep, one process, one thread: CPU per step, columns "
                             "attended, identical outputs (float16 weights, or --layout-weights)")
    parser.add_argument("--layout-weights", choices=("float16", "int8", "float32"), default="float16",
                        help="the weights --layout-ab and --replay-profile run with (default float16)")
    parser.add_argument("--agreement", type=int, metavar="ITEMS",
                        help="Instead: next-token agreement of float16 and int8 weights with float32 on float32's "
                             "greedy replies to ITEMS Skill-Mix student prompts (top token, KL)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 256 if args.workload == "skillmix" else 96
    if args.requests is None:
        args.requests = 48 if args.workload == "skillmix" else 24
    if args.forward_ab and not args.against:
        parser.error("--forward-ab needs --against DIR")
    if args.layout_ab:
        if not args.against:
            parser.error("--layout-ab needs --against DIR")
        return with_load_average(lambda: layout_ab(args.layout_ab, args.against, args.layout_weights))
    if args.child == "stages":
        stages()
        return
    if args.agreement:
        return with_load_average(lambda: agreement(args.agreement))
    if args.attention:
        return with_load_average(attention)
    if args.int8_kernels:
        return with_load_average(int8_kernels)
    if args.kv_steps:
        return with_load_average(lambda: real_steps(8, weights=args.kv_steps, no_drafts=True))
    if args.forward_ab:
        return with_load_average(lambda: forward_ab(args.against, args.forward_ab))
    if args.kernels:
        return with_load_average(kernels)
    if args.verify_costs:
        return with_load_average(lambda: verify_costs(args.temperature or 0.7))
    if args.step_profile:
        return with_load_average(lambda: step_profile(args.step_profile))
    if args.native:
        return with_load_average(native_bench)
    if args.replay_profile:
        return with_load_average(lambda: replay_profile(args.replay_profile, args.layout_weights))
    if args.stages:
        return with_load_average(lambda: stages_runs(args.stages))
    if args.child:
        print(json.dumps(throughput(args)))
        return
    if args.load:
        return with_load_average(lambda: load_only(args.load, args.against,
                                                   *([args.variants.split(",")] if args.variants else [])))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    args.variants = args.variants or "engine f32,engine fp16,engine int8"
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if args.dump and "," in args.variants:
        parser.error("--dump takes one variant")
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    loads = {kind: warm_load("transformers" if kind == "transformers" else "engine", VARIANTS[kind])
             for kind in ("engine f32", "engine fp16", "transformers")}
    print("fresh process, imports included: " + ", ".join(
        f"{k} provider built after {v[0]:.2f} s, first token {v[1]:.2f} s later" if v[1] is not None
        else f"{k} loaded in {v[0]:.2f} s" for k, v in loads.items()))
    trees = {"this": os.environ.get("PYTHONPATH")}
    if args.against:
        trees = {"against": args.against, **trees}
    runs = {}
    for kind in args.variants.split(","):
        for tree, path in trees.items():
            env = {**os.environ, **VARIANTS[kind], **({"PYTHONPATH": path} if path else {})}
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--concurrency", str(args.concurrency),
                                  "--requests", str(args.requests), "--max-tokens", str(args.max_tokens),
                                  "--workload", args.workload, *(["--dump", args.dump] if args.dump and tree == "this" else []),
                                  *(["--timeline"] if args.timeline else []),
                                  *(["--temperature", str(args.temperature)] if args.temperature else []),
                                  *(["--seed", str(args.seed)] if args.seed is not None else [])],
                                 capture_output=True, text=True, env=env, check=True)
            name = kind if tree == "this" else f"{kind} (against)"
            runs[name] = r = json.loads(out.stdout.strip().splitlines()[-1])
            if args.timeline:
                print(f"{name}:", *out.stdout.strip().splitlines()[:-1], sep="\n")
            prefill = "" if r["prefilled"] is None else f"; {r['prefilled']} of {r['prompt_tokens']} prompt tokens prefilled"
            if r.get("drafted"):
                prefill += f"; {r['steps']} decode steps, {r['accepted']} of {r['drafted']} drafted tokens accepted"
            print(f"{name:>20}: {r['tokens']} output tokens in {r['wall_s']:.1f} s = {r['tokens_per_s']:.1f} tokens/s, "
                  f"{r['cpu_ms_per_token']:.1f} CPU ms per token{prefill} (load average {os.getloadavg()[0]:.1f})")
    if args.against:
        for kind in args.variants.split(","):
            old, new = runs[f"{kind} (against)"], runs[kind]
            same = sum(a == b for a, b in zip(old["texts"], new["texts"], strict=True))
            print(f"{kind}, this / against: tokens/s {new['tokens_per_s'] / old['tokens_per_s']:.2f}x, CPU per token "
                  f"{old['cpu_ms_per_token'] / new['cpu_ms_per_token']:.2f}x less; identical greedy texts "
                  f"{same}/{len(new['texts'])}")
    base = "transformers" if "transformers" in runs else next(k for k in runs if "(against)" not in k)
    for kind in runs:
        if kind != base and "(against)" not in kind:
            print(f"{kind} / {base} tokens/s: {runs[kind]['tokens_per_s'] / runs[base]['tokens_per_s']:.2f}x;"
                  f" CPU per token {runs[base]['cpu_ms_per_token'] / runs[kind]['cpu_ms_per_token']:.2f}x less")
    reference = "engine f32" if "engine f32" in runs else base
    for kind in runs:
        if kind != reference and "(against)" not in kind:
            same = sum(a == b for a, b in zip(runs[reference]["texts"], runs[kind]["texts"], strict=True))
            print(f"identical greedy texts, {kind} and {reference}: {same}/{len(runs[kind]['texts'])}")
    for kind in runs:  # the bfloat16 KV cache against the float32 one, same weights, same checkout
        twin = kind.replace(" kv16", " kv32")
        if kind.endswith(" kv16") and twin in runs:
            new, old = runs[kind], runs[twin]
            same = sum(a == b for a, b in zip(old["texts"], new["texts"], strict=True))
            print(f"{kind} / {twin}: tokens/s {new['tokens_per_s'] / old['tokens_per_s']:.2f}x, CPU per token "
                  f"{old['cpu_ms_per_token'] / new['cpu_ms_per_token']:.2f}x less; identical greedy texts "
                  f"{same}/{len(new['texts'])}")
    for i in range(min(args.samples, len(runs[reference]["texts"]))):
        for kind in runs:
            text = runs[kind]["texts"][i]
            print(f"text {i + 1}, {kind}: {text[:400]!r}{' ...' if len(text) > 400 else ''}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
