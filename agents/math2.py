"""MATH² nodes (docs/methods.md#math2): pair -> pair check -> question -> attempt -> critic -> refine loop ->
consistency -> review -> accept; any failure drops the question with its stage and reason and draws a new pair.

Design choices:
- One graph thread per target question (`index`). A dropped question stays in the store as its own item
  (`combo_index = index`, `round = pair attempt`) with `status = dropped`, `error = "<stage>: <reason>"`, and the
  thread draws a new pair, at most `max_pairs` times. `events` log every transition with its reason.
- Roles are separate agents with their own model spec (`model` generator, `solver`, `critic`) and each sees
  exactly the context it needs; the paper runs every step as one conversation
  (docs/methods.md#math2-pipeline), but the consistency re-solves must be
  independent, and separate calls keep every step cacheable and resumable on its own.
- Pair sampling is seeded per (seed, index, attempt), so a resumed or repeated run draws the same pairs. The pair
  check (`pair_check`: rule | llm | off, unverified in the paper) rejects identical or near-duplicate names
  (token Jaccard >= `pair_similarity`) or asks a model.
- A reply without the expected field is retried (`parse_retries`, each try its own recorded call, logged as a
  `parse_failed` event); still unparseable -> dropped at that stage. Never coerced.
- Critic: one PASS/FAIL line per configurable criterion plus an overall verdict; a reply missing any criterion's
  verdict is unparseable (a bare "Verdict: PASS" is not a review); the question passes only if no criterion FAILs
  and the overall verdict, when given, is PASS. A fail refines the question (new round) while
  `round + 1 < max_rounds`, otherwise drops it.
- Consistency: `consistency_samples` independent re-solves; the majority answer must be held by more than half of
  them and equal the attempt's answer (unverified default). The first agreeing re-solve is the final solution.
- Review: `agents.review` (human interrupt / LLM / auto); an edit replaces question, solution or answer and the
  reviews row keeps before -> after.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.lazyplan import LazyPlan
from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.agents.review import record_decision, review_decision
from skillweave.errors import ModelCallError
from skillweave.pipelines.math2 import DEFAULT_CRITERIA, Math2Config  # noqa: F401  (DEFAULT_CRITERIA: re-exported)
from skillweave.store.payload import drop_update

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

KIND = "math2.question"



class Math2State(TypedDict, total=False):
    thread_id: str
    index: int
    attempt: int  # pair attempt: a dropped question draws a new pair
    item_id: str
    round: int  # refine round of the current question
    status: str
    drop_stage: str
    drop_reason: str


def plan_threads(ctx: RunContext) -> LazyPlan:
    """One thread per target question, produced as the runtime takes it (agents/lazyplan.py); items are created by
    `sample_pair` (one per pair attempt)."""
    run_id, n = ctx.run_id, int(ctx.config.n)
    return LazyPlan(n, lambda: (ThreadSpec(f"{run_id}:{i}", {"thread_id": f"{run_id}:{i}", "index": i, "attempt": 0})
                                for i in range(n)))


# ---- parsing ------------------------------------------------------------------------------------------
def extract_question(text: str) -> str | None:
    """The text after the last `Question:` marker, cut before any `Solution:`/`Answer:` section."""
    parts = re.split(r"(?im)^\W*question\s*:\**", text or "")
    if len(parts) < 2:
        return None
    question = re.split(r"(?im)^\W*(solution|answer|final answer)\s*:", parts[-1])[0].strip()
    return question or None


def extract_boxed(text: str) -> str | None:
    """The content of the last balanced \\boxed{...}, else a 'final answer is X' / 'The answer is X' phrase."""
    text = text or ""
    start = text.rfind("\\boxed{")
    if start >= 0:
        depth, i = 0, start + len("\\boxed{") - 1
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j].strip() or None
    match = re.findall(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", text, re.M)
    return match[-1].strip() if match else None


def normalize_answer(answer: str | None) -> str | None:
    """A canonical form for comparing final answers: LaTeX noise removed, numbers as reduced fractions."""
    if answer is None:
        return None
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    for noise in ("\\left", "\\right", "\\!", "\\,", "\\;", "^\\circ", "^{\\circ}", "\\%", "%", "\\$", "dollars"):
        s = s.replace(noise, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # thousands separators, not a tuple
        s = s.replace(",", "")
    fraction = re.fullmatch(r"\((-?[\d.]+)\)/\((-?[\d.]+)\)", s)
    if fraction:
        s = f"{fraction.group(1)}/{fraction.group(2)}"
    try:
        return str(Fraction(s))
    except (ValueError, ZeroDivisionError):
        return s.lower()


def answers_match(a: str | None, b: str | None) -> bool:
    na, nb = normalize_answer(a), normalize_answer(b)
    return na is not None and na == nb


def parse_verdicts(text: str, criteria: list[str]) -> tuple[list[dict], str | None]:
    """Per-criterion `{criterion, verdict, reason}` and the overall verdict (None when absent)."""
    found: dict[int, tuple[str, str]] = {}
    for match in re.finditer(r"(?im)^\W*(\d+)\s*[.):]\s*\**\s*(PASS|FAIL)\b\**\s*[-:–—]?\s*(.*)$", text or ""):
        found.setdefault(int(match.group(1)), (match.group(2).upper(), match.group(3).strip()))
    verdicts = [{"criterion": c, "verdict": found.get(i + 1, ("missing", ""))[0],
                 "reason": found.get(i + 1, ("", ""))[1]} for i, c in enumerate(criteria)]
    overall = re.findall(r"(?i)verdict\s*:\s*\**\s*(PASS|FAIL)", text or "")
    return verdicts, overall[-1].upper() if overall else None


def near_duplicate(a: str, b: str, threshold: float) -> bool:
    ta, tb = set(re.split(r"[\W_]+", a.lower())) - {""}, set(re.split(r"[\W_]+", b.lower())) - {""}
    return a.strip().lower() == b.strip().lower() or bool(ta | tb) and len(ta & tb) / len(ta | tb) >= threshold


# ---- bank and sampling --------------------------------------------------------------------------------
_BANKS: dict[tuple[str, str], dict[str, dict]] = {}


def run_bank(ctx: RunContext) -> dict[str, dict]:
    """skill name -> {name, definition, exemplars: [{question, answer}]} from the run's stored bank catalog."""
    key = (ctx.store.path, ctx.config.bank_catalog)
    if key not in _BANKS:
        catalog = ctx.store.get_catalog(ctx.config.bank_catalog)
        skills = {e["name"]: {"name": e["name"], "definition": e.get("definition") or "", "exemplars": []}
                  for e in catalog["entries"] if e.get("status") != "fine"}
        for x in catalog["exemplars"]:
            skills.setdefault(x["skill"], {"name": x["skill"], "definition": "", "exemplars": []})
            skills[x["skill"]]["exemplars"].append({"question": x["question"] or "", "answer": x["answer"] or ""})
        _BANKS[key] = skills
    return _BANKS[key]


def sample_pair_rows(bank: dict[str, dict], seed: int, index: int, attempt: int, exemplars_per_skill: int) -> list[dict]:
    """Two distinct skills, uniform over skills that have exemplars (all skills if fewer than two do)."""
    names = [n for n, s in bank.items() if s["exemplars"]]
    names = names if len(names) >= 2 else list(bank)
    rng = random.Random(f"math2:{seed}:{index}:{attempt}")
    rows = []
    for name in rng.sample(sorted(names), 2):
        skill = bank[name]
        shown = rng.sample(skill["exemplars"], min(exemplars_per_skill, len(skill["exemplars"])))
        rows.append({"name": name, "definition": skill["definition"], "exemplars": shown})
    return rows


# ---- config -------------------------------------------------------------------------------------------
TEMPLATES = ("pair_check", "qgen", "attempt", "validate", "refine", "solve", "review")


def default_config(bank_catalog: str, **overrides) -> dict:
    """A complete run config (tests and benchmarks build runs from it): the settings model's defaults, with
    `overrides` (None values ignored); `solver`/`critic` default to `model`."""
    settings = {k: v for k, v in overrides.items() if v is not None}
    return Math2Config(bank_catalog=bank_catalog, **settings).model_dump()


# ---- helpers ------------------------------------------------------------------------------------------
def _model(ctx: RunContext, role: str) -> str:
    """The model spec of a role setting (`model`, `solver` or `critic`; the latter two default to `model`)."""
    return getattr(ctx.config, role)


def _template(ctx: RunContext, name: str) -> str:
    return getattr(ctx.config, f"{name}_template")


async def _call(ctx, item_id, role, name, values, *, model_role="model", n=1, temperature=None, key=()):
    template = _template(ctx, name)
    reply = await call_template(ctx, item_id=item_id, role=role, template=template, values=values,
                                model=_model(ctx, model_role), n=n, max_tokens=ctx.config.max_tokens,
                                temperature=ctx.config.temperature if temperature is None else temperature, key=key)
    ctx.store.update_item(item_id, prompt_versions=[ctx.template(template).version])
    return reply


async def _parsed(ctx, item_id, role, name, values, parse, *, model_role="model", key=()):
    """Call, parse; an unparseable reply is logged and retried as a new recorded call."""
    text = ""
    for attempt in range(1 + ctx.config.parse_retries):
        reply = await _call(ctx, item_id, role, name, values, model_role=model_role, key=(*key, f"try{attempt}"))
        text = reply.text
        value = parse(text)
        if value is not None:
            return value, text
        ctx.event(item_id, role, "parse_failed", f"try {attempt + 1}: {text.strip()[:160]!r}")
    return None, text


def _drop(stage: str, reason: str) -> dict:
    return {"status": "drop", "drop_stage": stage, "drop_reason": reason}


def _item(ctx: RunContext, state: Math2State) -> dict:
    return ctx.store.get_item(state["item_id"])


# ---- nodes --------------------------------------------------------------------------------------------
async def sample_pair(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    index, attempt = state["index"], state.get("attempt", 0)
    rows = sample_pair_rows(run_bank(ctx), ctx.config.seed, index, attempt, ctx.config.exemplars_per_skill)
    item_id = ctx.store.ensure_item(ctx.run_id, KIND, index, attempt, k=2, skills=[r["name"] for r in rows],
                                    payload={"skill_rows": rows, "thread_id": state["thread_id"]})
    ctx.store.update_item(item_id, status="generating")
    ctx.event(item_id, "pair", "sampled", f"{rows[0]['name']} + {rows[1]['name']} (pair {attempt + 1})")
    return {"item_id": item_id, "round": 0, "status": "sampled", "drop_stage": "", "drop_reason": ""}


async def check_pair(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    item = _item(ctx, state)
    rows, mode = item["payload"]["skill_rows"], ctx.config.pair_check
    if mode == "rule" and near_duplicate(rows[0]["name"], rows[1]["name"], ctx.config.pair_similarity):
        return _drop("pair_check", f"near-duplicate skills {rows[0]['name']!r} and {rows[1]['name']!r}")
    if mode == "llm":
        skills = [{"name": r["name"], "definition": r["definition"]} for r in rows]
        try:
            verdict, text = await _parsed(ctx, item["id"], "pair_check", "pair_check", {"skills": skills},
                                          lambda t: (re.findall(r"(?i)verdict\s*:\s*\**\s*(INCOMPATIBLE|COMPATIBLE)", t)
                                                     or [None])[-1])
        except ModelCallError as exc:
            return ctx.fail(item["id"], "pair_check", exc)
        if verdict is None:
            return _drop("pair_check", "unparseable pair-check reply")
        if verdict.upper() == "INCOMPATIBLE":
            reason = (re.findall(r"(?i)reason\s*:\s*(.+)", text) or ["no reason given"])[-1].strip()
            return _drop("pair_check", f"judged incompatible: {reason}")
    ctx.event(item["id"], "pair_check", "passed", f"mode {mode}")
    return {"status": "pair_ok"}


async def generate_question(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    item = _item(ctx, state)
    try:
        question, raw = await _parsed(ctx, item["id"], "qgen", "qgen", {"skills": item["payload"]["skill_rows"]},
                                      extract_question)
    except ModelCallError as exc:
        return ctx.fail(item["id"], "qgen", exc)
    if question is None:
        return _drop("qgen", f"no 'Question:' in the generator's reply after {1 + ctx.config.parse_retries} tries")
    ctx.store.update_item(item["id"], payload_update={"question": question, "questions": [question], "qgen_raw": raw})
    ctx.event(item["id"], "qgen", "generated", question[:160])
    return {"status": "generated"}


async def solve_attempt(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx, round_ = runtime.context, state.get("round", 0)
    item = _item(ctx, state)
    try:
        reply = await _call(ctx, item["id"], "solver", "attempt", {"question": item["payload"]["question"]},
                            model_role="solver", key=(f"round{round_}",))
    except ModelCallError as exc:
        return ctx.fail(item["id"], "attempt", exc)
    answer = extract_boxed(reply.text)
    payload = item["payload"]
    attempts = [*payload.get("attempts", [])[:round_], reply.text]
    answers = [*payload.get("attempt_answers", [])[:round_], answer]
    ctx.store.update_item(item["id"], payload_update={"attempts": attempts, "attempt_answers": answers})
    ctx.event(item["id"], "attempt", "attempted",
                        f"round {round_ + 1}: answer {answer!r}" if answer else f"round {round_ + 1}: no final answer")
    return {"status": "attempted"}


async def validate(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx, round_ = runtime.context, state.get("round", 0)
    item = _item(ctx, state)
    payload, criteria = item["payload"], list(ctx.config.criteria)
    values = {"question": payload["question"], "skills": payload["skill_rows"], "attempt": payload["attempts"][round_],
              "criteria": criteria}

    def parse(text):  # every criterion needs its own verdict; a bare "Verdict: PASS" is not a review
        verdicts, overall = parse_verdicts(text, criteria)
        return None if any(v["verdict"] == "missing" for v in verdicts) else (verdicts, overall)

    try:
        parsed, raw = await _parsed(ctx, item["id"], "critic", "validate", values, parse, model_role="critic",
                                    key=(f"round{round_}",))
    except ModelCallError as exc:
        return ctx.fail(item["id"], "validate", exc)
    if parsed is None:
        return _drop("validate", "unparseable critic reply")
    verdicts, overall = parsed
    failures = [f"{i + 1}. {v['criterion']} ({v['reason'] or 'no reason'})" for i, v in enumerate(verdicts)
                if v["verdict"] == "FAIL"]
    passed = overall != "FAIL" and not failures
    if not passed and not failures:
        failures = ["overall verdict FAIL without a failing criterion"]
    history = [*payload.get("verdicts", [])[:round_], {"round": round_, "verdicts": verdicts, "overall": overall,
                                                        "passed": passed, "raw": raw}]
    ctx.store.update_item(item["id"], payload_update={"verdicts": history})
    if passed:
        ctx.event(item["id"], "validate", "passed", f"round {round_ + 1}: all criteria pass")
        return {"status": "valid"}
    ctx.event(item["id"], "validate", "failed", f"round {round_ + 1}: " + "; ".join(failures))
    if round_ + 1 < ctx.config.max_rounds:
        return {"status": "refine"}
    return _drop("validate", f"still failing after {round_ + 1} round(s): " + "; ".join(failures))


async def refine(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx, round_ = runtime.context, state.get("round", 0)
    item = _item(ctx, state)
    payload = item["payload"]
    last = payload["verdicts"][round_]
    failures = [f"{v['criterion']} {v['reason']}".strip() for v in last["verdicts"] if v["verdict"] == "FAIL"] \
        or ["the reviewer's overall verdict was FAIL"]
    values = {"question": payload["question"], "skills": payload["skill_rows"], "attempt": payload["attempts"][round_],
              "failures": failures}
    try:
        question, _ = await _parsed(ctx, item["id"], "refine", "refine", values, extract_question,
                                    key=(f"round{round_}",))
    except ModelCallError as exc:
        return ctx.fail(item["id"], "refine", exc)
    if question is None:
        return _drop("refine", "no 'Question:' in the refine reply")
    questions = [*payload.get("questions", [])[:round_ + 1], question]
    ctx.store.update_item(item["id"], payload_update={"question": question, "questions": questions})
    ctx.event(item["id"], "refine", "refined", f"round {round_ + 2}: {question[:140]}")
    return {"status": "refined", "round": round_ + 1}


async def final_solution(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx, round_ = runtime.context, state.get("round", 0)
    item = _item(ctx, state)
    payload, k = item["payload"], int(ctx.config.consistency_samples)
    try:
        reply = await _call(ctx, item["id"], "resolver", "solve", {"question": payload["question"]},
                            model_role="solver", n=k, temperature=ctx.config.solve_temperature,
                            key=(f"round{round_}",))
    except ModelCallError as exc:
        return ctx.fail(item["id"], "consistency", exc)
    answers = [extract_boxed(t) for t in reply.texts]
    attempt_answer = payload["attempt_answers"][round_]
    counts = Counter(normalize_answer(a) for a in answers if a is not None)
    majority, votes = counts.most_common(1)[0] if counts else (None, 0)
    agreed = majority is not None and votes * 2 > len(answers) and majority == normalize_answer(attempt_answer)
    ctx.store.update_item(item["id"], payload_update={"resolves": reply.texts, "resolve_answers": answers})
    detail = f"re-solves {answers}, attempt {attempt_answer!r}, majority {majority!r} ({votes}/{len(answers)})"
    if not agreed:
        return _drop("consistency", detail)
    final = next(t for t, a in zip(reply.texts, answers, strict=True) if normalize_answer(a) == majority)
    ctx.store.update_item(item["id"], payload_update={"solution": final, "answer": extract_boxed(final)})
    ctx.event(item["id"], "consistency", "agreed", detail)
    return {"status": "consistent"}


async def review(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx, round_ = runtime.context, state.get("round", 0)
    item = _item(ctx, state)
    p = item["payload"]
    current = {"question": p["question"], "solution": p["solution"], "answer": p.get("answer") or ""}
    verdict_text = "\n".join(f"{i + 1}. {v['verdict']} - {v['criterion']} {v['reason']}".rstrip()
                             for i, v in enumerate(p["verdicts"][round_]["verdicts"]))
    context = [
        {"label": "Skills", "text": " + ".join(r["name"] for r in p["skill_rows"])},
        *({"label": f"Question, round {i + 1}", "text": q} for i, q in enumerate(p.get("questions", [])[:-1])),
        *({"label": f"Solver attempt, round {i + 1}", "text": a} for i, a in enumerate(p.get("attempts", []))),
        *({"label": f"Critic verdicts, round {v['round'] + 1} ({'PASS' if v['passed'] else 'FAIL'})",
           "text": "\n".join(f"{i + 1}. {c['verdict']} - {c['criterion']} {c['reason']}".rstrip()
                             for i, c in enumerate(v["verdicts"]))} for v in p.get("verdicts", [])),
        {"label": "Independent re-solves", "text": "\n---\n".join(p.get("resolves", []))},
    ]
    values = {"question": current["question"], "skills": p["skill_rows"], "solution": current["solution"],
              "answer": current["answer"], "verdicts": verdict_text}
    decision = await review_decision(ctx, item, thread_id=state["thread_id"], pipeline="math2", editable=current,
                                     context=context, template=_template(ctx, "review"), values=values)
    changes = record_decision(ctx, item["id"], decision, current)
    if decision["action"] == "reject":
        return _drop("review", f"rejected by {decision.get('reviewer')}: {decision.get('reason')}")
    update = {field: change["after"] for field, change in changes.items()}
    ctx.store.update_item(item["id"], status="approved", payload_update={**update, "reviewed_by": decision.get("reviewer")})
    return {"status": "approved"}


async def accept(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    ctx.store.update_item(state["item_id"], status="accepted", error=None)
    ctx.event(state["item_id"], "store", "accepted", f"after {state.get('round', 0) + 1} round(s)")
    return {"status": "accepted"}


async def drop(state: Math2State, runtime: Runtime[RunContext]) -> dict:
    """Mark the question dropped with its stage and reason; draw a new pair while attempts remain."""
    ctx = runtime.context
    stage, reason = state.get("drop_stage") or "unknown", state.get("drop_reason") or ""
    ctx.store.update_item(state["item_id"], status="dropped", error=f"{stage}: {reason}",
                          payload_update=drop_update(stage, reason))
    ctx.event(state["item_id"], stage, "dropped", reason)
    attempt = state.get("attempt", 0)
    if attempt + 1 < ctx.config.max_pairs:
        return {"status": "resample", "attempt": attempt + 1}
    return {"status": "dropped"}


# ---- routers ------------------------------------------------------------------------------------------
def _route(state: Math2State, following: str) -> str:
    status = state.get("status")
    return "drop" if status == "drop" else "__end__" if status == "failed" else following


async def route_after_check(state: Math2State) -> Literal["qgen", "drop", "__end__"]:
    return _route(state, "qgen")


async def route_after_qgen(state: Math2State) -> Literal["attempt", "drop", "__end__"]:
    return _route(state, "attempt")


async def route_after_attempt(state: Math2State) -> Literal["validate", "__end__"]:
    return _route(state, "validate")


async def route_after_validate(state: Math2State) -> Literal["final", "refine", "drop", "__end__"]:
    return _route(state, "refine" if state.get("status") == "refine" else "final")


async def route_after_refine(state: Math2State) -> Literal["attempt", "drop", "__end__"]:
    return _route(state, "attempt")


async def route_after_final(state: Math2State) -> Literal["review", "drop", "__end__"]:
    return _route(state, "review")


async def route_after_review(state: Math2State) -> Literal["accept", "drop"]:
    return "drop" if state.get("status") == "drop" else "accept"


async def route_after_drop(state: Math2State) -> Literal["pair", "__end__"]:
    return "pair" if state.get("status") == "resample" else "__end__"
