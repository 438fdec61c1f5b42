"""MATH² evaluation (docs/methods.md#math2-grading): solve source questions (X) and accepted MATH² questions (Y) with each model,
grade with an LLM judge that marks a solution wrong when its steps are wrong even if the final answer matches.

Design choices:
- An evaluation is a run (pipeline `math2-eval`); each (question, model) pair is an item of kind `math2.eval`
  (`combo_index` = question, `round` = model), so `items lineage` shows its solve and judge calls.
- The question list is re-derived from the run config (source runs, source-question set, limits), and model
  replies are reused from the store, so `eval math2 --resume RUN` finishes an interrupted evaluation for free.
- The judge's `Correct: Yes|No` decides correctness; the programmatic final-answer match is stored beside it
  (`answer_match`) so the two can be compared. An unparseable judge reply (after one retry) fails the item with
  that reason instead of counting as wrong.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from skillweave.agents.llm import RunContext, call_template
from skillweave.agents.math2 import KIND, answers_match, extract_boxed
from skillweave.agents.run_prompts import open_run_prompts
from skillweave.errors import ModelCallError, UsageError
from skillweave.metrics.math2 import EVAL_KIND
from skillweave.providers.core import close_clients

if TYPE_CHECKING:  # annotations only: the settings models load pydantic
    from skillweave.pipelines.math2 import Math2EvalConfig


def source_questions(store, config: Math2EvalConfig) -> list[dict]:
    """The X set (source questions) then the Y set (accepted MATH² questions), in a stable order."""
    out: list[dict] = []
    x_source = config.x_questions or "none"
    if x_source != "none":
        from skillweave.catalog.mathdata import bundled_questions, load_questions

        rows = bundled_questions("test") if x_source == "bundled" else load_questions(x_source)
        for row in rows[: config.x_limit or None]:
            out.append({"set": "x", "question": row["question"], "reference": row.get("solution") or row["answer"],
                        "reference_answer": row.get("answer"), "skills": [row.get("skill") or ""],
                        "source": f"{x_source}:{row.get('id', '')}"})
    y_items = []
    for run_id in config.source_runs:
        y_items += [i for i in store.items(run_id, kind=KIND, status="accepted")]
    if not y_items and config.source_runs:
        raise UsageError(f"run(s) {', '.join(config.source_runs)} have no accepted MATH² questions yet; "
                         "finish their review (`skillweave review list`) or run `skillweave run math2` first")
    for item in y_items[: config.limit or None]:
        p = item["payload"]
        out.append({"set": "y", "question": p["question"], "reference": p["solution"], "reference_answer": p.get("answer"),
                    "skills": item["skills"], "source": item["id"]})
    return out


def parse_judge(text: str) -> bool | None:
    found = re.findall(r"(?i)correct(?:ness)?\s*[:\-]\s*\**\s*(yes|no)\b", text or "")
    return None if not found else found[-1].lower() == "yes"


async def _evaluate_one(ctx: RunContext, q_index: int, m_index: int, question: dict, model: str) -> str:
    config, store = ctx.config, ctx.store
    item_id = store.ensure_item(ctx.run_id, EVAL_KIND, q_index, m_index, k=len(question["skills"]),
                                skills=question["skills"], topic=model,
                                payload={"model": model, "set": question["set"], "source": question["source"]})
    item = store.get_item(item_id)
    if item["status"] in ("done", "failed"):
        return item["status"]
    try:
        solve = await call_template(ctx, item_id=item_id, role="solver", template=config.solve_template,
                                    values={"question": question["question"]}, model=model,
                                    temperature=config.temperature, max_tokens=config.max_tokens)
        answer = extract_boxed(solve.text)
        verdict, raw, call_id = None, "", None
        for attempt in range(2):
            judged = await call_template(
                ctx, item_id=item_id, role="judge", template=config.judge_template, values={
                    "question": question["question"], "reference": question["reference"], "student": solve.text},
                model=config.judge, temperature=0.0, max_tokens=config.judge_max_tokens, key=(f"try{attempt}",))
            raw, call_id, verdict = judged.text, judged.call_id, parse_judge(judged.text)
            if verdict is not None:
                break
            ctx.event(item_id, "judge", "parse_failed", f"try {attempt + 1}: no verdict in the reply")
    except ModelCallError as exc:
        ctx.fail(item_id, "eval", exc)
        return "failed"
    match = answers_match(answer, question["reference_answer"]) if question["reference_answer"] else False
    store.add_grade(item_id, ctx.run_id, 0, call_id=call_id, judge=config.judge, raw=raw,
                    points=[int(bool(verdict))], score=float(bool(verdict)),
                    parse_status="ok" if verdict is not None else "unparsed")
    if verdict is None:
        store.update_item(item_id, status="failed", error="eval: unparseable judge reply",
                          payload_update={"solution": solve.text, "answer": answer, "answer_match": match,
                                          "reference_answer": question["reference_answer"]})
        ctx.event(item_id, "judge", "failed", f"unparseable: {raw.strip()[:160]!r}")
        return "failed"
    store.update_item(item_id, status="done", prompt_versions=[
        ctx.template(config.solve_template).version, ctx.template(config.judge_template).version],
        payload_update={"solution": solve.text, "answer": answer, "answer_match": match, "judged_correct": verdict,
                        "question": question["question"], "reference_answer": question["reference_answer"]})
    ctx.event(item_id, "judge", "graded", f"{'correct' if verdict else 'incorrect'}; answer {answer!r}")
    return "done"


async def evaluate(ctx: RunContext, concurrency: int = 8) -> dict[str, int]:
    questions = source_questions(ctx.store, ctx.config)
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(qi, mi, q, model):
        async with semaphore:
            return await _evaluate_one(ctx, qi, mi, q, model)

    try:
        results = await asyncio.gather(*(one(qi, mi, q, model) for qi, q in enumerate(questions)
                                         for mi, model in enumerate(ctx.config.models)))
    finally:
        await close_clients()  # HTTP sessions belong to this loop
    return {"items": len(results), "done": results.count("done"), "failed": results.count("failed")}


def run_eval(store, run_id: str, *, prompts_dir: str | None = None) -> dict[str, int]:
    from skillweave.pipelines import get_pipeline

    run = store.get_run(run_id)
    config = get_pipeline("math2-eval").load_config(run["config"])
    prompts = open_run_prompts(store, run_id, prompts_dir)  # a resumed evaluation keeps the run's templates
    ctx = RunContext(store=store, run_id=run_id, config=config, prompts_dir=prompts.prompts_dir,
                     max_concurrency=config.concurrency, pins=prompts.pins, scheme=prompts.scheme)
    store.set_run_status(run_id, "running")
    try:
        summary = asyncio.run(evaluate(ctx, config.concurrency))
    except BaseException as exc:
        store.set_run_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.set_run_status(run_id, "done")
    return summary
