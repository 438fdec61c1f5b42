"""Skill-Mix nodes: seeded combination sampling (official or interleaved order), the two-turn student, answer extraction and
judge grading with the k+3 rubric, n grading samples and the programmatic sentence override.

One graph thread per (combination, generation round). Graph state holds only the item id and a status;
texts, calls and grades live in the store.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.compactplan import CompactCombos, interleaved_compact, official_compact, reorder_into
from skillweave.agents.lazyplan import LazyPlan
from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.catalog import Skill
from skillweave.errors import ModelCallError
from skillweave.metrics.skillmix import extract_answer, grade_points, sentence_limit_words

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

    from skillweave.pipelines.skillmix import SkillMixConfig

KIND = "skillmix.text"


class SkillMixState(TypedDict, total=False):
    item_id: str
    status: str


SAMPLERS = ("official", "interleaved")
OFFICIAL_EXP_PATH = "test"  # query_random.py's default --exp_path, the string that seeds the in-prompt reshuffle


def sample_official(skills: list, topics: list, k: int, n: int, seed: int = 10,
                    num_topics: int = 1) -> list[tuple[list, list]]:
    """Skill-Mix's `query_random.py` draw order, call for call: `official_compact`'s draw (without the in-prompt
    order) as `(combination, its topics)` lists.

    One `random.Random(seed)` (the same generator as the module-level `random.seed(seed)` upstream calls):
    first all n combinations, each `shuffle(skills)` in place then the first k; then, per combination in
    order, `shuffle(topics)` in place and the first `num_topics`. n <= 0 enumerates every combination of
    the catalog in sorted order (by skill names), as upstream does for any non-positive count, and then
    draws the topics the same way. Combinations are independent (duplicates possible).
    """
    return list(official_compact(skills, topics, k, n, seed, num_topics=num_topics).draws())


def official_prompt_orders(draws: list[tuple[list, list]], exp_path: str = OFFICIAL_EXP_PATH) -> list[list[list]]:
    """The skill order inside each prompt: upstream re-seeds with the experiment path string before its
    generation loop and shuffles each combination in place once per topic, in plan order (`reorder_into`, the
    step `official_compact` takes as it draws).

    Returns, per draw, one skill order per topic. Every generation round upstream is its own process with the
    same seeds, so every round sees the same orders. (Upstream's n = -1 path hands tuples to this shuffle
    and stops with a TypeError; here the enumerated combinations are lists and are shuffled the same way.)
    """
    shuffle = random.Random(exp_path).shuffle

    def orders(combo: list, times: int) -> list[list]:
        got: list[list] = []
        reorder_into(shuffle, [list(combo)], times, lambda order: got.append(list(order)))
        return got

    return [orders(combo, len(combo_topics)) for combo, combo_topics in draws]


def sample_skill_combinations(skills: list, topics: list, k: int, n: int, seed: int = 10,
                              num_topics: int = 1, reshuffle_key: str | None = None) -> list[tuple[list, list]]:
    """The `interleaved` sampler (skillweave's earlier default, kept by name): `interleaved_compact`'s draw as
    `(combination, its topics)` lists. One RNG, and per draw `shuffle(skills)[:k]` immediately followed by
    `shuffle(topics)[:num_topics]`.

    This is NOT the official order (which draws every combination before any topic); it gives different
    pairs for the same seed. With `reshuffle_key` the order inside each combination is reshuffled by a second
    RNG seeded with that key. n = -1 enumerates all C(N, k) combinations with `rng.sample` topics instead.
    """
    return list(interleaved_compact(skills, topics, k, n, seed, reshuffle_key=reshuffle_key,
                                    num_topics=num_topics).draws())


def plan_combinations(config: SkillMixConfig, skills: list, topics: list, k: int) -> list[tuple[list, str]]:
    """(skill order as the prompt lists it, topic) per combination, for the run's sampler: `plan_compact` as a
    list."""
    return list(plan_compact(config, skills, topics, k))


def plan_compact(config: SkillMixConfig, skills: list, topics: list, k: int) -> CompactCombos:
    """The run's combinations as skill and topic indices (agents/compactplan.py); iterating it gives
    `plan_combinations`' pairs, in the same order.

    Runs stored before `sampler` existed planned with the interleaved sampler and keep doing so on resume (their
    config loads with `SkillMixConfig.legacy_defaults`).
    """
    sampler = config.sampler
    if sampler == "official":
        return official_compact(skills, topics, k, config.n, config.seed, config.exp_path or OFFICIAL_EXP_PATH)
    if sampler != "interleaved":
        raise ValueError(f"unknown Skill-Mix sampler '{sampler}' (known: {', '.join(SAMPLERS)})")
    return interleaved_compact(skills, topics, k, config.n, config.seed,
                               reshuffle_key=f"k{k}_s{config.seed}" if config.reshuffle else None)


def input_catalogs(config: SkillMixConfig, skills: str | None = None, topics: str | None = None) -> dict[str, tuple]:
    """The skill and topic catalogs a new run stores: bundled or from files, cut to the configured split."""
    from skillweave.catalog import (
        bundled_skills,
        bundled_topics,
        load_lines,
        load_skills,
        split_by_category,
        split_topics,
    )
    from skillweave.errors import UsageError

    skill_rows = load_skills(skills) if skills else bundled_skills()
    topic_rows = load_lines(topics) if topics else bundled_topics()
    if config.split != "all":
        train, heldout = split_by_category(skill_rows, {c.strip() for c in config.train_categories.split(",") if c.strip()})
        skill_rows = train if config.split == "train" else heldout
        topic_rows = split_topics(topic_rows)[0 if config.split == "train" else 1]
    if max(config.k) > len(skill_rows):
        raise UsageError(f"--k {max(config.k)} exceeds the {len(skill_rows)} skills available")
    return {
        "skills": (skills or "bundled", "skills", [s.as_dict() for s in skill_rows], skills or "bundled"),
        "topics": (topics or "bundled", "topics", [{"name": t} for t in topic_rows], topics or "bundled"),
    }


def plan_threads(ctx: RunContext) -> LazyPlan:
    """Deterministic plan from the run config and the stored catalogs: items are created once, by key.

    The combinations are drawn now (a bad config or catalog stops here); the threads, and their items, are
    produced as the runtime takes them (agents/lazyplan.py), in the same order with the same ids."""
    config, store = ctx.config, ctx.store
    skills = [Skill(**{f: e.get(f) or "" for f in ("name", "category", "definition", "example", "status")})
              for e in store.get_catalog(config.skills_catalog)["entries"]]
    topics = [e["name"] for e in store.get_catalog(config.topics_catalog)["entries"]]
    by_k = [(k, plan_compact(config, skills, topics, k)) for k in config.k]  # indices, not lists
    rounds = max(int(config.rounds), 0)

    def threads():
        index = 0
        for k, combos in by_k:
            for combo, topic in combos:
                for round_ in range(config.rounds):
                    item_id = store.ensure_item(
                        ctx.run_id, KIND, index, round_, k=k, skills=[s.name for s in combo], topic=topic,
                        payload={"skill_rows": [s.as_dict() for s in combo]},
                    )
                    yield ThreadSpec(f"{ctx.run_id}:{index}:{round_}", {"item_id": item_id})
                index += 1

    return LazyPlan(sum(len(combos) for _, combos in by_k) * rounds, threads)


def _values(item: dict, config: SkillMixConfig) -> dict:
    k = item["k"]
    return {
        "skills": item["payload"]["skill_rows"],
        "topic": item["topic"],
        "k": k,
        "sentence_limit": sentence_limit_words(k),
        "shorten": bool(config.shorten),
    }


def _temperature(config: SkillMixConfig, round_: int) -> float:
    temps = config.temperatures or [config.temperature]
    return temps[round_ % len(temps)]


async def student_turn(state: SkillMixState, runtime: Runtime[RunContext]) -> dict:
    """Turns 0 and 1 of the student conversation; each output is stored as soon as it arrives."""
    ctx = runtime.context
    item = ctx.store.own_item(state["item_id"])
    values = _values(item, ctx.config)
    outputs = [item["payload"][f"output_{i}"] for i in range(2) if f"output_{i}" in item["payload"]]
    if ctx.config.rejudge_of and len(outputs) < 2:  # a re-judge run never calls the student
        return {"status": "failed"}  # agents/rejudge.py failed the item with its reason when it copied it
    # turns this node sent itself: turn 1 resends turn 0's prompt as rendered then, not rendered a second time
    prompts: list[str] | None = [] if not outputs else None
    listed = set(item["prompt_versions"])  # versions the item lists (the store appends each one once)
    for turn in range(len(outputs), 2):
        try:
            reply = await call_template(
                ctx, item_id=item["id"], role="student", template=ctx.config.student_template, values=values,
                model=ctx.config.model, turn=turn, previous_outputs=outputs, previous_prompts=prompts,
                temperature=_temperature(ctx.config, item["round"]), max_tokens=ctx.config.max_tokens,
            )
        except ModelCallError as exc:
            return ctx.fail(item["id"], f"student_turn{turn}", exc)
        outputs.append(reply.text)
        prompt = reply.messages[-1]["content"]
        if prompts is not None:
            prompts.append(prompt)
        version = ctx.template(ctx.config.student_template).version
        ctx.store.update_item(item["id"], prompt_versions=[version] if version not in listed else (),
                              payload_update={f"prompt_{turn}": prompt, f"output_{turn}": reply.text,
                                              f"text_{turn}": extract_answer(reply.text)})
        listed.add(version)
    ctx.event(item["id"], "student", "generated")
    return {"status": "generated"}


async def grade(state: SkillMixState, runtime: Runtime[RunContext]) -> dict:
    """One judge call with n samples; each parsed, repaired and overridden, stored as its own grade row."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.own_item(state["item_id"])
    k, text = item["k"], item["payload"]["text_1"]  # only the revised text is graded
    values = {**_values(item, config), "text": text}
    values.pop("shorten")
    try:
        reply = await call_template(
            ctx, item_id=item["id"], role="judge", template=config.judge_template, values=values,
            model=config.judge, n=config.grading_samples, temperature=config.judge_temperature,
            max_tokens=config.judge_max_tokens or 120 + 20 * k,
        )
    except ModelCallError as exc:
        return ctx.fail(item["id"], "grade", exc)
    variant = ctx.template(config.judge_template).meta.get("reply_format") or \
        ("points" if "points" in config.judge_template else "table")  # reply_format: converted official prompts
    graded = [grade_points(raw, k, text, variant=variant, skills=item["skills"],
                           filter_explicit_name=config.filter_explicit_name) for raw in reply.texts]
    with ctx.store.transaction():
        ctx.store.add_grades(item["id"], ctx.run_id, [  # the n sample rows in one statement
            {"sample_index": i, "call_id": reply.call_id, "judge": config.judge, "raw": raw, "points": points,
             "score": sum(points), "parse_status": status}
            for i, (raw, (points, status)) in enumerate(zip(reply.texts, graded, strict=True))])
        for i, (_, status) in enumerate(graded):
            if status == "empty":  # counted per step by `report` (metrics/parse_failures.py)
                ctx.event(item["id"], "judge", "parse_failed",
                                    f"call {reply.call_id} sample {i}: no rubric points in the reply")
        version = ctx.template(config.judge_template).version
        ctx.store.update_item(item["id"], status="done", error=None,
                              prompt_versions=[version] if version not in item["prompt_versions"] else ())
    ctx.event(item["id"], "grade", "done")
    return {"status": "done"}


async def route_after_student(state: SkillMixState) -> Literal["grade", "__end__"]:
    return "grade" if state.get("status") == "generated" else "__end__"
