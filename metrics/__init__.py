"""Metrics and reports per pipeline: pure functions over store rows.

Which report and plot belong to a pipeline is part of its spec (`skillweave.pipelines`): a reporter is
`(store, run, **opts) -> dict` with `columns`, `table` (rows) and any JSON fields; a plotter draws a report
to a PNG.
"""
