"""The one way a node calls a model: render a template turn, reuse a stored reply, or call and record.

Every call lands in `llm_calls` (provider, model, prompt version, request, response, tokens, latency,
attempts, error). A call key hashes everything that determines the reply request, so a resumed run reuses
each reply it already stored instead of calling the model again. A call that finally fails is stored with
its error and raised as ModelCallError; the node marks its item failed with that reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from skillweave.agents.per_tick import once_per_tick
from skillweave.agents.run_prompts import as_released, check_pin, load_pins
from skillweave.errors import ModelCallError
from skillweave.prompts import PromptTemplate, load_template
from skillweave.providers.core import ChatRequest, get_provider, policy_overrides
from skillweave.providers.prices import price_of
from skillweave.providers.reply_cache import open_cache
from skillweave.store import Store, jdump, jload, stable_id


@dataclass
class RunContext:
    """The typed runtime context every node receives (LangGraph `context_schema`)."""

    store: Store
    run_id: str
    config: Any  # the run's typed settings: a skillweave.pipeline.PipelineConfig of the run's pipeline
    prompts_dir: str | None = None
    max_concurrency: int = 64
    pins: dict | None = None  # template name -> versions the run used (agents.run_prompts); loaded when None
    scheme: str = "b3"  # version scheme of the run's pins ("b2" for runs recorded before b3)
    allow_changed_prompts: bool = False
    budget: Any = None  # a skillweave.providers.prices.Budget when the run has --max-cost
    batch: Any = None  # a skillweave.providers.batch.Batcher when the run has --batch
    _registered_versions: set = field(default_factory=set)

    def template(self, name: str) -> PromptTemplate:
        if self.pins is None:
            self.pins, self.scheme = load_pins(self.store, self.run_id)
        template = once_per_tick(("template", name, self.prompts_dir), load_template, name, self.prompts_dir)
        if self.scheme != template.scheme:  # a b2 run: a released version it pinned may stand for today's file
            template = as_released(template.in_scheme(self.scheme), self.pins.get(name))
        if (name, template.version) not in self._registered_versions:
            check_pin(self, template)
            self.store.put_prompt_version(template.version, template.name, template.text, template.source)
            self._registered_versions.add((name, template.version))
        return template

    def event(self, item_id: str | None, stage: str, status: str, reason: str = "") -> None:
        """Log a transition of one of this run's items (Store.add_event with the run id filled in)."""
        self.store.add_event(self.run_id, item_id, stage, status, reason)

    def fail(self, item_id: str, stage: str, reason: Any) -> dict:
        """Mark an item failed at `stage` (error `"<stage>: <reason>"`, a `failed` event) and return the
        partial state a node returns for it. `reason` may be an exception; its text is recorded."""
        reason = str(reason)
        self.store.update_item(item_id, status="failed", error=f"{stage}: {reason}")
        self.event(item_id, stage, "failed", reason)
        return {"status": "failed"}

    def provider(self, spec: str):
        # this run's timeout / attempts / longest retry wait for the spec (`--timeout` ...; {}: the defaults)
        return get_provider(spec, max_concurrency=self.max_concurrency,
                            retry=policy_overrides(self.config.get("retry"), spec))


@dataclass
class ThreadSpec:
    """One graph thread of a run: its id (unique within the store) and the input state that starts it."""

    thread_id: str
    input: dict


@dataclass
class Reply:
    texts: list[str]
    call_id: str
    messages: list[dict]
    cached: bool

    @property
    def text(self) -> str:
        return self.texts[0]


def build_messages(template: PromptTemplate, values: dict, turn: int, previous_outputs: list[str],
                   extra_content: list[dict] | None = None, previous_prompts: list[str] | None = None) -> list[dict]:
    """System (if any), then each earlier turn with its stored output, then this turn's user message.
    `previous_prompts`, when given, are the earlier user turns as this template rendered them from these same
    values (a node that sent turn 0 itself and now sends turn 1); they are used instead of rendering them again."""
    messages: list[dict] = []
    system = template.render_system(values)
    if system:
        messages.append({"role": "system", "content": system})
    if previous_prompts is not None and len(previous_prompts) != len(previous_outputs):
        raise ValueError(f"{len(previous_prompts)} earlier prompts for {len(previous_outputs)} earlier outputs")
    for i, output in enumerate(previous_outputs):
        prompt = previous_prompts[i] if previous_prompts is not None else template.render_turn(i, values)
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": output})
    text = template.render_turn(turn, values)
    content = [{"type": "text", "text": text}, *extra_content] if extra_content else text
    messages.append({"role": "user", "content": content})
    return messages


async def call_template(
    ctx: RunContext,
    *,
    item_id: str | None,
    role: str,
    template: str,
    values: dict,
    model: str,
    turn: int = 0,
    previous_outputs: list[str] = (),
    n: int = 1,
    temperature: float = 0.7,
    max_tokens: int = 512,
    images: list[dict] | None = None,
    options: dict | None = None,
    key: tuple = (),
    extra_messages: list[dict] = (),
    previous_prompts: list[str] | None = None,
) -> Reply:
    """Render `template` turn `turn` and get `n` replies, from the store when already made.

    `options` go to the provider where supported (`json`: JSON mode, `seed`, `top_p`) and are part of the
    recorded request and its call key; `key` adds extra distinguishing parts (e.g. a retry attempt);
    `extra_messages` go after the turn (a repair turn: agents/structured.py); `previous_prompts`: the earlier
    turns as rendered from these values by this template in the caller's own earlier calls (`build_messages`).
    """
    tmpl = ctx.template(template)
    messages = build_messages(tmpl, values, turn, list(previous_outputs), images, previous_prompts)
    if extra_messages:
        messages += extra_messages
    # the spec parsed and the run's retry policy applied once per loop turn for this run, not once per call
    provider = once_per_tick(("provider", id(ctx), model), ctx.provider, model)
    request_json = jdump({"messages": _redact_images(messages), "temperature": temperature,
                          "max_tokens": max_tokens, "n": n, **({"options": options} if options else {})})
    call_key = stable_id(ctx.run_id, item_id, role, tmpl.version, turn, model, request_json, *key, length=32)
    stored = ctx.store.find_call(call_key, item_id)
    if stored:
        return Reply(texts=jload(stored["response"]), call_id=stored["id"], messages=messages, cached=True)

    cache = open_cache(ctx.config.get("reply_cache"))  # opt-in, shared across runs: providers/reply_cache.py
    hit = cache.get(model, request_json) if cache is not None else None
    if hit is not None:  # recorded as this run's call with attempts 0: no provider was called
        call_id = ctx.store.record_call(call_key=call_key, run_id=ctx.run_id, item_id=item_id, role=role,
                                        provider=provider.provider, model=provider.model, prompt_version=tmpl.version,
                                        request=request_json, response=hit["texts"], input_tokens=hit["input_tokens"],
                                        output_tokens=hit["output_tokens"], latency_ms=0.0, attempts=0, error=None)
        return Reply(texts=hit["texts"], call_id=call_id, messages=messages, cached=True)
    # test scaffolding (`fake_replies`) is rendered for the fake provider only, never for a real model call
    meta = {"fake_reply": tmpl.render_fake_reply(turn, values)} if provider.uses_fake_replies else {}
    request = ChatRequest(messages=messages, temperature=temperature, max_tokens=max_tokens, n=n,
                          meta=meta, options=dict(options or {}))
    record = dict(call_key=call_key, run_id=ctx.run_id, item_id=item_id, role=role, provider=provider.provider,
                  model=provider.model, prompt_version=tmpl.version, request=request_json)
    # --max-cost: the call's worst case is reserved first; BudgetExceeded stops the thread, resumable
    reserved = ctx.budget.reserve(model, messages, max_tokens, n) if ctx.budget is not None else 0.0
    start = time.perf_counter()
    try:
        if ctx.batch is not None and ctx.batch.handles(provider):  # --batch: through the provider's batch API
            result, attempts = await ctx.batch.chat(call_key, provider, request), 1
        else:
            result, attempts = await provider.chat(request)
    except ModelCallError as exc:
        if ctx.budget is not None:
            ctx.budget.settle(reserved, None)
        exc.call_id = ctx.store.record_call(**record, response=None, error=str(exc),
                                            latency_ms=_ms(start),
                                            attempts=getattr(exc, "attempts", provider.retry.max_attempts))
        raise
    price = once_per_tick(("price", model), price_of, model)  # a file check per loop turn, not per call
    cost = price.cost(result.input_tokens, result.output_tokens) if price is not None else None  # unknown, not 0
    if cost is not None and getattr(result, "batch_id", None):
        from skillweave.providers.batch import BATCH_DISCOUNT

        cost *= BATCH_DISCOUNT
    if ctx.budget is not None:
        ctx.budget.settle(reserved, cost)
    call_id = ctx.store.record_call(**record, response=result.texts, input_tokens=result.input_tokens,
                                    output_tokens=result.output_tokens, latency_ms=_ms(start), attempts=attempts,
                                    error=None, cost_usd=cost)
    if cache is not None:
        cache.put(model, request_json, result.texts, result.input_tokens, result.output_tokens)
    return Reply(texts=result.texts, call_id=call_id, messages=messages, cached=False)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _redact_images(messages: list[dict]) -> list[dict]:
    """Keep requests readable in the store: image bytes are replaced by their size and a hash."""
    out = []
    for m in messages:
        if isinstance(m.get("content"), list):
            parts = [
                {"type": "image", "mime": p.get("mime"), "sha": stable_id(p.get("data")), "bytes": len(p.get("data", ""))}
                if p.get("type") == "image" else p
                for p in m["content"]
            ]
            out.append({**m, "content": parts})
        else:
            out.append(m)
    return out
