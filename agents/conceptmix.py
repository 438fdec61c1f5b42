"""ConceptMix nodes (docs/methods.md#conceptmix): sample -> refine -> caption -> verify -> questions -> image -> grade.

Design choices:
- One graph thread per prompt record. State carries the item id, the resample attempt and a status;
  concepts, configurations, captions, questions, image file names and grades live in the store.
- A conflict (the sentinel at caption or verify, or an LLM step whose reply never parses) resamples the
  record from scratch with the next attempt's seed, at most `max_resamples` times; each resample is an
  event with its reason, and running out marks the item failed with the last reason (upstream loops forever).
- REFINE's JSON reply is typed (`catalog.conceptmix.refined_config_schema`, sent as a JSON schema where the
  provider supports one) and gets one repair turn quoting the validation error (agents/structured.py).
- A reply that does not parse is retried `parse_retries` times (each try is its own recorded call). With
  `refine`/`questions` = `auto` (the default) a step that still fails falls back to the rule-based
  completion / template questions and records the fallback; `llm` resamples instead; `rule`/`template`
  never call the model for that step.
- VERIFY is a gate: the caption from CAPTION is kept unless the verifier returns the sentinel.
- Grading asks one question per call with the image attached (`max_tokens` 1 by default, temperature 0) and
  scores 1 when the reply contains the word "yes". A call that fails after the provider's retries is stored
  as a grade with `parse_status = "error"` and score 0 (upstream silently skipped it, bug A).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.lazyplan import LazyPlan
from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.agents.structured import call_structured
from skillweave.catalog.conceptmix import (
    ConceptCatalog,
    complete_config_by_rule,
    describe_concept,
    plural,
    record_rng,
    refined_config_schema,
    sample_record,
    template_question,
    validate_refined_config,
)
from skillweave.errors import ConfigError, ModelCallError, ParseFailure
from skillweave.metrics.conceptmix import KIND
from skillweave.providers.images import image_backend, image_folder, save_image
from skillweave.store import stable_id

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

    from skillweave.pipelines.conceptmix import ConceptMixConfig

SENTINEL = "CONFLICT"


class ConceptMixState(TypedDict, total=False):
    item_id: str
    entry: str  # "sample" for generated records, "image" for imported prompt sets
    attempt: int
    status: str


# Catalog snapshots are content-addressed, so one parsed copy per (store, catalog id) is safe to share.
_CATALOGS: dict[tuple[str, str], ConceptCatalog] = {}


def run_catalog(ctx: RunContext) -> ConceptCatalog:
    key = (ctx.store.path, ctx.config.concepts_catalog)
    if key not in _CATALOGS:
        entries = ctx.store.get_catalog(ctx.config.concepts_catalog)["entries"]
        _CATALOGS[key] = ConceptCatalog.from_entries(entries, source=ctx.config.concepts_catalog)
    return _CATALOGS[key]


def plan_threads(ctx: RunContext) -> list[ThreadSpec] | LazyPlan:
    """Generated runs: one item per (k, index), sampled at attempt 0, as each thread is taken. Imported runs: the
    items already stored (a list: the imported files were read whole)."""
    config, store = ctx.config, ctx.store
    if config.source != "generate":
        items = list(store.items(ctx.run_id, kind=KIND))
        return [ThreadSpec(f"{ctx.run_id}:{it['combo_index']}", {"item_id": it["id"], "entry": "image", "attempt": 0})
                for it in items]
    catalog = run_catalog(ctx)
    # each record is sampled from (seed, k, index) alone, so a generated plan is produced as the runtime takes it
    # (agents/lazyplan.py): the record and its item when its thread is taken, in the same order with the same ids
    ks, n = list(config.k), int(config.n)

    def threads():
        index = 0
        for k in ks:
            for _ in range(n):
                sample = _sample(catalog, config, k, index, 0)
                item_id = store.ensure_item(ctx.run_id, KIND, index, 0, k=k, skills=sample.skills,
                                            payload={"concepts": sample.concepts, "categories": sample.categories,
                                                     "config": sample.config, "attempt": 0})
                yield ThreadSpec(f"{ctx.run_id}:{index}", {"item_id": item_id, "entry": "sample", "attempt": 0})
                index += 1

    return LazyPlan(len(ks) * n, threads)


def _sample(catalog: ConceptCatalog, config: ConceptMixConfig, k: int, index: int, attempt: int):
    return sample_record(catalog, k, config.seed, index, attempt,
                         p_extra_object=config.p_extra_object, max_style=config.max_style)


# ---- helpers -------------------------------------------------------------------------------------------
def _conflict(ctx: RunContext, item: dict, stage: str, reason: str, attempt: int) -> dict:
    """Resample the record (bounded), recording why."""
    limit = ctx.config.max_resamples
    if attempt >= limit:
        return ctx.fail(item["id"], stage, f"{reason} (no resamples left after {limit})")
    ctx.event(item["id"], stage, "resample", reason)
    ctx.store.update_item(item["id"], payload_update={
        "resample_reasons": [*item["payload"].get("resample_reasons", []), f"{stage}: {reason}"]})
    return {"status": "conflict", "attempt": attempt + 1}


def _json_text(config: dict) -> str:
    return json.dumps(config, ensure_ascii=False)


def parse_json_reply(text: str) -> dict:
    """The first JSON object in a reply (code fences and chatter around it are ignored)."""
    text = re.sub(r"```(?:json)?", "", text)
    start = text.find("{")
    if start < 0:
        raise ParseFailure("reply contains no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ParseFailure(f"reply JSON does not parse: {exc}") from None
    return value


def parse_questions(text: str, concepts: list[dict]) -> list[str]:
    """One question per line (numbering and bullets stripped), one per concept, or ParseFailure.

    Checks: exactly len(concepts) questions, all different, and each object concept's question names that
    object (singular or plural); the content of the other questions is left to the writer.
    """
    questions = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.):]|Q\d+[.:)]?)\s*", "", line).strip()
        if line.endswith("?"):
            questions.append(line)
    if len(questions) != len(concepts):
        raise ParseFailure(f"expected {len(concepts)} questions, found {len(questions)}")
    if len({q.lower() for q in questions}) != len(questions):
        raise ParseFailure("the questions repeat each other")
    for i, (question, concept) in enumerate(zip(questions, concepts, strict=True)):
        names = {concept["value"].lower(), plural(concept["value"]).lower()}
        if concept["category"] == "object" and not any(name in question.lower() for name in names):
            raise ParseFailure(f"question {i + 1} does not mention the object '{concept['value']}'")
    return questions


# Reply budgets per step (tokens), capped by --max-tokens: a caption or a verdict is short, and a small model
# that rambles to the full budget on every step makes offline runs several times slower.
STEP_TOKENS = {"refine": None, "caption": 120, "verify": 120}


def _llm_options(config: ConceptMixConfig, step: str, k: int = 0) -> dict:
    cap = config.max_tokens
    budget = 24 * (k + 1) + 24 if step == "questions" else STEP_TOKENS.get(step)
    return {"model": config.model, "temperature": config.temperature,
            "max_tokens": min(cap, budget) if budget else cap}


# ---- nodes ---------------------------------------------------------------------------------------------
async def sample(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """(Re)draw the record's concepts for this attempt; attempt 0 was drawn by the plan."""
    ctx, attempt = runtime.context, state.get("attempt", 0)
    item = ctx.store.get_item(state["item_id"])
    if item["payload"].get("attempt") != attempt:
        drawn = _sample(run_catalog(ctx), ctx.config, item["k"], item["combo_index"], attempt)
        ctx.store.update_item(item["id"], skills=drawn.skills, payload_update={
            "concepts": drawn.concepts, "categories": drawn.categories, "config": drawn.config, "attempt": attempt,
            "refined_config": None, "sentence": None, "questions": None})
        ctx.event(item["id"], "sample", "resampled", f"attempt {attempt}")
    return {"status": "sampled"}


async def refine(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """Fill relation endpoints and add reference objects: LLM (two turns), rule, or LLM with rule fallback."""
    ctx, config, attempt = runtime.context, runtime.context.config, state.get("attempt", 0)
    item = ctx.store.get_item(state["item_id"])
    catalog, sampled = run_catalog(ctx), item["payload"]["config"]
    concepts = item["payload"]["concepts"]
    rule_config = complete_config_by_rule(sampled, concepts, record_rng(config.seed, item["k"],
                                                                         item["combo_index"], 1000 + attempt))
    mode, refined, reason = config.refine, None, ""
    if mode != "rule":
        values = {"config_json": _json_text(sampled), "rule_config_json": _json_text(rule_config),
                  "properties": [describe_concept(catalog, c, rule_config) for c in concepts]}
        for try_ in range(1 + config.parse_retries):
            try:  # turn 0 plans in prose; turn 1's JSON is typed (a schema, one repair turn: agents/structured.py)
                first = await call_template(ctx, item_id=item["id"], role="refine", template="conceptmix/refine",
                                            values=values, turn=0, key=(attempt, try_), **_llm_options(config, "refine"))
                refined, _ = await call_structured(
                    ctx, schema=refined_config_schema(), check=lambda _model, data: validate_refined_config(sampled, data),
                    item_id=item["id"], role="refine", template="conceptmix/refine", values=values, turn=1,
                    previous_outputs=[first.text], key=(attempt, try_), **_llm_options(config, "refine"))
                break
            except ModelCallError as exc:
                return ctx.fail(item["id"], "refine", str(exc))
            except ParseFailure as exc:  # StructuredFailure: each failed reply is already a parse_failed event
                reason = str(exc)
        if refined is None and mode == "llm":
            return _conflict(ctx, item, "refine", f"no valid configuration: {reason}", attempt)
    source = "llm" if refined is not None else "rule"
    if refined is None:
        refined = rule_config
        if mode == "auto":
            ctx.event(item["id"], "refine", "fallback", f"rule completion ({reason})")
    ctx.store.update_item(item["id"], prompt_versions=[ctx.template("conceptmix/refine").version] if mode != "rule"
                          else [], payload_update={"refined_config": refined, "refine_source": source})
    return {"status": "refined"}


async def caption(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """Write the prompt (turn 0 of the caption conversation); the sentinel means conflicting concepts."""
    ctx, config, attempt = runtime.context, runtime.context.config, state.get("attempt", 0)
    item = ctx.store.get_item(state["item_id"])
    values = _caption_values(ctx, item)
    for try_ in range(1 + config.parse_retries):
        try:
            reply = await call_template(ctx, item_id=item["id"], role="caption", template="conceptmix/caption",
                                        values=values, turn=0, key=(attempt, try_),
                                        **_llm_options(config, "caption"))
        except ModelCallError as exc:
            return ctx.fail(item["id"], "caption", str(exc))
        text = reply.text.strip().strip('"').strip()
        if SENTINEL in text.upper():
            return _conflict(ctx, item, "caption", "the writer reported conflicting concepts", attempt)
        if text:
            ctx.store.update_item(item["id"], prompt_versions=[ctx.template("conceptmix/caption").version],
                                  payload_update={"caption_output": reply.text, "sentence": text})
            return {"status": "captioned"}
        ctx.event(item["id"], "caption", "parse_failed", "empty caption")
    return _conflict(ctx, item, "caption", "empty caption after retries", attempt)


def _caption_values(ctx: RunContext, item: dict) -> dict:
    catalog, refined = run_catalog(ctx), item["payload"]["refined_config"]
    concepts = item["payload"]["concepts"]
    return {"properties": [describe_concept(catalog, c, refined) for c in concepts],
            "config_json": _json_text(refined), "sentinel": SENTINEL, "num_questions": len(concepts),
            "template_questions": [template_question(catalog, c, refined) for c in concepts]}


async def verify(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """A loose sense check of the caption; only the sentinel rejects it (the caption is kept as written)."""
    ctx, config, attempt = runtime.context, runtime.context.config, state.get("attempt", 0)
    item = ctx.store.get_item(state["item_id"])
    try:
        reply = await call_template(ctx, item_id=item["id"], role="verify", template="conceptmix/verify",
                                    values={"caption": item["payload"]["sentence"], "sentinel": SENTINEL},
                                    key=(attempt,), **_llm_options(config, "verify"))
    except ModelCallError as exc:
        return ctx.fail(item["id"], "verify", str(exc))
    ctx.store.update_item(item["id"], prompt_versions=[ctx.template("conceptmix/verify").version],
                          payload_update={"verify_output": reply.text})
    if SENTINEL in reply.text.upper():
        return _conflict(ctx, item, "verify", "the checker found the caption impossible to draw", attempt)
    return {"status": "verified"}


async def questions(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """One yes/no question per concept, appended to the caption conversation (not the verify one)."""
    ctx, config, attempt = runtime.context, runtime.context.config, state.get("attempt", 0)
    item = ctx.store.get_item(state["item_id"])
    values = _caption_values(ctx, item)
    mode, found, reason = config.questions, None, ""
    if mode != "template":
        for try_ in range(1 + config.parse_retries):
            try:
                reply = await call_template(ctx, item_id=item["id"], role="questions", template="conceptmix/caption",
                                            values=values, turn=1, previous_outputs=[item["payload"]["caption_output"]],
                                            key=(attempt, try_), **_llm_options(config, "questions", item["k"]))
            except ModelCallError as exc:
                return ctx.fail(item["id"], "questions", str(exc))
            try:
                found = parse_questions(reply.text, item["payload"]["concepts"])
                break
            except ParseFailure as exc:
                reason = str(exc)
                ctx.event(item["id"], "questions", "parse_failed", reason)
        if found is None and mode == "llm":
            return _conflict(ctx, item, "questions", reason, attempt)
    source = "llm" if found is not None else "template"
    if found is None:
        found = values["template_questions"]
        if mode == "auto":
            ctx.event(item["id"], "questions", "fallback", f"template questions ({reason})")
    ctx.store.update_item(item["id"], status="prompted",
                          payload_update={"questions": found, "questions_source": source})
    ctx.event(item["id"], "questions", "prompted")
    return {"status": "prompted"}


async def generate_image(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """Make one image for the prompt and store it under its content hash."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    payload = item["payload"]
    if payload.get("image"):
        return {"status": "imaged"}
    try:
        backend = image_backend(config.image_model)
        seed = int(stable_id(ctx.run_id, item["id"], "image"), 16) % 2**31
        image = await asyncio.to_thread(backend.generate, payload["sentence"],
                                        payload.get("refined_config") or payload.get("config"), seed)
    except (ModelCallError, ConfigError) as exc:
        return ctx.fail(item["id"], "image", str(exc))
    name = save_image(image, image_folder(ctx.store.path))
    ctx.store.update_item(item["id"], payload_update={"image": name, "image_model": image.model,
                                                      "image_meta": image.meta})
    ctx.event(item["id"], "image", "generated", name)
    return {"status": "imaged"}


YES = re.compile(r"\byes\b", re.IGNORECASE)


async def grade(state: ConceptMixState, runtime: Runtime[RunContext]) -> dict:
    """Ask the grader each non-empty question about the image; errors are recorded and score 0."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    payload = item["payload"]
    path = image_folder(ctx.store.path) / payload["image"]
    part = {"type": "image", "mime": "image/png" if path.suffix == ".png" else f"image/{path.suffix[1:]}",
            "data": base64.b64encode(path.read_bytes()).decode()}
    grader = config.grader

    async def ask(index: int, question: str) -> None:
        try:
            reply = await call_template(ctx, item_id=item["id"], role="grade", template="conceptmix/grade",
                                        values={"question": question}, model=grader, images=[part],
                                        temperature=config.grader_temperature,
                                        max_tokens=config.grader_max_tokens, key=(index,))
            answer, raw, status, call_id = int(bool(YES.search(reply.text))), reply.text, "ok", reply.call_id
        except ModelCallError as exc:
            answer, raw, status, call_id = 0, str(exc), "error", exc.call_id
            ctx.event(item["id"], "grade", "error", f"question {index}: {exc}")
        ctx.store.add_grade(item["id"], ctx.run_id, index, call_id=call_id, judge=grader, raw=raw, points=[answer],
                            score=float(answer), parse_status=status)

    await asyncio.gather(*(ask(i, q) for i, q in enumerate(payload["questions"]) if q.strip()))
    ctx.store.update_item(item["id"], status="done", prompt_versions=[ctx.template("conceptmix/grade").version])
    ctx.event(item["id"], "grade", "done")
    return {"status": "done"}


# ---- routers -------------------------------------------------------------------------------------------
async def route_start(state: ConceptMixState) -> Literal["sample", "image"]:
    return "image" if state.get("entry") == "image" else "sample"


async def route_after_step(state: ConceptMixState) -> Literal["continue", "resample", "stop"]:
    """After an LLM step: go on, go back to SAMPLE on a conflict, or stop on a failure."""
    status = state.get("status")
    if status == "conflict":
        return "resample"
    return "stop" if status == "failed" else "continue"
