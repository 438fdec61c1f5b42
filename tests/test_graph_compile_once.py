"""A pipeline's graph is compiled once per process (`Pipeline.build_graph`): each call gets a copy with its own
checkpointer, sharing the compiled nodes."""

from __future__ import annotations

from langgraph.checkpoint.memory import InMemorySaver

from skillweave.pipelines import get_pipeline


def test_each_build_gets_its_own_checkpointer_over_one_compiled_graph():
    pipeline = get_pipeline("skillmix")
    first, second, third = InMemorySaver(), InMemorySaver(), None
    a, b, c = (pipeline.build_graph(checkpointer=cp) for cp in (first, second, third))
    assert (a.checkpointer, b.checkpointer, c.checkpointer) == (first, second, None)
    assert a is not b and all(a.nodes[n] is b.nodes[n] is c.nodes[n] for n in a.nodes)  # compiled once, not per call
    assert list(a.nodes) == ["__start__", "student", "grade"]


def test_a_build_graph_that_returns_no_langgraph_graph_is_called_every_time(monkeypatch):
    pipeline = get_pipeline("skillmix")
    module, calls = pipeline.graph_module(), []

    def build_graph(checkpointer=None):
        calls.append(checkpointer)
        return ("graph", checkpointer)

    monkeypatch.setattr(module, "build_graph", build_graph)
    assert pipeline.build_graph(checkpointer="saver") == ("graph", "saver")
    assert pipeline.build_graph(checkpointer="other") == ("graph", "other")
    assert calls == [None, "saver", "other"]  # one probe without a checkpointer, then one call per build
