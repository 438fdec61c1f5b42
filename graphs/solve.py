"""Exemplar-retrieval solver evaluation: (skill method) pick a skill -> retrieve exemplars and solve;
one thread per (question, method)."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.llm import RunContext
from skillweave.agents.solver import SolveState, pick_skill, plan_threads, route_after_pick, solve

plan = plan_threads


def build_graph(checkpointer=None):
    graph = StateGraph(SolveState, context_schema=RunContext)
    graph.add_node("pick_skill", pick_skill)
    graph.add_node("solve", solve)
    graph.add_edge(START, "pick_skill")
    graph.add_conditional_edges("pick_skill", route_after_pick, {"solve": "solve", "__end__": END})
    graph.add_edge("solve", END)
    return graph.compile(checkpointer=checkpointer)
