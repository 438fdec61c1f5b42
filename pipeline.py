"""What a pipeline is: one `Pipeline` spec (name, typed settings, plan + graph or a runner, report, plot, export)
and `PipelineConfig`, the pydantic base of every pipeline's settings.

Specs name their parts as `"module:attribute"` strings (or hold the objects themselves), resolved on first use,
so listing pipelines or parsing the command line never imports LangGraph, torch or a pipeline's agents.
The registry of specs is `skillweave.pipelines`; the runtime (`graphs.runtime`) is handed a spec and never
looks one up by name.
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillweave.errors import ConfigError


def resolve(ref: Any) -> Any:
    """`"package.module:name"` -> that object; a module path without `:` -> the module; anything else as is."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    try:
        target = importlib.import_module(module)
        return getattr(target, name) if name else target
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load '{ref}': {exc}") from None


class PipelineConfig(BaseModel):
    """Settings of one run, stored with it (`runs.config`). Unknown keys are errors (`extra="forbid"`).

    Nodes read attributes (`ctx.config.rounds`). Read access by key (`config["rounds"]`, `config.get(...)`)
    stays available for code written against the untyped dict of earlier releases.
    """

    model_config = ConfigDict(extra="forbid")

    # fields that the command line does not offer (catalog ids the CLI fills in, import bookkeeping)
    cli_exclude: ClassVar[frozenset[str]] = frozenset()

    # settings a run stored by an earlier release lacks, and what that release did instead of the new default
    # (e.g. Skill-Mix's sampler): applied when a stored config is loaded, never to a new run's settings
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    # why a run of this pipeline cannot be split with `--shard I/N` (empty: it can; its plan is fixed by the
    # settings and catalogs, and each thread's outcome does not depend on other threads)
    shard_refused: ClassVar[str] = ""

    concurrency: int = Field(8, ge=1, description="Threads (records) in flight at once.")
    shard: str | None = Field(None, description="Run only part I/N of the plan (same plan on every machine); "
                                                "join the shards with `skillweave merge`.")
    reply_cache: str | None = Field(None, description="Reuse replies to identical requests from this file, shared "
                                                      "across runs (or set SKILLWEAVE_REPLY_CACHE).")
    retry: dict[str, dict[str, float]] | None = Field(
        None, description="Per-model retry policy overrides ({spec or '*': {timeout, max_attempts, "
                          "max_retry_wait}}), from --timeout / --max-attempts / --max-retry-wait.")
    max_cost: float | None = Field(
        None, gt=0, description="Budget in USD: no model call starts that could take the run's spend above it; "
                                "the run then stops as 'budget', resumable (`resume RUN --max-cost USD`).")
    batch: bool = Field(False, description="Send OpenAI and Anthropic calls through their batch APIs (half "
                                           "price, replies within 24 h); a killed run resumes polling its batches.")
    merged_shards: list[str] | None = Field(
        None, description="A merged run: the shards (I/N) `skillweave merge` joined into it; not a command-line "
                          "option.")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value

    def templates(self) -> list[str]:
        """Every prompt template the run names (fields ending in `_template`)."""
        return [v for k, v in self if k.endswith("_template") and v]


def validate_config(model: type[PipelineConfig], values: dict, *, what: str = "config") -> PipelineConfig:
    """Build a config, turning pydantic's report into one line per field (a ConfigError, exit 2)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            message = "unknown setting (not a field of " + model.__name__ + ")" \
                if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {message}")
        raise ConfigError(f"invalid {what}: " + "; ".join(problems)) from None


# a graph module's build_graph -> what it returned without a checkpointer (`Pipeline.build_graph`)
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Pipeline:
    """One pipeline as a unit.

    - `config`: its settings model (a `PipelineConfig` subclass or its `"module:Class"`).
    - `graph`: module with `plan(ctx) -> [ThreadSpec]` (or an `agents.lazyplan.LazyPlan`),
      `build_graph(checkpointer)` and optional `DURABILITY`;
      or `runner`: `async (ctx, concurrency) -> {"items", "done", "failed"}` for a pipeline without a graph.
    - `report` / `plot`: `(store, run, **options) -> {"columns", "table", ...}` and `(report, path)`.
    - `export`: `(item, run, points, review=None) -> Example | None`, how its items become training rows.
    - `inputs`: `(config, **files) -> {role: (name, kind, entries, source)}`, the catalogs a new run stores
      (the Python API calls it; a pipeline without it starts from the command line only).
    """

    name: str
    config: Any
    graph: str | None = None
    runner: Any = None
    report: Any = None
    plot: Any = None
    export: Any = None
    inputs: Any = None
    description: str = ""
    source: str = field(default="skillweave", compare=False)

    @property
    def config_model(self) -> type[PipelineConfig]:
        return resolve(self.config)

    def load_config(self, stored: dict | PipelineConfig) -> PipelineConfig:
        """A run's stored settings as this pipeline's typed config (stored runs of earlier releases load too:
        a setting they lack takes the value that release used, `legacy_defaults`)."""
        if isinstance(stored, PipelineConfig):
            return stored
        model = self.config_model
        return validate_config(model, {**model.legacy_defaults, **(stored or {})}, what=f"{self.name} config")

    def new_config(self, settings: dict | PipelineConfig) -> PipelineConfig:
        """A new run's settings, checked (unknown keys, types, ranges); defaults are today's."""
        if isinstance(settings, PipelineConfig):
            return settings
        return validate_config(self.config_model, settings or {}, what=f"{self.name} config")

    def graph_module(self):
        if self.graph is None:
            raise ConfigError(f"pipeline '{self.name}' has no graph")
        return resolve(self.graph)

    @property
    def durability(self) -> str:
        return getattr(self.graph_module(), "DURABILITY", "async") if self.graph else "async"

    def plan(self, ctx) -> list:
        return self.graph_module().plan(ctx)

    def build_graph(self, checkpointer=None):
        """The graph module's `build_graph(checkpointer)`, compiled once per process: compiling costs 2-3 CPU ms
        (LangGraph inspects every node's code for subgraphs), a compiled graph holds no run state, so each call gets
        a copy of the one compiled without a checkpointer, with its own. A module whose `build_graph` returns
        something other than a LangGraph graph is called every time."""
        from langgraph.pregel import Pregel

        build = self.graph_module().build_graph
        base = _COMPILED.get(build)
        if base is None:
            base = _COMPILED[build] = build(checkpointer=None)
        if not isinstance(base, Pregel):
            return build(checkpointer=checkpointer)
        return base.copy({"checkpointer": checkpointer})

    def reporter(self):
        return resolve(self.report) if self.report else None

    def plotter(self):
        return resolve(self.plot) if self.plot else None

    def input_catalogs(self, config: PipelineConfig, **files) -> dict[str, tuple]:
        if self.inputs is None:
            return {}
        return resolve(self.inputs)(config, **files)

    def exporter(self):
        return resolve(self.export) if self.export else None
