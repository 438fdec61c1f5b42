"""The pipeline registry: every pipeline's spec, built in or from a third-party package.

A package adds a pipeline through the entry-point group `skillweave.pipelines` (the object named is a
`skillweave.pipeline.Pipeline`), and a model provider through `skillweave.providers` (see
docs/extending.md). Built-in specs are found, not listed: every module or package directly under
`skillweave/pipelines/` that defines `PIPELINE` (or `PIPELINES`, a tuple, for a module with two) is a built-in,
taken in the order of the module names. A spec sits beside its settings model, either in `pipelines/<name>.py` or
in a pipeline folder `pipelines/<name>/__init__.py` (with `nodes.py`, `graph.py`, an optional `report.py`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points

from skillweave.errors import ConfigError
from skillweave.pipeline import Pipeline, PipelineConfig, resolve

GROUP = "skillweave.pipelines"


def specs_of(module) -> tuple[Pipeline, ...]:
    """The specs a pipeline module defines: its `PIPELINES` tuple, else its `PIPELINE`, else none."""
    specs = getattr(module, "PIPELINES", None)
    if specs is None:
        specs = (module.PIPELINE,) if hasattr(module, "PIPELINE") else ()
    for spec in specs:
        if not isinstance(spec, Pipeline):
            raise ConfigError(f"{module.__name__} defines a pipeline that is not a skillweave.pipeline.Pipeline")
    return tuple(specs)


def discover(package: str, path: Iterable[str]) -> dict[str, Pipeline]:
    """Every spec defined by the modules and packages directly under `path` (the folders of `package`), in the
    order of their module names. Only each module (a folder's `__init__.py`) is imported: a spec names its
    graph, nodes and report as strings, so nothing above the core layer loads here."""
    found: dict[str, Pipeline] = {}
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for spec in specs_of(module):
            if spec.name in found:
                raise ConfigError(f"pipeline '{spec.name}' is defined twice ({package}.{info.name})")
            found[spec.name] = spec
    return found


BUILTIN: dict[str, Pipeline] = discover(__name__, __path__)

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


__all__ = ["BUILTIN", "GROUP", "Pipeline", "PipelineConfig", "all_pipelines", "discover", "find_pipeline", "get_pipeline",
           "refresh", "resolve", "specs_of"]
