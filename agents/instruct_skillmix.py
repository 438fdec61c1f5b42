"""Instruct-SkillMix nodes: official-order sampling, the five-turn generator, headed-field parsing with
bounded retries of the last turn, near-duplicate control, and the shirker / brevity ablations.

Design choices
- One graph thread per data point; state holds the item id, a status and the parse-attempt count; every
  prompt and output (`prompt_i`, `output_i`) lives in the item payload, so a resumed run reuses finished turns.
- Sampling: `sampler = official` (the default for new runs) makes the calls of the released
  `1_generate_data.py` on one NumPy `RandomState(seed)`, in its order: all skill combinations first
  (`shuffle(skills)` in place, first k; n <= 0 enumerates sorted combinations), then the query-type list
  doubled until it is at least as long, shuffled and truncated, then one in-place shuffle of each combination
  in plan order. `sampler = types-first` is skillweave's earlier order (balanced types by a permutation first,
  then per point a skill shuffle and a pair shuffle), kept by name; runs stored before `sampler` existed use it.
- The held-out set is the same pipeline with `set = heldout`, its own seed (default 4242) and n (default 100).
- Parsing: the instruction comes from turn 3 (else turn 4), the response from turn 4 (else turn 3). A failed
  parse is its own state: the last output is dropped (kept in `dropped_outputs`) and turn 4 is asked again, with
  the attempt number in the call key, at most `parse_retries` times; then the item fails with the reason.
- Near-duplicates (agents.dedup) are checked on the final instruction against instructions already kept in
  the run; a duplicate item ends with status `rejected` and the id of the item it matches.
- Shirkers: the first `round(fraction * n)` data points (as upstream: the first 20%), or a seeded random subset,
  have their response replaced by the reply to `instruct_skillmix/shirker`; the payload keeps the real response
  as `orig_output` and `shirker: true`, so exports can drop shirkers or pair them (chosen = real, rejected = shirker).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal, TypedDict

import numpy as np

from skillweave.agents.dedup import NearDuplicateIndex
from skillweave.agents.lazyplan import LazyPlan
from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.catalog import draw_combinations
from skillweave.catalog.instruct_formats import QueryType, queries_from_entries
from skillweave.errors import ModelCallError

KIND = "instruct_skillmix.example"
TURNS = ("generate", "fix_truncation", "critique", "refine", "fix_truncation_final")
_HEADER = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?[ \t]*(instruction|query|response)[ \t]*(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

    from skillweave.pipelines.instruct_skillmix import InstructSkillMixConfig


class InstructState(TypedDict, total=False):
    item_id: str
    status: str
    parse_attempts: int
    shirker: bool


# ---- sampling ------------------------------------------------------------------------------------------
def balanced_query_types(query_types: list, n: int, rng: np.random.RandomState) -> list:
    """Repeat the type list to >= n entries, shuffle, truncate (upstream's balancing).

    No type appears more than ceil(n/T) times; when T divides n every type appears exactly n/T times.
    """
    if not query_types:
        raise ValueError("no query types to sample from")
    repeated = list(query_types) * math.ceil(n / len(query_types))
    order = rng.permutation(len(repeated))
    return [repeated[i] for i in order[:n]]


def sample_instruct_plan(skills: list[str], query_types: list[QueryType], n: int, k: int = 2,
                         seed: int = 42) -> list[tuple[list[str], QueryType]]:
    """The `types-first` sampler: (skills, query type) per data point, deterministic for a seed (not the
    official order; see `sample_instruct_official`)."""
    if k > len(skills):
        raise ValueError(f"k={k} exceeds the {len(skills)} skills in the catalog")
    rng = np.random.RandomState(seed)
    types = balanced_query_types(query_types, n, rng)
    pool = list(skills)
    plan = []
    for query in types:
        rng.shuffle(pool)
        combo = list(pool[:k])
        rng.shuffle(combo)  # reshuffled again at use, as the reference does
        plan.append((combo, query))
    return plan


INSTRUCT_SAMPLERS = ("official", "types-first")


def sample_instruct_official(skills: list[str], query_types: list, n: int, k: int = 2,
                             seed: int = 42) -> list[tuple[list[str], object]]:
    """(skills in prompt order, query type) per data point, as the released driver draws them.

    `np.random.seed(seed)` there; one `RandomState(seed)` here gives the same stream. Combinations: n > 0 draws
    n times `shuffle(skills)` in place and keeps the first k; otherwise every combination, sorted. Query types:
    the list is doubled (`q += q`) until it has at least as many entries as combinations, shuffled, truncated.
    Then each combination is shuffled in place once more, in plan order, before its prompt. (Upstream does
    that last step inside worker threads, one chunk of 100 per thread; the order is the plan order whenever
    one thread or one chunk runs, and otherwise depends on thread timing there.)
    """
    rng = np.random.RandomState(seed)
    combos = draw_combinations(rng, skills, k, n)
    if not query_types:
        raise ValueError("no query types to sample from")
    queries = list(query_types)
    while len(queries) < len(combos):
        queries += queries
    rng.shuffle(queries)
    queries = queries[:len(combos)]
    for combo in combos:
        rng.shuffle(combo)
    return list(zip(combos, queries, strict=True))


def plan_instruct(config: InstructSkillMixConfig, skills: list[str], queries: list) -> list[tuple[list[str], object]]:
    """(skills, query type) per data point, for the run's sampler (runs stored before `sampler` existed load
    with types-first: `InstructSkillMixConfig.legacy_defaults`)."""
    sampler = config.sampler
    if sampler == "official":
        return sample_instruct_official(skills, queries, config.n, config.k, config.seed)
    if sampler != "types-first":
        raise ValueError(f"unknown Instruct-SkillMix sampler '{sampler}' (known: {', '.join(INSTRUCT_SAMPLERS)})")
    return sample_instruct_plan(skills, queries, config.n, config.k, config.seed)


def shirker_indices(n: int, fraction: float, selection: str = "first", seed: int = 0) -> set[int]:
    count = round(n * fraction)
    if selection == "first":
        return set(range(count))
    return {int(i) for i in np.random.RandomState(seed).choice(n, size=count, replace=False)}


def plan_threads(ctx: RunContext) -> LazyPlan:
    """Items are created once, by (run, index); the plan depends only on the config and stored catalogs.

    The data points are drawn now (a bad config or catalog stops here); each thread, and its item, is produced
    as the runtime takes it (agents/lazyplan.py), in the same order with the same ids."""
    config, store = ctx.config, ctx.store
    skills = [e["name"] for e in store.get_catalog(config.skills_catalog)["entries"]]
    queries = queries_from_entries(store.get_catalog(config.query_types_catalog)["entries"])
    plan = plan_instruct(config, skills, queries)
    shirkers = shirker_indices(len(plan), config.shirker_fraction, config.shirker_selection, config.seed)

    def threads():
        for index, (combo, query) in enumerate(plan):
            item_id = store.ensure_item(
                ctx.run_id, KIND, index, 0, k=config.k, skills=combo, topic=query.name,
                payload={
                    "set": config.set, "query_str": query.name, "query_type": query.query_type,
                    "query_definition": query.definition, "skills_joined_str": ", ".join(combo),
                    "shirker_planned": index in shirkers, "brevity": bool(config.brevity),
                },
            )
            yield ThreadSpec(f"{ctx.run_id}:{index}", {"item_id": item_id, "parse_attempts": 0,
                                                       "shirker": index in shirkers})

    return LazyPlan(len(plan), threads)


# ---- parsing -------------------------------------------------------------------------------------------
def parse_headed_fields(text: str | None) -> dict[str, str]:
    """`### Instruction:` / `### Response:` fields (also bold or bare headers); `### Query:` counts as Instruction.

    The last occurrence of each header wins (a reply that repeats the example keeps its final version).
    """
    if not text:
        return {}
    marks = [(m.start(), m.end(), m.group(1).lower()) for m in _HEADER.finditer(text)]
    fields: dict[str, str] = {}
    for i, (_, end, name) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        value = re.split(r"^[ \t]*#{1,6}[ \t]*\w[\w -]*:", text[end:stop], flags=re.MULTILINE)[0].strip()
        if value:
            fields["instruction" if name in ("instruction", "query") else "response"] = value
    return fields


def final_fields(payload: dict) -> tuple[str | None, str | None]:
    """Instruction from turn 3 (else 4), response from turn 4 (else 3)."""
    t3, t4 = parse_headed_fields(payload.get("output_3")), parse_headed_fields(payload.get("output_4"))
    return t3.get("instruction") or t4.get("instruction"), t4.get("response") or t3.get("response")


# ---- nodes ---------------------------------------------------------------------------------------------
def _values(item: dict) -> dict:
    payload = item["payload"]
    return {"skills": item["skills"], "k": item["k"], "query_name": payload["query_str"],
            "query_definition": payload["query_definition"], "brevity": bool(payload.get("brevity"))}


def generator_turn(turn: int):
    """The node for one generator turn (0..4); skipped when its output is already stored."""

    async def node(state: InstructState, runtime: Runtime[RunContext]) -> dict:
        ctx, config = runtime.context, runtime.context.config
        item = ctx.store.get_item(state["item_id"])
        if item["payload"].get(f"output_{turn}") is not None:
            return {"status": "generating"}
        outputs = [item["payload"][f"output_{i}"] for i in range(turn)]
        attempt = state.get("parse_attempts", 0) if turn == len(TURNS) - 1 else 0
        template = config.generate_template
        try:
            reply = await call_template(
                ctx, item_id=item["id"], role="generator", template=template, values=_values(item),
                model=config.model, turn=turn, previous_outputs=outputs, temperature=config.temperature,
                max_tokens=config.max_tokens, key=(attempt,) if attempt else (),
            )
        except ModelCallError as exc:
            return ctx.fail(item["id"], TURNS[turn], str(exc))
        ctx.store.update_item(item["id"], prompt_versions=[ctx.template(template).version], payload_update={
            f"prompt_{turn}": reply.messages[-1]["content"], f"output_{turn}": reply.text,
            "generator": config.model,
        })
        return {"status": "generating"}

    node.__name__ = TURNS[turn]
    return node


async def parse(state: InstructState, runtime: Runtime[RunContext]) -> dict:
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    instruction, response = final_fields(item["payload"])
    if instruction and response:
        ctx.store.update_item(item["id"], payload_update={
            "instruction": instruction, "orig_instruction": instruction, "input": "", "output": response,
        })
        return {"status": "parsed"}
    missing = " and ".join(n for n, v in (("instruction", instruction), ("response", response)) if not v)
    attempts = state.get("parse_attempts", 0) + 1
    if attempts > config.parse_retries:
        return {**ctx.fail(item["id"], "parse", f"no {missing} field after {attempts} attempts"),
                "parse_attempts": attempts}
    ctx.event(item["id"], "parse", "retry", f"no {missing} field; asking turn 4 again")
    return {"status": "parse_failed", "parse_attempts": attempts}


async def drop_last_turn(state: InstructState, runtime: Runtime[RunContext]) -> dict:
    """Delete the last output (kept for audit in `dropped_outputs`) so turn 4 is asked again."""
    ctx = runtime.context
    item = ctx.store.get_item(state["item_id"])
    last = len(TURNS) - 1
    dropped = [*item["payload"].get("dropped_outputs", []), item["payload"].get(f"output_{last}")]
    ctx.store.update_item(item["id"], payload_update={f"output_{last}": None, "dropped_outputs": dropped})
    return {"status": "generating"}


def _dedup_index(ctx: RunContext) -> NearDuplicateIndex:
    """One index per execution of a run (kept on its RunContext), built from the instructions the run has kept.

    Per execution, not per process: a later resume in the same process rebuilds it from the store, so edits made
    in between (another process, a reviewer) are seen.
    """
    index = getattr(ctx, "_instruct_dedup_index", None)
    if index is None:
        index = NearDuplicateIndex(method=ctx.config.dedup, threshold=ctx.config.dedup_threshold)
        index.add_many([(i["id"], i["payload"]["instruction"]) for i in ctx.store.items(ctx.run_id, kind=KIND)
                        if i["payload"].get("dedup") == "kept"])
        ctx._instruct_dedup_index = index
    return index


async def dedup(state: InstructState, runtime: Runtime[RunContext]) -> dict:
    """Reject an instruction too similar to one already kept in the run (no await: atomic on the event loop)."""
    ctx = runtime.context
    item = ctx.store.get_item(state["item_id"])
    if item["payload"].get("dedup") == "rejected":
        return {"status": "rejected"}
    index = _dedup_index(ctx)
    if item["payload"].get("dedup") != "kept" and item["id"] not in index.keys:
        verdict = index.check_and_add(item["id"], item["payload"]["instruction"])
        if verdict.duplicate:
            reason = f"near-duplicate of {verdict.match_key} (similarity {verdict.similarity:.2f})"
            ctx.store.update_item(item["id"], status="rejected", error=f"dedup: {reason}", payload_update={
                "dedup": "rejected", "duplicate_of": verdict.match_key, "similarity": round(verdict.similarity, 4)})
            ctx.event(item["id"], "dedup", "rejected", reason)
            return {"status": "rejected"}
        ctx.store.update_item(item["id"], payload_update={"dedup": "kept",
                                                          "similarity": round(verdict.similarity, 4)})
    return {"status": "kept"}


async def shirk(state: InstructState, runtime: Runtime[RunContext]) -> dict:
    """Replace the response with a deliberately unhelpful one; the real response stays as `orig_output`."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    template = config.shirker_template
    try:
        reply = await call_template(ctx, item_id=item["id"], role="shirker", template=template,
                                    values={"instruction": item["payload"]["instruction"]}, model=config.model,
                                    temperature=config.temperature, max_tokens=config.max_tokens)
    except ModelCallError as exc:
        return ctx.fail(item["id"], "shirk", str(exc))
    orig = item["payload"].get("orig_output") or item["payload"]["output"]
    ctx.store.update_item(item["id"], prompt_versions=[ctx.template(template).version], payload_update={
        "orig_output": orig, "output": reply.text, "shirker": True, "shirker_prompt": reply.messages[-1]["content"]})
    ctx.event(item["id"], "shirk", "replaced", "response replaced by the shirker template")
    return {"status": "shirked"}


async def finish(state: InstructState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    ctx.store.update_item(state["item_id"], status="done")
    ctx.event(state["item_id"], "finish", "done")
    return {"status": "done"}


# ---- routers -------------------------------------------------------------------------------------------
def route_after_turn(next_node: str):
    async def router(state: InstructState) -> str:
        return "__end__" if state.get("status") == "failed" else next_node

    router.__name__ = f"route_to_{next_node}"
    return router


async def route_after_parse(state: InstructState) -> Literal["dedup", "drop_last_turn", "__end__"]:
    status = state.get("status")
    if status == "parsed":
        return "dedup"
    return "drop_last_turn" if status == "parse_failed" else "__end__"


async def route_after_dedup(state: InstructState) -> Literal["shirk", "finish", "__end__"]:
    if state.get("status") == "rejected":
        return "__end__"
    return "shirk" if state.get("shirker") else "finish"


async def route_after_shirk(state: InstructState) -> Literal["finish", "__end__"]:
    return "__end__" if state.get("status") == "failed" else "finish"
