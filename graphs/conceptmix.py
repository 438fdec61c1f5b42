"""ConceptMix: sample -> refine -> caption -> verify -> questions -> image -> grade; one thread per prompt.

A conflict at refine/caption/verify/questions goes back to sample (bounded by `max_resamples`); imported
prompt sets enter at image.
"""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.conceptmix import (
    ConceptMixState,
    caption,
    generate_image,
    grade,
    plan_threads,
    questions,
    refine,
    route_after_step,
    route_start,
    sample,
    verify,
)
from skillweave.agents.llm import RunContext

plan = plan_threads


def build_graph(checkpointer=None):
    graph = StateGraph(ConceptMixState, context_schema=RunContext)
    graph.add_node("sample", sample)
    graph.add_node("refine", refine)
    graph.add_node("caption", caption)
    graph.add_node("verify", verify)
    graph.add_node("questions", questions)
    graph.add_node("image", generate_image)
    graph.add_node("grade", grade)
    graph.add_conditional_edges(START, route_start, {"sample": "sample", "image": "image"})
    graph.add_edge("sample", "refine")
    for node, following in (("refine", "caption"), ("caption", "verify"), ("verify", "questions"),
                            ("questions", "image"), ("image", "grade")):
        graph.add_conditional_edges(node, route_after_step, {"continue": following, "resample": "sample", "stop": END})
    graph.add_edge("grade", END)
    return graph.compile(checkpointer=checkpointer)
