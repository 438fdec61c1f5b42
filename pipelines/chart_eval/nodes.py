"""Chart evaluation nodes (docs/methods.md#chart-eval): ask a multimodal model about each chart, then grade.

Design choices
- One graph thread per grading unit: a batch of up to `batch_size` (5) descriptive questions that share a
  template, or one reasoning question. The batch's questions are asked concurrently (one recorded call each,
  image inline), then graded by one judge call, so the judge batching of CharXiv and LangGraph's
  one-thread-per-record resume both hold. Batches are fixed at plan time from the sorted question keys.
- Questions are items (`chart.descriptive` / `chart.reasoning`) created once per run from the data folder;
  the payload keeps the question, the response, the programmatic grade and the judge's extraction.
  Grades are rows in `grades`: `judge=<judge spec>` (score 1/0/-1) and `judge="programmatic"` (1/0).
- Judge: temperature 0, `seed=42`, `top_p=1`, `judge_max_tokens` (256) doubled on a truncated JSON reply up to
  1024, at most `judge_retries` (10) tries; after that every question of the batch scores -1
  (`parse_status="invalid"`, the last reason in the item's `judge_error`), which reports count as wrong and
  tally in N_invalid. The reply is typed (charts.grading's judge schemas, agents/structured.py): OpenAI-compatible
  judges get the schema as `response_format` (a JSON-schema output in place of the reference's `json_object`
  mode), and a reply that does not validate gets one repair turn quoting the error before the next try (not
  when it was cut off: that try doubles the budget instead). Every failed reply is a `parse_failed` event.
- A model call that fails after the provider's retries leaves the response empty: the question is graded 0
  (`parse_status="no_response"`) without a judge call, and the failure is an event with its reason. The item
  ends `failed` (with the call's error) and so does its thread, so the run exits 3 and `resume --retry-failed`
  asks again.
- `blind=True` sends the question without the image: a text-only baseline (the questions' priors), which
  also lets the text-only embedded model run the pipeline.
- `grading="programmatic"` skips the judge for questions with exact answers (the judge still grades the
  rest); `"both"` (default) records both; `"judge"` records only the judge.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from skillweave.agents.llm import RunContext, ThreadSpec, call_template
from skillweave.agents.structured import StructuredFailure, call_structured
from skillweave.charts.charxiv import DESCRIPTIVE_TEMPLATES, ChartQuestion, load_release
from skillweave.charts.grading import (
    descriptive_from_model,
    descriptive_judge_schema,
    exact_method,
    extract_final_answer,
    looks_truncated,
    programmatic_grade,
    reasoning_from_model,
    reasoning_judge_schema,
)
from skillweave.errors import ModelCallError

if TYPE_CHECKING:  # annotations only: importing LangGraph here would slow every CLI command
    from langgraph.runtime import Runtime

    from skillweave.pipelines.chart_eval import ChartEvalConfig

KINDS = {"descriptive": "chart.descriptive", "reasoning": "chart.reasoning"}
ASK, JUDGE_D, JUDGE_R = "chart_eval/ask", "chart_eval/judge_descriptive", "chart_eval/judge_reasoning"
PROGRAMMATIC = "programmatic"
FAILED_EXTRACTION = "Failed to parse response"


class ChartEvalState(TypedDict, total=False):
    item_ids: list[str]
    mode: str
    status: str


def create_items(ctx: RunContext) -> None:
    """Load the run's data folder once and store one item per question (idempotent by key)."""
    config, store = ctx.config, ctx.store
    release = load_release(config.data, config.split)
    modes = ("descriptive", "reasoning") if config.mode == "both" else (config.mode,)
    questions = release.questions(modes)
    if config.limit:
        keep = list(dict.fromkeys(q.figure_id for q in questions))[: int(config.limit)]
        questions = [q for q in questions if q.figure_id in set(keep)]
    for index, q in enumerate(questions):
        store.ensure_item(ctx.run_id, KINDS[q.mode], index, 0, topic=q.key,
                          payload={"question": {**q.to_dict(), "image_path": str(Path(q.image_path).resolve())}})


def plan_threads(ctx: RunContext) -> list[ThreadSpec]:
    """Descriptive items in batches per template, reasoning items one per thread."""
    if not any(True for _ in ctx.store.items(ctx.run_id)):
        create_items(ctx)
    batch_size = int(ctx.config.batch_size)
    by_qid: dict[int, list[str]] = {}
    threads = []
    for item in ctx.store.items(ctx.run_id):
        q = item["payload"]["question"]
        if q["mode"] == "descriptive":
            by_qid.setdefault(int(q["qid"]), []).append(item["id"])
        else:
            threads.append(ThreadSpec(f"{ctx.run_id}:r:{q['key']}", {"item_ids": [item["id"]], "mode": "reasoning"}))
    for qid, ids in sorted(by_qid.items()):
        for start in range(0, len(ids), batch_size):
            threads.append(ThreadSpec(f"{ctx.run_id}:d{qid}:{start // batch_size}",
                                      {"item_ids": ids[start:start + batch_size], "mode": "descriptive"}))
    return threads


def _image_part(path: str) -> dict:
    suffix = Path(path).suffix.lower().lstrip(".") or "jpeg"
    mime = "image/jpeg" if suffix in ("jpg", "jpeg") else f"image/{suffix}"
    return {"type": "image", "mime": mime, "data": base64.b64encode(Path(path).read_bytes()).decode()}


async def ask(state: ChartEvalState, runtime: Runtime[RunContext]) -> dict:
    """Ask the model each question of the thread (image inline); responses are stored as they arrive."""
    ctx, config = runtime.context, runtime.context.config

    async def one(item_id: str) -> None:
        item = ctx.store.get_item(item_id)
        if item["payload"].get("response") is not None:  # answered before; a failed ask is tried again
            return
        q = ChartQuestion.from_dict(item["payload"]["question"])
        try:
            reply = await call_template(
                ctx, item_id=item_id, role="model", template=ASK, values={"question": q.question, "rules": q.rules},
                model=config.model, temperature=config.temperature,
                max_tokens=config.max_tokens,
                images=None if config.blind else [_image_part(q.image_path)],
            )
            response, call_id, error = reply.text, reply.call_id, None
        except (ModelCallError, OSError) as exc:
            response, call_id, error = None, getattr(exc, "call_id", None), str(exc)
            ctx.event(item_id, "ask", "failed", error)
        ctx.store.update_item(item_id, status="answered" if error is None else "no_response", error=error,
                              prompt_versions=[ctx.template(ASK).version],
                              payload_update={"response": response, "response_call_id": call_id})

    await asyncio.gather(*(one(i) for i in state["item_ids"]))
    return {"status": "answered"}


def _record_programmatic(ctx: RunContext, item: dict, q: ChartQuestion, response: str | None) -> dict | None:
    graded = programmatic_grade(q, response)
    if graded is not None:
        ctx.store.add_grade(item["id"], ctx.run_id, 0, judge=PROGRAMMATIC, raw=graded["extracted"],
                            points=[graded["score"]], score=float(graded["score"]), parse_status=graded["method"])
    return graded


def _finish(ctx: RunContext, item_id: str, judge: str, score: int | None, extracted: str, status: str,
            call_id: str | None, raw: str | None, reason: str | None = None, *, failed: bool = False) -> None:
    """Grade an item and end it: `done`, or `failed` when its model call failed (it keeps that error)."""
    if score is not None:
        ctx.store.add_grade(item_id, ctx.run_id, 0, judge=judge, call_id=call_id, raw=raw, points=[score],
                            score=float(score), parse_status=status)
    ctx.store.update_item(item_id, status="failed" if failed else "done",
                          payload_update={"judge_extracted": extracted, "judge_status": status,
                                          **({"judge_error": reason} if reason else {})})
    ctx.event(item_id, "grade", "done", status)


async def _judge_call(ctx: RunContext, item_id: str, template: str, values: dict, schema, check):
    """Call the judge until its reply validates against `schema` (one repair turn per try): double max_tokens
    on truncation, stop after `judge_retries` tries. Returns (value or None, call id, raw, last reason)."""
    config = ctx.config
    max_tokens, limit = int(config.judge_max_tokens), int(config.judge_max_tokens_cap)
    last_raw, last_call, reason = None, None, None
    for attempt in range(int(config.judge_retries)):
        try:
            parsed, reply = await call_structured(
                ctx, schema=schema, check=check, repair_if=lambda text: not looks_truncated(text),
                item_id=item_id, role="judge", template=template, values=values, model=config.judge,
                temperature=0.0, max_tokens=max_tokens, options={"json": True, "seed": 42, "top_p": 1.0},
                key=("attempt", attempt))
            return parsed, reply.call_id, reply.text, None
        except ModelCallError as exc:
            last_raw, last_call, reason = str(exc), exc.call_id, str(exc)
            continue
        except StructuredFailure as exc:
            last_raw, last_call, reason = exc.raw, exc.call_id, str(exc)
            if looks_truncated(exc.raw):
                if max_tokens >= limit:
                    break
                max_tokens = min(limit, max_tokens * 2)
    return None, last_call, last_raw, reason


def _use_judge(config: ChartEvalConfig, q: ChartQuestion) -> bool:
    return config.grading != PROGRAMMATIC or exact_method(q) is None


async def judge_descriptive(state: ChartEvalState, runtime: Runtime[RunContext]) -> dict:
    """Programmatic grades, then one judge call for the batch (same template) with that template's rubric."""
    ctx, config = runtime.context, runtime.context.config
    judge = config.judge
    pending, no_response = [], False
    for item_id in state["item_ids"]:
        item = ctx.store.get_item(item_id)
        q = ChartQuestion.from_dict(item["payload"]["question"])
        response = item["payload"].get("response")
        programmatic = _record_programmatic(ctx, item, q, response) if config.grading != "judge" else None
        if q.answer is None:
            _finish(ctx, item_id, judge, None, "", "ungraded", None, None)
        elif response is None:
            _finish(ctx, item_id, judge, 0, "", "no_response", None, None, failed=True)
            no_response = True
        elif not _use_judge(config, q):
            _finish(ctx, item_id, PROGRAMMATIC, None, programmatic["extracted"], "programmatic", None, None)
        else:
            pending.append((item_id, q, response))
    if pending:
        qid = pending[0][1].qid
        pairs = [{"response": r, "answer": q.answer, "extracted": extract_final_answer(r)} for _, q, r in pending]
        values = {"n": len(pending), "question": DESCRIPTIVE_TEMPLATES[qid]["short"],
                  "rubric": DESCRIPTIVE_TEMPLATES[qid]["rubric"], "pairs": pairs}
        parsed, call_id, raw, reason = await _judge_call(ctx, pending[0][0], JUDGE_D, values,
                                                         descriptive_judge_schema(len(pending)),
                                                         descriptive_from_model)
        with ctx.store.transaction():
            for i, (item_id, _, _) in enumerate(pending):
                if parsed is None:
                    _finish(ctx, item_id, judge, -1, FAILED_EXTRACTION, "invalid", call_id, raw, reason)
                else:
                    _finish(ctx, item_id, judge, parsed[i]["score"], parsed[i]["extracted"], "ok", call_id, raw)
                ctx.store.update_item(item_id, prompt_versions=[ctx.template(JUDGE_D).version])
    return {"status": "failed" if no_response else "done"}


async def judge_reasoning(state: ChartEvalState, runtime: Runtime[RunContext]) -> dict:
    """Programmatic grade where exact, then one judge call with the answer type's rules."""
    ctx, config = runtime.context, runtime.context.config
    (item_id,) = state["item_ids"]
    item = ctx.store.get_item(item_id)
    q = ChartQuestion.from_dict(item["payload"]["question"])
    response = item["payload"].get("response")
    programmatic = _record_programmatic(ctx, item, q, response) if config.grading != "judge" else None
    if q.answer is None:
        _finish(ctx, item_id, config.judge, None, "", "ungraded", None, None)
    elif response is None:
        _finish(ctx, item_id, config.judge, 0, "", "no_response", None, None, failed=True)
        return {"status": "failed"}
    elif not _use_judge(config, q):
        _finish(ctx, item_id, PROGRAMMATIC, None, programmatic["extracted"], "programmatic", None, None)
    else:
        values = {"question": q.question, "answer": q.answer, "response": response,
                  "inst_category": q.inst_category, "extracted": extract_final_answer(response)}
        parsed, call_id, raw, reason = await _judge_call(ctx, item_id, JUDGE_R, values, reasoning_judge_schema(),
                                                         reasoning_from_model)
        if parsed is None:
            _finish(ctx, item_id, config.judge, -1, FAILED_EXTRACTION, "invalid", call_id, raw, reason)
        else:
            _finish(ctx, item_id, config.judge, parsed["score"], parsed["extracted"], "ok", call_id, raw)
        ctx.store.update_item(item_id, prompt_versions=[ctx.template(JUDGE_R).version])
    return {"status": "done"}


async def route_after_ask(state: ChartEvalState) -> Literal["judge_descriptive", "judge_reasoning"]:
    return "judge_descriptive" if state.get("mode") == "descriptive" else "judge_reasoning"
