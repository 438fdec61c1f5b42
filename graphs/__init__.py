"""Generation graphs, one module per pipeline; each exposes `build_graph(checkpointer)` and `plan(ctx)`."""

PIPELINES: dict[str, str] = {
    "extract-skills": "skillweave.graphs.skill_extraction",
    "solve": "skillweave.graphs.solve",
    "math2": "skillweave.graphs.math2",
    "skillmix": "skillweave.graphs.skillmix",
    "conceptmix": "skillweave.graphs.conceptmix",
    "instruct-skillmix": "skillweave.graphs.instruct_skillmix",
    "chart-eval": "skillweave.graphs.chart_eval",
}
