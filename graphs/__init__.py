"""Generation graphs, one module per pipeline; each exposes `build_graph(checkpointer)` and `plan(ctx)`.

Which pipelines exist is the registry's business (`skillweave.pipelines`), not this package's.
"""
