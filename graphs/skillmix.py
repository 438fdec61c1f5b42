"""Skill-Mix: student turn 0 -> turn 1 -> judge; one thread per (combination, round)."""

from langgraph.graph import END, START, StateGraph

from skillweave.agents.llm import RunContext
from skillweave.agents.skillmix import SkillMixState, grade, plan_threads, route_after_student, student_turn

plan = plan_threads
# Checkpoint when a thread ends (or pauses) rather than after every node: a thread cut short restarts from its
# first node, and every model reply it already had is served from the store (agents.llm), so nothing is paid twice.
DURABILITY = "exit"


def build_graph(checkpointer=None):
    graph = StateGraph(SkillMixState, context_schema=RunContext)
    graph.add_node("student", student_turn)
    graph.add_node("grade", grade)
    graph.add_edge(START, "student")
    graph.add_conditional_edges("student", route_after_student, {"grade": "grade", "__end__": END})
    graph.add_edge("grade", END)
    return graph.compile(checkpointer=checkpointer)
