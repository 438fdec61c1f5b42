"""Skill-based exemplar retrieval solver with fixed and random exemplar baselines,
answer matching, an optional LLM judge, and the accuracy report per method and per skill.

Design choices
- One graph thread per (question, method): an item `solve.answer` with its own calls, so every answer has
  lineage (the picked skill, the exemplars shown, the solver call, the judge call).
- `skill`: the model sees the bank's skill list (all skills, or with `skill_list=subject` only the skills of
  the question's subject when the dataset has subjects) and names one; k random exemplars of that skill are
  shown. A pick that does not parse is retried (`parse_retries`) and then falls back to random exemplars,
  recorded as `pick_failed` (never silently counted as a skill pick).
- `random`: k exemplars drawn uniformly from the whole bank. `fixed`: one seeded draw of k exemplars reused
  for every question. `subject` (topic-based baseline): k random exemplars of skills in the question's subject
  (the whole bank when the subject has none). All draws are seeded by (seed, question id), so runs are reproducible; a bank exemplar
  whose question is the question being solved is never shown.
- Defaults: k = 4 (MATH setting; 8 for GSM8K, unverified), greedy decoding, chain-of-thought ending with
  "The answer is X." Matching: the final answer is read from "The answer is", \\boxed{}, "Answer:", else the
  last number; numbers compare as exact fractions (0.5 = 1/2 = \\frac{1}{2}), other answers as normalised text.
"""

from __future__ import annotations

import math
import random
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.lazyplan import LazyPlan
from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.agents.skill_parsing import parse_choice
from skillweave.catalog.bank import Bank, bank_from_catalog
from skillweave.errors import ModelCallError, ParseFailure
from skillweave.store import stable_id

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

KIND = "solve.answer"
METHODS = ("skill", "random", "fixed", "subject")


class SolveState(TypedDict, total=False):
    item_id: str
    status: str


# ---- answers ------------------------------------------------------------------------------------------
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?"


def extract_final_answer(text: str) -> str:
    """The final answer a solution states (empty when it states none)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for pattern in (r"the (?:final )?answer is[:\s]*\$?([^\n$]+)", r"answer\s*:\s*\$?([^\n$]+)"):
        matches = re.findall(pattern, text, re.I)
        if matches:
            # the answer ends at the first sentence break ("The answer is 2. Next problem: ...")
            return re.split(r"\.\s|\.$", matches[-1].strip(), maxsplit=1)[0].strip()
    numbers = re.findall(_NUMBER, text)
    return numbers[-1].strip() if numbers else ""


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def as_number(text: str) -> Fraction | None:
    """'1,234' '0.5' '3/4' '\\frac{3}{4}' '-7' '42 dollars' -> a Fraction; None when it is not a number."""
    t = text.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", t.replace(" ", ""))
    if frac:
        value = Fraction(int(frac.group(2)), int(frac.group(3)))
        return -value if frac.group(1) else value
    match = re.match(rf"^\s*({_NUMBER})", t)
    if not match:
        return None
    number = match.group(1).replace(",", "").replace(" ", "")
    rest = t[match.end() :].strip().rstrip(".").strip()
    if rest and not re.fullmatch(r"[a-zA-Z%°\s^²]*", rest):  # "3x + 1" is not the number 3
        return None
    try:
        return Fraction(number) if "/" not in number else Fraction(*map(int, number.split("/")))
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, reference: str) -> bool:
    if not predicted.strip():
        return False
    a, b = as_number(predicted), as_number(reference)
    if a is not None and b is not None:
        return a == b

    def norm(s: str) -> str:
        return re.sub(r"[\s$.{}\\]", "", s.lower().replace("\\text", ""))

    return norm(predicted) == norm(reference)


def parse_verdict(text: str) -> bool:
    match = re.search(r"verdict\s*:\s*\**\s*(correct|incorrect|wrong|right)", text, re.I)
    if not match:
        raise ParseFailure(f"no 'Verdict: correct|incorrect' in judge reply {text.strip()[:120]!r}")
    return match.group(1).lower() in ("correct", "right")


# ---- exemplar choice ----------------------------------------------------------------------------------
def choose_exemplars(
    bank: Bank,
    method: str,
    question: str,
    question_id: str,
    k: int,
    seed: int,
    skill: str | None = None,
    subject: str | None = None,
) -> list[int]:
    """Indices into `bank.exemplars` for one question (never the question itself)."""
    pool = [i for i, x in enumerate(bank.exemplars) if x.question != question]
    if method == "subject":  # topic-based baseline: exemplars of the question's subject
        subjects = {s.name: s.subject for s in bank.skills}
        same = [i for i in pool if subjects.get(bank.exemplars[i].skill) == subject]
        pool = same or pool
    if method == "fixed":
        fixed = random.Random(f"fixed:{seed}").sample(
            range(len(bank.exemplars)), min(len(bank.exemplars), k + 1)
        )
        return [i for i in fixed if bank.exemplars[i].question != question][:k]
    rng = random.Random(f"{method}:{seed}:{question_id}")
    if method == "skill" and skill is not None:
        pool = [i for i in pool if bank.exemplars[i].skill == skill]
    return sorted(rng.sample(pool, min(k, len(pool))))


_BANKS: dict[str, Bank] = {}


def _bank(ctx: RunContext) -> Bank:
    catalog_id = ctx.config.bank_catalog
    if catalog_id not in _BANKS:
        _BANKS[catalog_id] = bank_from_catalog(ctx.store.get_catalog(catalog_id))
    return _BANKS[catalog_id]


# ---- plan and nodes -----------------------------------------------------------------------------------
def plan_threads(ctx: RunContext) -> LazyPlan:
    """One thread per (method, question), produced as the runtime takes it (agents/lazyplan.py): the item is
    created then, in the same order with the same ids."""
    store, config = ctx.store, ctx.config
    entries = store.get_catalog(config.dataset_catalog)["entries"]
    methods = list(config.methods)
    return LazyPlan(len(methods) * len(entries), lambda: _solve_threads(ctx, methods, entries))


def _solve_threads(ctx: RunContext, methods: list[str], entries: list[dict]):
    store, config = ctx.store, ctx.config
    for m, method in enumerate(methods):
        for i, e in enumerate(entries):
            item_id = store.ensure_item(
                ctx.run_id,
                KIND,
                i,
                m,
                topic=e["category"] or "",
                skills=[e["extra"].get("skill")] if e["extra"].get("skill") else [],
                payload={
                    "method": method,
                    "question_id": e["name"],
                    "question": e["definition"],
                    "answer": e["example"] or "",
                    "subject": e["category"] or "",
                    "true_skill": e["extra"].get("skill"),
                    **({"retrieved_skills": e["extra"].get("retrieved_skills")} if config.retrieval_file
                       else {}),
                },
            )
            yield ThreadSpec(f"{ctx.run_id}:{i}:{method}", {"item_id": item_id})


async def pick_skill(state: SolveState, runtime: Runtime[RunContext]) -> dict:
    """Skill method only: the model names the skill it needs from the bank's list."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    p = item["payload"]
    if p["method"] != "skill" or "picked_skill" in p:
        return {"status": "picked"}
    bank = _bank(ctx)
    if config.retrieval_file:
        return _pick_from_retrieval(ctx, item, bank)
    options = bank.skills
    if config.skill_list == "subject" and p["subject"]:
        options = [s for s in bank.skills if s.subject == p["subject"]] or bank.skills
    names = [s.name for s in options]
    values = {
        "question": p["question"],
        "skills": [{"name": s.name, "definition": s.definition} for s in options],
    }
    template = config.pick_template
    errors = []
    for attempt in range(int(config.parse_retries) + 1):
        try:
            reply = await call_template(
                ctx,
                item_id=item["id"],
                role="pick_skill",
                template=template,
                values=values,
                model=config.model,
                temperature=0.0 if attempt == 0 else 0.7,
                max_tokens=32,
                key=(attempt,) if attempt else (),
            )
        except ModelCallError as exc:
            return ctx.fail(item["id"], "pick_skill", exc)
        try:
            skill = parse_choice(reply.text, names)
        except ParseFailure as exc:
            errors.append(str(exc))
            ctx.event(item["id"], "pick_skill", "parse_failed", str(exc))
            continue
        ctx.store.update_item(
            item["id"],
            prompt_versions=[ctx.template(template).version],
            payload_update={"picked_skill": skill, "pick_call_id": reply.call_id},
        )
        return {"status": "picked"}
    ctx.store.update_item(
        item["id"],
        prompt_versions=[ctx.template(template).version],
        payload_update={"picked_skill": None, "pick_failed": errors[-1]},
    )
    ctx.event(
        item["id"], "pick_skill", "pick_failed", "falling back to random exemplars"
    )
    return {"status": "picked"}


def _pick_from_retrieval(ctx: RunContext, item: dict, bank) -> dict:
    """`--retrieval FILE`: the question's skill comes from the AdaptMI retrieval file (its first listed skill
    that the bank has), no model call. A question the file lacks, or whose skills the bank lacks, falls back
    to random exemplars and is recorded as `pick_failed` with the reason."""
    retrieved = item["payload"].get("retrieved_skills")
    names = {s.name for s in bank.skills} | {x.skill for x in bank.exemplars}
    skill = next((s for s in retrieved or [] if s in names), None)
    if skill is not None:
        ctx.store.update_item(item["id"], payload_update={"picked_skill": skill, "pick_source": "retrieval"})
        return {"status": "picked"}
    reason = ("question not in the retrieval file" if retrieved is None
              else f"retrieved skills {retrieved} are not in the bank")
    ctx.store.update_item(item["id"], payload_update={"picked_skill": None, "pick_failed": reason,
                                                      "pick_source": "retrieval"})
    ctx.event(item["id"], "pick_skill", "pick_failed", f"{reason}; random exemplars")
    return {"status": "picked"}


async def solve(state: SolveState, runtime: Runtime[RunContext]) -> dict:
    """Retrieve k exemplars, solve with chain of thought, grade by answer matching (and the judge if set)."""
    ctx, config = runtime.context, runtime.context.config
    item = ctx.store.get_item(state["item_id"])
    p = item["payload"]
    bank = _bank(ctx)
    method = p["method"]
    skill = p.get("picked_skill")
    retrieval = "random" if method == "skill" and skill is None else method
    chosen = choose_exemplars(
        bank,
        retrieval,
        p["question"],
        p["question_id"],
        int(config.k),
        int(config.seed),
        skill=skill,
        subject=p["subject"],
    )
    exemplars = [{"question": bank.exemplars[i].question, "answer": bank.exemplars[i].answer} for i in chosen]
    template = config.solve_template
    try:
        reply = await call_template(
            ctx,
            item_id=item["id"],
            role="solver",
            template=template,
            values={"question": p["question"], "exemplars": exemplars},
            model=config.model,
            temperature=float(config.temperature),
            max_tokens=int(config.max_tokens),
        )
    except ModelCallError as exc:
        return ctx.fail(item["id"], "solve", exc)
    predicted = extract_final_answer(reply.text)
    correct = answers_match(predicted, p["answer"])
    versions = [ctx.template(template).version]
    ctx.store.add_grade(
        item["id"],
        ctx.run_id,
        0,
        call_id=reply.call_id,
        judge="match",
        raw=predicted,
        points=[int(correct)],
        score=float(correct),
        parse_status="ok" if predicted else "no_answer",
    )
    judged = None
    if config.judge:
        judge_template = config.judge_template
        try:
            jreply = await call_template(
                ctx,
                item_id=item["id"],
                role="judge",
                template=judge_template,
                values={"question": p["question"], "reference": p["answer"], "response": reply.text},
                model=config.judge,
                temperature=0.0,
                max_tokens=16,
            )
            judged = parse_verdict(jreply.text)
            status = "ok"
        except ModelCallError as exc:
            return ctx.fail(item["id"], "judge", exc)
        except ParseFailure as exc:
            status = "parse_failed"
            ctx.event(item["id"], "judge", "parse_failed", str(exc))
        ctx.store.add_grade(
            item["id"],
            ctx.run_id,
            1,
            call_id=jreply.call_id,
            judge=config.judge,
            raw=jreply.text,
            points=[int(bool(judged))],
            score=float(bool(judged)),
            parse_status=status,
        )
        versions.append(ctx.template(judge_template).version)
    ctx.store.update_item(
        item["id"],
        status="done",
        prompt_versions=versions,
        payload_update={
            "retrieval": retrieval,
            "exemplar_indices": chosen,
            "bank_catalog": config.bank_catalog,
            "exemplar_skills": [bank.exemplars[i].skill for i in chosen],
            "response": reply.text,
            "predicted": predicted,
            "correct": correct,
            "judge_correct": judged,
            "solve_call_id": reply.call_id,
        },
    )
    ctx.event(
        item["id"], "solve", "done", f"{method}: {predicted!r} vs {p['answer']!r}"
    )
    return {"status": "done"}


async def route_after_pick(state: SolveState) -> Literal["solve", "__end__"]:
    return "__end__" if state.get("status") == "failed" else "solve"


# ---- report -------------------------------------------------------------------------------------------
def _ci(p: float, n: int) -> float:
    return 1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0


def run_report(store, run: dict, **_) -> dict:
    """Accuracy per method (± binomial 95% CI) and per method x skill; skill-pick accuracy when known."""
    from skillweave.pipelines.skill_extraction import SOLVE_PIPELINE

    config = SOLVE_PIPELINE.load_config(run["config"])
    use_judge = bool(config.judge)
    groups: dict[tuple[str, str], list[int]] = {}
    picks: dict[str, list[int]] = {}
    failed: dict[str, int] = {}
    for item in store.items(run["id"], kind=KIND):
        p = item["payload"]
        method = p["method"]
        if item["status"] != "done":
            failed[method] = failed.get(method, 0) + 1
            continue
        ok = int(
            bool(p["judge_correct"] if use_judge and p.get("judge_correct") is not None else p["correct"])
        )
        skill = p.get("true_skill") or p.get("picked_skill") or "(none)"
        groups.setdefault((method, "ALL"), []).append(ok)
        groups.setdefault((method, skill), []).append(ok)
        if method == "skill" and p.get("true_skill"):
            picks.setdefault("ALL", []).append(int(p.get("picked_skill") == p["true_skill"]))
    order = {m: i for i, m in enumerate(config.methods)}
    table = []
    for (method, skill), oks in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1] != "ALL", kv[0][1])
    ):
        acc = sum(oks) / len(oks)
        table.append(
            {
                "method": method,
                "skill": skill,
                "n": len(oks),
                "correct": sum(oks),
                "accuracy": round(acc, 4),
                "ci95": round(_ci(acc, len(oks)), 4),
                "failed": failed.get(method, 0) if skill == "ALL" else "",
            }
        )
    summary = {
        r["method"]: {"accuracy": r["accuracy"], "ci95": r["ci95"], "n": r["n"]}
        for r in table
        if r["skill"] == "ALL"
    }
    pick = (
        {"n": len(picks.get("ALL", [])), "accuracy": round(sum(picks["ALL"]) / len(picks["ALL"]), 4)}
        if picks.get("ALL")
        else None
    )
    return {
        "columns": ["method", "skill", "n", "correct", "accuracy", "ci95", "failed"],
        "table": table,
        "summary": summary,
        "skill_pick": pick,
        "graded_by": config.judge or "match",
    }


def dataset_entries(questions: list[dict]) -> list[dict]:
    """Question rows -> `questions` catalog entries (name = id, category = subject, question, answer)."""
    return [
        {
            "name": str(q["id"]),
            "category": q.get("subject") or "",
            "definition": q["question"],
            "example": str(q.get("answer") or ""),
            "extra": {k: v for k, v in q.items() if k not in ("id", "subject", "question", "answer")},
        }
        for q in questions
    ]


def dataset_key(questions: list[dict]) -> str:
    return stable_id([q["question"] for q in questions], length=12)
