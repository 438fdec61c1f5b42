"""The pipeline registry: every pipeline's spec, built in or from a third-party package.

A package adds a pipeline through the entry-point group `skillweave.pipelines` (the object named is a
`skillweave.pipeline.Pipeline`), and a model provider through `skillweave.providers` (see
docs/extending.md). Built-in specs live beside their settings in `skillweave/pipelines/<name>.py`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from skillweave.errors import ConfigError
from skillweave.pipeline import Pipeline, PipelineConfig, resolve
from skillweave.pipelines import chart_eval, conceptmix, instruct_skillmix, math2, skill_extraction, skillmix

GROUP = "skillweave.pipelines"

BUILTIN: dict[str, Pipeline] = {spec.name: spec for spec in (
    skill_extraction.PIPELINE, skill_extraction.SOLVE_PIPELINE, math2.PIPELINE, math2.EVAL_PIPELINE,
    skillmix.PIPELINE, conceptmix.PIPELINE, instruct_skillmix.PIPELINE, chart_eval.PIPELINE,
)}

_plugins: dict[str, Pipeline] | None = None


def _load_plugins() -> dict[str, Pipeline]:
    global _plugins
    if _plugins is None:
        found: dict[str, Pipeline] = {}
        for ep in entry_points(group=GROUP):
            try:
                spec = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-in pipelines
                raise ConfigError(f"entry point '{ep.name}' in {GROUP} failed to load: {exc}") from None
            if not isinstance(spec, Pipeline):
                raise ConfigError(f"entry point '{ep.name}' in {GROUP} is not a skillweave.pipeline.Pipeline")
            if spec.name in BUILTIN:
                raise ConfigError(f"entry point '{ep.name}' redefines the built-in pipeline '{spec.name}'")
            found[spec.name] = Pipeline(**{**spec.__dict__, "source": ep.dist.name if ep.dist else ep.value})
        _plugins = found
    return _plugins


def refresh() -> None:
    """Forget discovered plugins (after installing a package into a running interpreter)."""
    global _plugins
    _plugins = None


def all_pipelines() -> dict[str, Pipeline]:
    return {**BUILTIN, **_load_plugins()}


def find_pipeline(name: str) -> Pipeline | None:
    """The spec of a pipeline, or None for runs that are not pipelines (trainers, selections)."""
    return BUILTIN.get(name) or _load_plugins().get(name)


def get_pipeline(name: str | Pipeline) -> Pipeline:
    if isinstance(name, Pipeline):
        return name
    spec = BUILTIN.get(name) or _load_plugins().get(name)
    if spec is None:
        raise ConfigError(f"unknown pipeline '{name}'; known: {', '.join(sorted(all_pipelines()))}")
    return spec


__all__ = ["BUILTIN", "GROUP", "Pipeline", "PipelineConfig", "all_pipelines", "find_pipeline", "get_pipeline", "refresh", "resolve"]
