"""Metrics and reports per pipeline. `REPORTERS[pipeline]` names `module:function(store, run, **opts) -> dict`
returning `columns`, `table` (rows) and any JSON fields; `PLOTTERS` likewise draws a report to a PNG."""

import importlib

REPORTERS: dict[str, str] = {
    "solve": "skillweave.agents.solver:run_report",
    "extract-skills": "skillweave.agents.skill_extraction:run_report",
    "math2": "skillweave.metrics.math2:run_report",
    "math2-eval": "skillweave.metrics.math2:eval_report",
    "skillmix": "skillweave.metrics.skillmix:run_report",
    "conceptmix": "skillweave.metrics.conceptmix:run_report",
    "instruct-skillmix": "skillweave.metrics.instruct_skillmix:run_report",
    "chart-eval": "skillweave.charts.report:run_report",
}
PLOTTERS: dict[str, str] = {
    "math2": "skillweave.metrics.math2:plot_report",
    "math2-eval": "skillweave.metrics.math2:plot_eval_report",
    "skillmix": "skillweave.metrics.skillmix:plot_report",
    "conceptmix": "skillweave.metrics.conceptmix:plot_report",
    "chart-eval": "skillweave.charts.report:plot_report",
}


def resolve(registry: dict[str, str], pipeline: str):
    target = registry.get(pipeline)
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
