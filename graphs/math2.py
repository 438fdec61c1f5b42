"""MATH²: pair -> pair check -> question -> attempt -> critic (-> refine -> attempt, at most N rounds) ->
consistency -> review (human interrupt / LLM / auto) -> accept; any failure -> drop -> new pair (bounded)."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.llm import RunContext
from skillweave.agents.math2 import (
    Math2State,
    accept,
    check_pair,
    drop,
    final_solution,
    generate_question,
    plan_threads,
    refine,
    review,
    route_after_attempt,
    route_after_check,
    route_after_drop,
    route_after_final,
    route_after_qgen,
    route_after_refine,
    route_after_review,
    route_after_validate,
    sample_pair,
    solve_attempt,
    validate,
)

plan = plan_threads


def build_graph(checkpointer=None):
    graph = StateGraph(Math2State, context_schema=RunContext)
    for name, node in (("pair", sample_pair), ("check", check_pair), ("qgen", generate_question),
                       ("attempt", solve_attempt), ("validate", validate), ("refine", refine),
                       ("final", final_solution), ("review", review), ("accept", accept), ("drop", drop)):
        graph.add_node(name, node)
    graph.add_edge(START, "pair")
    graph.add_edge("pair", "check")
    graph.add_conditional_edges("check", route_after_check, {"qgen": "qgen", "drop": "drop", "__end__": END})
    graph.add_conditional_edges("qgen", route_after_qgen, {"attempt": "attempt", "drop": "drop", "__end__": END})
    graph.add_conditional_edges("attempt", route_after_attempt, {"validate": "validate", "__end__": END})
    graph.add_conditional_edges("validate", route_after_validate,
                                {"final": "final", "refine": "refine", "drop": "drop", "__end__": END})
    graph.add_conditional_edges("refine", route_after_refine, {"attempt": "attempt", "drop": "drop", "__end__": END})
    graph.add_conditional_edges("final", route_after_final, {"review": "review", "drop": "drop", "__end__": END})
    graph.add_conditional_edges("review", route_after_review, {"accept": "accept", "drop": "drop"})
    graph.add_edge("accept", END)
    graph.add_conditional_edges("drop", route_after_drop, {"pair": "pair", "__end__": END})
    return graph.compile(checkpointer=checkpointer)
