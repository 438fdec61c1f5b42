"""Skill extraction nodes (docs/methods.md#skill-labelling-steps; the dataset-agnostic mode is
docs/methods.md#instruct-skillmix-stage1): fine labels, per-subject clustering, human review,
relabelling, and the skill exemplar bank; or, without a dataset, direct prompting for skills and query types.

Design choices
- One graph thread per run. Clustering and review act on the whole label set, so they cannot be split per
  question; the per-question steps (label, relabel) run inside their node with bounded concurrency, and every
  question is its own item (`skills.question`) with its own calls, so lineage and resume stay per question.
  The run-wide state (clusters, the reviewer's draft, the bank id) lives on one `skills.catalog` item.
- A reply that does not parse is retried with a fresh call (`parse_retries`, default 2) and then marks the
  question failed with the reason; it is never coerced into a label. The clustering reply is typed JSON
  (`skill_parsing.clusters_schema`, sent as a JSON schema where supported, one repair turn per try).
- Clustering is per subject (MATH-style) in batches of `cluster_batch` labels sorted by name (default 80,
  unverified: a label list must fit the clustering model's context). Batches that return the same coarse name
  are merged. Labels a valid reply leaves out are retried; after the retries they become their own coarse
  skill and an event says so. With `pregroup=embed`, batches are formed by MiniLM similarity instead of name
  order (agents/skill_grouping.py).
- The reviewer (`--reviewer human`) edits a draft of the coarse skills from the CLI (rename, merge, split,
  drop); `approve` resumes the thread with the draft. A dropped skill's questions are relabelled by the model
  among the remaining skills, or excluded when the drop says so.
- Relabel: by default a question takes its fine label's coarse skill (the map); a question without one (or
  every question with `relabel=llm`) asks the model to pick from its subject's coarse skills.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.agents.skill_grouping import batch_labels
from skillweave.agents.skill_parsing import (  # noqa: F401  (parsers re-exported for callers and tests)
    clusters_schema,
    dedupe_skills,
    parse_choice,
    parse_clusters,
    parse_skill_label,
    parse_skill_outline,
)
from skillweave.agents.structured import StructuredFailure, call_structured
from skillweave.catalog.bank import Bank, BankSkill, Exemplar, save_bank
from skillweave.catalog.instruct_formats import parse_queries_txt, query_entries, to_snake_case
from skillweave.errors import ModelCallError, ParseFailure
from skillweave.store import now
from skillweave.store.payload import review_request_update

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

QUESTION_KIND = "skills.question"
CATALOG_KIND = "skills.catalog"


class ExtractionState(TypedDict, total=False):
    catalog_item: str
    mode: str  # "dataset" or "sda"
    status: str


# ---- plan ---------------------------------------------------------------------------------------------
def plan_threads(ctx: RunContext) -> list[ThreadSpec]:
    store, config = ctx.store, ctx.config
    catalog_item = store.ensure_item(ctx.run_id, CATALOG_KIND, 0)
    if config.dataset_catalog:
        for i, entry in enumerate(store.get_catalog(config.dataset_catalog)["entries"]):
            extra = entry["extra"]
            store.ensure_item(
                ctx.run_id,
                QUESTION_KIND,
                i,
                topic=entry["category"] or "",
                payload={
                    "question_id": entry["name"],
                    "question": entry["definition"],
                    "answer": entry["example"] or "",
                    "solution": extra.get("solution") or "",
                    "subject": entry["category"] or "",
                    "true_skill": extra.get("skill"),
                },
            )
    mode = "dataset" if config.dataset_catalog else "sda"
    return [ThreadSpec(f"{ctx.run_id}:extract", {"catalog_item": catalog_item, "mode": mode})]


def _questions(ctx: RunContext) -> list[dict]:
    return list(ctx.store.items(ctx.run_id, kind=QUESTION_KIND))


async def _parsed_call(
    ctx: RunContext,
    item_id: str,
    role: str,
    template: str,
    values: dict,
    parse,
    max_tokens: int,
    temperature: float | None = None,
    schema=None,
):
    """Call and parse; a reply that does not parse gets a fresh call (new key), up to `parse_retries`. With a
    pydantic `schema` the reply is typed (agents/structured.py: schema sent, one repair turn) and `parse` gets
    the validated JSON."""
    retries = int(ctx.config.parse_retries)
    errors = []
    for attempt in range(retries + 1):
        # the first try uses the run's temperature; retries sample (a greedy retry would repeat itself)
        first = ctx.config.temperature if temperature is None else temperature
        call = dict(item_id=item_id, role=role, template=template, values=values, model=ctx.config.model,
                    max_tokens=max_tokens, key=(attempt,) if attempt else (),
                    temperature=first if attempt == 0 else 0.7)
        if schema is not None:
            try:  # each failed reply is already a parse_failed event
                return await call_structured(ctx, schema=schema, check=lambda _m, data: parse(json.dumps(data)),
                                             **call)
            except StructuredFailure as exc:
                errors.append(str(exc))
                continue
        reply = await call_template(ctx, **call)
        try:
            return parse(reply.text), reply
        except ParseFailure as exc:
            errors.append(str(exc))
            ctx.event(item_id, role, "parse_failed", f"attempt {attempt + 1}: {exc}")
    raise ParseFailure(f"{role}: no parseable reply after {retries + 1} attempts; last: {errors[-1]}")


async def _bounded(ctx: RunContext, coros) -> list:
    semaphore = asyncio.Semaphore(max(1, int(ctx.config.concurrency)))

    async def one(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# ---- dataset route ------------------------------------------------------------------------------------
async def label_questions(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Step 1: one fine-grained snake_case skill per question (skips questions labelled before a resume)."""
    ctx = runtime.context
    template = ctx.config.label_template
    version = ctx.template(template).version

    async def label(item: dict) -> None:
        p = item["payload"]
        values = {
            "question": p["question"],
            "solution": p["solution"] if ctx.config.show_solution else "",
            "subject": p["subject"],
        }
        try:
            fine, reply = await _parsed_call(
                ctx, item["id"], "label", template, values, parse_skill_label, 48
            )
        except (ModelCallError, ParseFailure) as exc:
            ctx.fail(item["id"], "label", exc)
            return
        ctx.store.update_item(
            item["id"],
            status="labelled",
            prompt_versions=[version],
            payload_update={"fine_skill": fine, "label_call_id": reply.call_id},
        )
        ctx.event(item["id"], "label", "labelled", fine)

    todo = [q for q in _questions(ctx) if q["status"] == "pending"]
    await _bounded(ctx, [label(q) for q in todo])
    labelled = [q for q in _questions(ctx) if "fine_skill" in q["payload"]]
    if not labelled:
        ctx.store.update_item(state["catalog_item"], status="failed", error="no question could be labelled")
        return {"status": "failed"}
    return {"status": "labelled"}


async def cluster_labels(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Step 2: per subject, merge fine labels into coarse skills (batched; batches merge by coarse name)."""
    ctx = runtime.context
    item = ctx.store.get_item(state["catalog_item"])
    if "clusters" in item["payload"]:
        return {"status": "clustered"}
    template, batch_size = ctx.config.cluster_template, int(ctx.config.cluster_batch)
    per_subject: dict[str, Counter] = {}
    for q in _questions(ctx):
        if "fine_skill" in q["payload"]:
            per_subject.setdefault(q["payload"]["subject"], Counter())[q["payload"]["fine_skill"]] += 1

    async def cluster(subject: str, labels: list[str], counts: Counter, batch: int) -> list[dict]:
        target = max(1, round(len(labels) * float(ctx.config.cluster_ratio)))
        values = {
            "subject": subject,
            "labels": [{"name": n, "count": counts[n]} for n in labels],
            "target": target,
        }
        try:
            (groups, missing), reply = await _parsed_call(
                ctx,
                item["id"],
                f"cluster:{subject}:{batch}",
                template,
                values,
                lambda t: _complete_clusters(t, labels),
                max_tokens=int(ctx.config.cluster_max_tokens),
                schema=clusters_schema(),
            )
        except (ModelCallError, ParseFailure) as exc:
            ctx.event(
                item["id"], "cluster", "failed", f"{subject or '(no subject)'}: {exc}"
            )
            groups, missing, reply = [], labels, None
        if missing:
            ctx.event(
                item["id"],
                "cluster",
                "unmapped",
                f"{subject or '(no subject)'}: kept as their own skill: {', '.join(missing)}",
            )
            groups = groups + [{"name": m, "definition": "", "members": [m]} for m in missing]
        for g in groups:  # members are (subject, fine label) keys: one fine label may differ by subject
            g["subject"], g["call_id"] = subject, reply.call_id if reply else None
            g["members"] = [f"{subject}\t{m}" for m in g["members"]]
        return groups

    jobs = []
    for subject, counts in per_subject.items():
        method = ctx.config.pregroup
        batches = await asyncio.to_thread(batch_labels, list(counts), batch_size, method)
        for b, batch in enumerate(batches):
            jobs.append(cluster(subject, batch, counts, b))
    merged: dict[str, dict] = {}
    for groups in await _bounded(ctx, jobs):
        for g in groups:
            if g["name"] in merged:  # same coarse name from another batch or subject: one skill
                merged[g["name"]]["members"] += [
                    m for m in g["members"] if m not in merged[g["name"]]["members"]
                ]
                merged[g["name"]]["definition"] = merged[g["name"]]["definition"] or g["definition"]
            else:
                merged[g["name"]] = {
                    "name": g["name"],
                    "definition": g["definition"],
                    "subject": g["subject"],
                    "members": list(g["members"]),
                    "call_id": g["call_id"],
                }
    clusters = list(merged.values())
    ctx.store.update_item(
        item["id"],
        status="clustered",
        prompt_versions=[ctx.template(template).version],
        payload_update={"clusters": clusters},
    )
    ctx.event(
        item["id"],
        "cluster",
        "clustered",
        f"{sum(len(c) for c in per_subject.values())} fine labels -> {len(clusters)} coarse skills",
    )
    return {"status": "clustered"}


def _complete_clusters(text: str, labels: list[str]):
    groups, missing = parse_clusters(text, labels)
    if len(missing) > len(labels) // 2:  # a reply that covers less than half the labels is a failed parse
        raise ParseFailure(f"clustering reply leaves out {len(missing)} of {len(labels)} labels")
    return groups, missing


# ---- review -------------------------------------------------------------------------------------------
async def review_clusters(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Human review point: pause with the coarse skills; resume with the reviewer's edited list."""
    ctx = runtime.context
    item = ctx.store.get_item(state["catalog_item"])
    if "final_clusters" in item["payload"]:
        return {"status": "reviewed"}
    clusters = item["payload"]["clusters"]
    reviewer = ctx.config.reviewer
    if reviewer == "auto":
        decision = {
            "action": "approve",
            "reviewer": "auto",
            "reason": "auto-approved",
            "skills": clusters,
            "ops": [],
            "at": now(),
        }
    else:
        from langgraph.types import interrupt

        request = {
            "item_id": item["id"],
            "run_id": ctx.run_id,
            "thread_id": f"{ctx.run_id}:extract",
            "pipeline": "extract-skills",
            "kind": "skill_catalog",
            "skills": clusters,
            # the generic `skillweave review show|approve|reject` can read this too; edits go through
            # `skillweave review skills ...` because they are catalog operations, not field edits
            "editable": {},
            "context": [
                {
                    "label": "coarse skills (edit with `skillweave review skills`)",
                    "text": "\n".join(
                        f"{c['name']}: {', '.join(m.split(chr(9))[-1] for m in c['members'])}"
                        for c in clusters
                    ),
                }
            ],
        }
        if item["status"] != "review":
            ctx.store.update_item(
                item["id"],
                status="review",
                payload_update=review_request_update(request, review_draft=clusters, review_ops=[]),
            )
            ctx.event(
                item["id"],
                "review",
                "waiting",
                f"{len(clusters)} coarse skills wait for `skillweave review skills`",
            )
        decision = interrupt(request)
        if decision.get("action") == "approve" and "skills" not in decision:  # generic `review approve`
            draft = ctx.store.get_item(item["id"])["payload"].get("review_draft", clusters)
            decision = {**decision, "skills": draft, "ops": []}
    if decision.get("action") == "reject":
        ctx.store.add_review(
            item["id"],
            ctx.run_id,
            decision.get("reviewer") or "unknown",
            "reject",
            decision.get("reason") or "",
            {"_at": decision.get("at")},
        )
        ctx.store.update_item(item["id"], status="rejected", error=f"review: {decision.get('reason')}")
        ctx.event(item["id"], "review", "rejected", decision.get("reason") or "")
        return {"status": "rejected"}
    final = decision["skills"]
    before = {c["name"] for c in clusters}
    after = {c["name"] for c in final}
    ctx.store.add_review(
        item["id"],
        ctx.run_id,
        decision.get("reviewer") or "unknown",
        "edit" if decision.get("ops") else "approve",
        decision.get("reason") or "",
        {
            "ops": decision.get("ops") or [],
            "removed": sorted(before - after),
            "added": sorted(after - before),
            "_at": decision.get("at"),
        },
    )
    ctx.store.update_item(
        item["id"],
        status="reviewed",
        payload_update={"final_clusters": final, "excluded_fine": decision.get("excluded_fine") or []},
    )
    ctx.event(
        item["id"],
        "review",
        "approved",
        f"{decision.get('reviewer')}: {len(final)} coarse skills, {len(decision.get('ops') or [])} edits",
    )
    return {"status": "reviewed"}


# ---- relabel and bank ---------------------------------------------------------------------------------
async def relabel_questions(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Step 3: every labelled question gets exactly one coarse skill."""
    ctx = runtime.context
    cat = ctx.store.get_item(state["catalog_item"])["payload"]
    final, excluded = cat["final_clusters"], set(cat.get("excluded_fine") or [])
    fine_map = {m: c["name"] for c in final for m in c["members"]}
    template = ctx.config.relabel_template
    use_llm = ctx.config.relabel == "llm"

    async def relabel(q: dict) -> None:
        p = q["payload"]
        key = f"{p['subject']}\t{p['fine_skill']}"
        if key in excluded:
            ctx.store.update_item(q["id"], status="excluded", payload_update={"coarse_skill": None})
            ctx.event(
                q["id"], "relabel", "excluded", f"reviewer dropped {p['fine_skill']}"
            )
            return
        if key in fine_map and not use_llm:
            ctx.store.update_item(
                q["id"], status="relabelled", payload_update={"coarse_skill": fine_map[key], "relabel": "map"}
            )
            return
        options = [c for c in final if c.get("subject") == p["subject"]] or final
        values = {
            "question": p["question"],
            "subject": p["subject"],
            "skills": [{"name": c["name"], "definition": c.get("definition") or ""} for c in options],
        }
        try:
            coarse, reply = await _parsed_call(
                ctx,
                q["id"],
                "relabel",
                template,
                values,
                lambda t: parse_choice(t, [c["name"] for c in options]),
                48,
            )
        except (ModelCallError, ParseFailure) as exc:
            ctx.fail(q["id"], "relabel", exc)
            return
        ctx.store.update_item(
            q["id"],
            status="relabelled",
            prompt_versions=[ctx.template(template).version],
            payload_update={"coarse_skill": coarse, "relabel": "llm", "relabel_call_id": reply.call_id},
        )

    todo = [q for q in _questions(ctx) if q["status"] == "labelled"]
    await _bounded(ctx, [relabel(q) for q in todo])
    return {"status": "relabelled"}


async def build_bank(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Step 3 result: the Skill Exemplar Repository, stored as a `bank` catalog with full provenance."""
    ctx = runtime.context
    cat_item = ctx.store.get_item(state["catalog_item"])
    final = cat_item["payload"]["final_clusters"]
    label_version = ctx.template(ctx.config.label_template).version
    exemplars = []
    for q in _questions(ctx):
        p = q["payload"]
        if q["status"] != "relabelled":
            continue
        exemplars.append(
            Exemplar(
                skill=p["coarse_skill"],
                question=p["question"],
                answer=p["solution"] or p["answer"],
                source_item_id=q["id"],
                provenance={
                    "question_id": p["question_id"],
                    "subject": p["subject"],
                    "fine_skill": p["fine_skill"],
                    "final_answer": p["answer"],
                    "label_model": ctx.config.model,
                    "relabel": p["relabel"],
                    "label_call_id": p.get("label_call_id"),
                    "relabel_call_id": p.get("relabel_call_id"),
                    "prompt_versions": q["prompt_versions"] or [label_version],
                },
            )
        )
    skills = [
        BankSkill(
            name=c["name"],
            subject=c.get("subject") or "",
            definition=c.get("definition") or "",
            fine=sorted({m.split("\t", 1)[-1] for m in c["members"]}),
        )
        for c in final
    ]
    bank = Bank(
        skills=skills,
        exemplars=exemplars,
        meta={
            "format": "skillweave",
            "source": "extract-skills",
            "run_id": ctx.run_id,
            "model": ctx.config.model,
            "prompt_versions": {
                k: ctx.template(name).version
                for k, name in (("label_template", ctx.config.label_template),
                                ("cluster_template", ctx.config.cluster_template),
                                ("relabel_template", ctx.config.relabel_template))
            },
        },
    )
    name = ctx.config.bank_name or ctx.run_id
    bank_id = save_bank(ctx.store, bank, name, source=ctx.config.dataset or "")
    ctx.store.link_run_catalog(ctx.run_id, bank_id, "bank")
    ctx.store.update_item(cat_item["id"], status="done", payload_update={"bank_id": bank_id})
    ctx.event(
        cat_item["id"],
        "bank",
        "done",
        f"{bank_id}: {len(skills)} skills, {len(exemplars)} exemplars",
    )
    return {"status": "done"}


# ---- dataset-agnostic route ---------------------------------------------------------------------------
async def propose_catalog(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """SDA: ask for topics with snake_case skills, and for query types; deduplicate both."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["catalog_item"])
    if "clusters" in item["payload"]:
        return {"status": "clustered"}
    try:
        pairs: list[tuple[str, str]] = []
        for r in range(config.proposals):
            outline, _ = await _parsed_call(
                ctx,
                item["id"],
                f"propose_skills:{r}",
                config.skills_template,
                {
                    "domain": config.domain,
                    "n_topics": config.n_topics,
                    "skills_per_topic": config.skills_per_topic,
                },
                parse_skill_outline,
                max_tokens=int(config.propose_max_tokens),
                temperature=0.7 if r else None,
            )
            pairs += outline

        def parse_queries(text: str):
            queries = parse_queries_txt(text)
            if not queries:
                raise ParseFailure(f"no '### N. **Name**' blocks in reply {text.strip()[:120]!r}")
            return queries

        queries, _ = await _parsed_call(
            ctx,
            item["id"],
            "propose_query_types",
            config.query_types_template,
            {"domain": config.domain, "n_query_types": config.n_query_types},
            parse_queries,
            max_tokens=int(config.propose_max_tokens),
        )
    except (ModelCallError, ParseFailure) as exc:
        ctx.fail(item["id"], "propose", exc)
        return {"status": "failed"}
    skills = dedupe_skills(pairs)
    unique_q = {}
    for q in queries:
        unique_q.setdefault(to_snake_case(q.name), q)
    clusters = [{"name": s["name"], "definition": "", "subject": s["subject"], "members": []} for s in skills]
    versions = [ctx.template(name).version for name in (config.skills_template, config.query_types_template)]
    ctx.store.update_item(
        item["id"],
        status="clustered",
        prompt_versions=versions,
        payload_update={
            "clusters": clusters,
            "query_types": query_entries(list(unique_q.values())),
            "proposed": {"skills": len(pairs), "query_types": len(queries)},
        },
    )
    ctx.event(
        item["id"],
        "propose",
        "done",
        f"{len(pairs)} skills -> {len(skills)} unique; {len(queries)} query types -> {len(unique_q)} unique",
    )
    return {"status": "clustered"}


async def save_sda_catalogs(state: ExtractionState, runtime: Runtime[RunContext]) -> dict:
    """Store the reviewed skill list (kind `skills`) and query types (kind `query_types`)."""
    ctx = runtime.context
    item = ctx.store.get_item(state["catalog_item"])
    p = item["payload"]
    name = ctx.config.bank_name or ctx.run_id
    skills_id = ctx.store.save_catalog(
        name,
        "skills",
        [
            {"name": c["name"], "category": c.get("subject") or "", "definition": c.get("definition") or ""}
            for c in p["final_clusters"]
        ],
        source=f"extract-skills {ctx.run_id}",
    )
    queries_id = ctx.store.save_catalog(
        name, "query_types", p["query_types"], source=f"extract-skills {ctx.run_id}"
    )
    ctx.store.link_run_catalog(ctx.run_id, skills_id, "skills")
    ctx.store.link_run_catalog(ctx.run_id, queries_id, "query_types")
    ctx.store.update_item(
        item["id"], status="done", payload_update={"skills_id": skills_id, "query_types_id": queries_id}
    )
    ctx.event(item["id"], "catalog", "done", f"{skills_id}, {queries_id}")
    return {"status": "done"}


# ---- routers ------------------------------------------------------------------------------------------
async def route_start(state: ExtractionState) -> Literal["label", "propose"]:
    return "label" if state.get("mode") == "dataset" else "propose"


async def route_ok(state: ExtractionState) -> Literal["next", "__end__"]:
    return "__end__" if state.get("status") in ("failed", "rejected") else "next"


async def route_after_review(state: ExtractionState) -> Literal["relabel", "save_catalogs", "__end__"]:
    if state.get("status") == "rejected":
        return "__end__"
    return "relabel" if state.get("mode") == "dataset" else "save_catalogs"


# ---- report -------------------------------------------------------------------------------------------
def run_report(store, run: dict, **_) -> dict:
    """Coarse skills with their exemplar counts; purity against true skills when the dataset has them."""
    questions = list(store.items(run["id"], kind=QUESTION_KIND))
    cat = next(iter(store.items(run["id"], kind=CATALOG_KIND)), None)
    payload = cat["payload"] if cat else {}
    statuses = Counter(q["status"] for q in questions)
    clusters = payload.get("final_clusters") or payload.get("clusters") or []
    per_skill = Counter(
        q["payload"].get("coarse_skill") for q in questions if q["payload"].get("coarse_skill")
    )
    table = [
        {
            "skill": c["name"],
            "subject": c.get("subject") or "",
            "exemplars": per_skill.get(c["name"], 0),
            "fine_labels": len(c.get("members") or []),
            "definition": c.get("definition") or "",
        }
        for c in clusters
    ]
    out = {
        "columns": ["skill", "subject", "exemplars", "fine_labels", "definition"],
        "table": table,
        "status": cat["status"] if cat else None,
        "questions": dict(statuses),
        "fine_labels": len(
            {q["payload"].get("fine_skill") for q in questions if q["payload"].get("fine_skill")}
        ),
        "coarse_skills": len(clusters),
        "bank_id": payload.get("bank_id"),
        "skills_id": payload.get("skills_id"),
        "query_types_id": payload.get("query_types_id"),
    }
    pairs = [
        (q["payload"]["coarse_skill"], q["payload"]["true_skill"])
        for q in questions
        if q["payload"].get("coarse_skill") and q["payload"].get("true_skill")
    ]
    if pairs:
        out["purity"] = round(_purity(pairs), 4)  # each coarse skill's majority true skill
        out["inverse_purity"] = round(
            _purity([(t, c) for c, t in pairs]), 4
        )  # each true skill's majority coarse
    return out


def _purity(pairs: list[tuple[str, str]]) -> float:
    groups: dict[str, Counter] = {}
    for cluster, truth in pairs:
        groups.setdefault(cluster, Counter())[truth] += 1
    return sum(c.most_common(1)[0][1] for c in groups.values()) / len(pairs)
