"""Typed structured outputs: a step whose reply is JSON declares a pydantic model; its reply is validated.

`call_structured` wraps `call_template`:

- The model's JSON schema goes into the call's options as `json_schema` (`{"name", "schema", "strict"}`), so it
  is part of the recorded request and of the call key: a changed schema is a new call, never a stale reply.
  OpenAI-compatible providers (`openai:` and the models file's fleets) send it as
  `response_format: {"type": "json_schema", ...}` (vLLM and OpenAI constrain the reply to it); other providers
  ignore the option, and their reply is only validated.
- The reply's first JSON object (code fences and chatter around it are ignored) is validated against the model,
  then by the step's own `check` (constraints a schema cannot state, e.g. "the objects of the sampled
  configuration are kept"). A reply that fails either gets one bounded repair turn: the conversation goes on with
  the reply and a user turn that quotes the validation error and asks for the corrected JSON object only
  (`repairs`, default 1; its own recorded call). A reply that still fails raises `StructuredFailure` with the
  reason, the last call id and the last raw text: the caller records a parse failure, never a silent score.
- Each failed reply is an event `(stage=role, status="parse_failed", reason)`; `skillweave report` counts them per
  step (metrics/parse_failures.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skillweave.agents.llm import Reply, RunContext, call_template
from skillweave.errors import ParseFailure

if TYPE_CHECKING:  # pydantic loads when a structured step runs, not when the CLI is built
    from pydantic import BaseModel, ValidationError

REPAIR_PROMPT = ("Your reply could not be used: {error}\n"
                 "Reply again with only the corrected JSON object, matching this JSON schema:\n{schema}")


class StructuredFailure(ParseFailure):
    """A structured reply that still did not validate after its repair turn(s)."""

    def __init__(self, message: str, *, call_id: str | None, raw: str | None, tries: int):
        super().__init__(message)
        self.call_id, self.raw, self.tries = call_id, raw, tries


def schema_option(schema: type[BaseModel]) -> dict:
    """The `json_schema` option for a pydantic model (OpenAI's `response_format.json_schema` shape)."""
    return {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False}


def first_json_object(text: str | None) -> dict:
    """The first JSON object in a reply; ParseFailure with the reason when there is none or it does not parse."""
    text = re.sub(r"```(?:json)?", "", text or "")
    start = text.find("{")
    if start < 0:
        raise ParseFailure(f"reply holds no JSON object: {text.strip()[:80]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ParseFailure(f"reply JSON does not parse ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise ParseFailure("reply JSON is not an object")
    return value


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def validate_reply(text: str | None, schema: type[BaseModel], check: Callable[[BaseModel, dict], Any] | None = None):
    """Parse and validate one reply: the check's value (else the model instance); ParseFailure with the reason."""
    from pydantic import ValidationError

    data = first_json_object(text)
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        raise ParseFailure(f"reply does not match {schema.__name__}: {_describe_errors(exc)}") from None
    return check(model, data) if check is not None else model


async def call_structured(
    ctx: RunContext,
    *,
    schema: type[BaseModel],
    check: Callable[[BaseModel, dict], Any] | None = None,
    repairs: int = 1,
    repair_if: Callable[[str], bool] | None = None,
    **call: Any,
) -> tuple[Any, Reply]:
    """`call_template(**call)` with `schema` sent and enforced; returns (validated value, reply).

    `check(model, data)` may raise ParseFailure for what the schema cannot say and returns the step's value.
    `repair_if(raw)` False skips the repair turn for that reply (e.g. a reply cut off by max_tokens, which the
    caller retries with a larger budget). Raises StructuredFailure when no reply validates, ModelCallError when a
    call fails.
    """
    options = {**(call.pop("options", None) or {}), "json_schema": schema_option(schema)}
    role, item_id = call["role"], call.get("item_id")
    extra: list[dict] = []
    reply = None
    for tries in range(1, repairs + 2):
        reply = await call_template(ctx, options=options, extra_messages=extra, **call)
        try:
            return validate_reply(reply.text, schema, check), reply
        except ParseFailure as exc:
            reason = str(exc)
        ctx.event(item_id, role, "parse_failed",
                            f"{'repair ' if extra else ''}call {reply.call_id}: {reason}"[:500])
        if tries > repairs or (repair_if is not None and not repair_if(reply.text)):
            break
        extra = [{"role": "assistant", "content": reply.text},
                 {"role": "user", "content": REPAIR_PROMPT.format(
                     error=reason, schema=json.dumps(schema.model_json_schema(), separators=(",", ":")))}]
    raise StructuredFailure(f"{role}: no valid {schema.__name__} reply after {tries} tr{'y' if tries == 1 else 'ies'}"
                            f": {reason}", call_id=reply.call_id, raw=reply.text, tries=tries)
