"""Skill extraction: label -> cluster -> review -> relabel -> bank (with a dataset), or
propose -> review -> save catalogs (without one); one thread per run."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.llm import RunContext
from skillweave.agents.skill_extraction import (
    ExtractionState,
    build_bank,
    cluster_labels,
    label_questions,
    plan_threads,
    propose_catalog,
    relabel_questions,
    review_clusters,
    route_after_review,
    route_ok,
    route_start,
    save_sda_catalogs,
)

plan = plan_threads


def build_graph(checkpointer=None):
    graph = StateGraph(ExtractionState, context_schema=RunContext)
    graph.add_node("label", label_questions)
    graph.add_node("cluster", cluster_labels)
    graph.add_node("propose", propose_catalog)
    graph.add_node("review", review_clusters)
    graph.add_node("relabel", relabel_questions)
    graph.add_node("bank", build_bank)
    graph.add_node("save_catalogs", save_sda_catalogs)
    graph.add_conditional_edges(START, route_start, {"label": "label", "propose": "propose"})
    graph.add_conditional_edges("label", route_ok, {"next": "cluster", "__end__": END})
    graph.add_edge("cluster", "review")
    graph.add_conditional_edges("propose", route_ok, {"next": "review", "__end__": END})
    graph.add_conditional_edges(
        "review", route_after_review, {"relabel": "relabel", "save_catalogs": "save_catalogs", "__end__": END}
    )
    graph.add_edge("relabel", "bank")
    graph.add_edge("bank", END)
    graph.add_edge("save_catalogs", END)
    return graph.compile(checkpointer=checkpointer)
