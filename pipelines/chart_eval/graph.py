"""Chart evaluation (CharXiv-style): ask -> judge (descriptive batch of 5 per template, or one reasoning question)."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.llm import RunContext
from skillweave.pipelines.chart_eval.nodes import (
    ChartEvalState,
    ask,
    judge_descriptive,
    judge_reasoning,
    plan_threads,
    route_after_ask,
)

plan = plan_threads


def build_graph(checkpointer=None):
    graph = StateGraph(ChartEvalState, context_schema=RunContext)
    graph.add_node("ask", ask)
    graph.add_node("judge_descriptive", judge_descriptive)
    graph.add_node("judge_reasoning", judge_reasoning)
    graph.add_edge(START, "ask")
    graph.add_conditional_edges("ask", route_after_ask, {"judge_descriptive": "judge_descriptive",
                                                         "judge_reasoning": "judge_reasoning"})
    graph.add_edge("judge_descriptive", END)
    graph.add_edge("judge_reasoning", END)
    return graph.compile(checkpointer=checkpointer)
