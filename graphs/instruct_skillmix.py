"""Instruct-SkillMix: generate -> fix truncation -> critique -> refine -> fix truncation -> parse
(-> drop last turn and retry, bounded) -> near-duplicate check -> shirker (ablation) -> finish; one thread per point."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.instruct_skillmix import (
    TURNS,
    InstructState,
    dedup,
    drop_last_turn,
    finish,
    generator_turn,
    parse,
    plan_threads,
    route_after_dedup,
    route_after_parse,
    route_after_shirk,
    route_after_turn,
    shirk,
)
from skillweave.agents.llm import RunContext

plan = plan_threads
# Checkpoint only when a thread ends: every turn's output is already in the item payload and every node skips
# work it finds done there, so a thread restarted from START after a crash reuses everything (fewer writes).
DURABILITY = "exit"


def build_graph(checkpointer=None):
    graph = StateGraph(InstructState, context_schema=RunContext)
    for turn, name in enumerate(TURNS):
        graph.add_node(name, generator_turn(turn))
    for node in (parse, drop_last_turn, dedup, shirk, finish):
        graph.add_node(node.__name__, node)
    graph.add_edge(START, TURNS[0])
    for name, following in zip(TURNS, [*TURNS[1:], "parse"], strict=True):
        graph.add_conditional_edges(name, route_after_turn(following), {following: following, "__end__": END})
    graph.add_conditional_edges("parse", route_after_parse,
                                {"dedup": "dedup", "drop_last_turn": "drop_last_turn", "__end__": END})
    graph.add_edge("drop_last_turn", TURNS[-1])
    graph.add_conditional_edges("dedup", route_after_dedup, {"shirk": "shirk", "finish": "finish", "__end__": END})
    graph.add_conditional_edges("shirk", route_after_shirk, {"finish": "finish", "__end__": END})
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)
