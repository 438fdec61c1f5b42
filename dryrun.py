"""`run ... --dry-run`: plan a run and project its calls and cost, without calling a model or storing a run.

The run is planned and executed in a scratch store in a temporary folder, with every model spec answered by a
dry provider: it returns the templates' example replies (the `fake` provider's replies), so the graph takes the
route an offline run takes and each call's prompt is rendered exactly. Each recorded request gives:

- input tokens: the rendered prompt, counted the way its model is billed (`providers/prices.py`: words for `fake`,
  about 4 characters a token otherwise);
- output tokens, low: replies as long as the template's example reply; high: `max_tokens` for each of the `n`
  replies (the most the provider can bill);
- cost: those tokens at the model's price (`unknown` when it has none; half of it for OpenAI and Anthropic
  models in a `--batch` run).

Threads that stop at a human review interrupt are counted up to the interrupt. Image generation (ConceptMix's
`--image-model`) is not a chat call: the dry run draws with the local `render` backend instead and reports how
many images the run would ask the real backend for, without a cost.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass

from skillweave.agents.llm import RunContext
from skillweave.providers.core import FakeProvider
from skillweave.providers.prices import Price, count_tokens, estimate_input_tokens, price_of


class _DryProvider(FakeProvider):
    """Answers every request with the template's example reply; recorded under the spec it stands in for."""

    provider = "dry-run"


@dataclass
class DryRunContext(RunContext):
    def provider(self, spec: str):
        providers = self.__dict__.setdefault("_dry", {})
        if spec not in providers:
            providers[spec] = _DryProvider(spec, latency=0.0, max_concurrency=self.max_concurrency)
        return providers[spec]


def dry_run(pipeline: str, config, catalogs: dict | None = None, *, prompts_dir: str | None = None,
            setup=None) -> dict:
    """The projection of a run: {pipeline, threads, paused, stages: {role: {...}}, total: {...}}, where each
    entry has calls, models, input_tokens, output_tokens_low/high, cost_low/high (None when unpriced) and
    unpriced (calls whose model has no price). `setup(scratch_store) -> {setting: value}` stores inputs a
    command keeps outside `catalogs` (MATH²'s skill bank) and returns the settings that name them."""
    from skillweave.api import create_run
    from skillweave.graphs.runtime import execute
    from skillweave.pipelines import get_pipeline
    from skillweave.store import Store, jload, queries

    spec = get_pipeline(pipeline)
    config = spec.new_config(config)
    image_model = getattr(config, "image_model", None)  # pipelines that make images
    if image_model and image_model != "render":  # never call an image API (or load a diffusion model) here
        config = config.model_copy(update={"image_model": "render"})
    with tempfile.TemporaryDirectory(prefix="skillweave-dry-run-") as tmp:
        store = Store(os.path.join(tmp, "dry-run.db"))
        try:
            if setup is not None:
                config = config.model_copy(update=setup(store))
            run_id = create_run(store, spec, config, catalogs=catalogs, prompts_dir=prompts_dir)
            typed = spec.load_config(store.get_run(run_id)["config"])
            ctx = DryRunContext(store=store, run_id=run_id, config=typed, prompts_dir=prompts_dir,
                                max_concurrency=typed.concurrency)
            summary = asyncio.run(execute(spec, ctx, concurrency=typed.concurrency, progress=False))
            rows = queries.successful_calls(store, run_id)
            images = queries.event_count(store, run_id, stage="image", status="generated")
        finally:
            store.close()
    from skillweave.providers.batch import BATCH_DISCOUNT
    from skillweave.providers.model_config import find_model

    stages: dict[str, dict] = {}
    for row in rows:
        model, request = row["model"], jload(row["request"], {})
        price = price_of(model)
        entry = find_model(model)
        if price is not None and config.batch and \
                (entry.kind if entry is not None else model.partition(":")[0]) in ("openai", "anthropic"):
            price = Price(price.input * BATCH_DISCOUNT, price.output * BATCH_DISCOUNT, price.source + ", batch")
        inp = estimate_input_tokens(model, request.get("messages", []))
        low = sum(count_tokens(model, t) for t in jload(row["response"], []) or [])
        high = int(request.get("max_tokens") or 0) * max(int(request.get("n") or 1), 1)
        for key in (row["role"] or "(none)", "__total__"):
            stage = stages.setdefault(key, {"calls": 0, "models": [], "input_tokens": 0, "output_tokens_low": 0,
                                            "output_tokens_high": 0, "cost_low": 0.0, "cost_high": 0.0,
                                            "unpriced": 0})
            stage["calls"] += 1
            if model not in stage["models"]:
                stage["models"].append(model)
            stage["input_tokens"] += inp
            stage["output_tokens_low"] += low
            stage["output_tokens_high"] += high
            if price is None:
                stage["unpriced"] += 1
            else:
                stage["cost_low"] += price.cost(inp, low)
                stage["cost_high"] += price.cost(inp, high)
    empty = {"calls": 0, "models": [], "input_tokens": 0, "output_tokens_low": 0, "output_tokens_high": 0,
             "cost_low": 0.0, "cost_high": 0.0, "unpriced": 0}
    total = stages.pop("__total__", empty)
    for stage in (*stages.values(), total):
        if stage["unpriced"] and stage["unpriced"] == stage["calls"]:
            stage["cost_low"] = stage["cost_high"] = None
    return {"pipeline": spec.name, "threads": summary.threads, "paused": summary.paused, "stages": stages,
            "total": total, "images": {"model": image_model, "count": images} if image_model else None}


def _usd(stage: dict) -> str:
    if stage["cost_low"] is None:
        return "unknown (no price)"
    text = f"${stage['cost_low']:.4f} - ${stage['cost_high']:.4f}"
    return text + (f" + {stage['unpriced']} unpriced calls" if stage["unpriced"] else "")


def format_projection(projection: dict) -> str:
    lines = [f"dry run of {projection['pipeline']}: {projection['threads']} threads, no model called, no run stored"]
    if projection["paused"]:
        lines.append(f"{projection['paused']} threads stop at a review; their later calls are not counted")
    width = max([5, *(len(s) for s in projection["stages"])])
    lines.append(f"{'stage'.ljust(width)}  calls  input tokens  output tokens (low-high)  cost USD (low - high)  models")
    for name, stage in [*projection["stages"].items(), ("total", projection["total"])]:
        lines.append(f"{name.ljust(width)}  {stage['calls']:5d}  {stage['input_tokens']:12d}  "
                     f"{stage['output_tokens_low']:>11d}-{stage['output_tokens_high']:<12d}  {_usd(stage):21}  "
                     f"{','.join(stage['models'])}")
    if projection.get("images"):
        images = projection["images"]
        lines.append(f"images: {images['count']} from {images['model']} (not chat calls: cost not projected)")
    return "\n".join(lines)
