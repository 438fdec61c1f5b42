"""The direct executor (graphs/executor.py): same outputs as LangGraph's Pregel loop, threads recorded so that
resume (by either executor) skips them, and graphs outside its subset left to LangGraph."""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from typing import Annotated, TypedDict

import pytest
from conftest import run_content

import skillweave
from skillweave.graphs import executor
from skillweave.graphs.executor import DirectGraph, NotDirect, direct_graph, executor_setting


def _calls(db: str) -> list[tuple]:
    """Every model call of the latest run, independent of run and call ids."""
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("select id from runs order by created_at desc limit 1").fetchone()[0]
        rows = conn.execute(
            "select i.combo_index, i.round, c.role, c.provider, c.model, c.prompt_version, c.request, c.response, "
            "c.error, c.attempts, c.input_tokens, c.output_tokens from llm_calls c join items i on i.id = c.item_id "
            "where c.run_id = ?", [run_id]).fetchall()
        events = conn.execute("select i.combo_index, i.round, e.stage, e.status from events e "
                              "join items i on i.id = e.item_id where e.run_id = ?", [run_id]).fetchall()
    return sorted(rows), sorted(events)


def _both_ways(tmp_path, monkeypatch, pipeline: str, **settings) -> dict:
    out = {}
    for name in ("langgraph", "direct"):
        monkeypatch.setenv(executor.ENV, name)
        db = str(tmp_path / f"{name}.db")
        handle = skillweave.run(pipeline, db=db, **settings)
        out[name] = (handle.summary.statuses, handle.summary.done, handle.summary.failed, run_content(db), _calls(db))
    return out


def _both_ways_cli(tmp_path, monkeypatch, cli_run, *args) -> dict:
    out = {}
    for name in ("langgraph", "direct"):
        monkeypatch.setenv(executor.ENV, name)
        db = str(tmp_path / f"{name}.db")
        code, _, err = cli_run(*args, db=db)
        assert code == 0, err
        out[name] = (run_content(db), _calls(db))
    return out


@pytest.mark.parametrize("judge", ["fake", "fake:fail"])
def test_skillmix_direct_matches_langgraph(tmp_path, monkeypatch, judge):
    runs = _both_ways(tmp_path, monkeypatch, "skillmix", k=[2, 3], n=3, rounds=2, grading_samples=2,
                      model="fake", judge=judge)
    assert runs["direct"] == runs["langgraph"]
    statuses, *_ , (calls, events) = runs["direct"]
    assert statuses == ({"done": 12} if judge == "fake" else {"failed": 12})
    assert len(calls) == 36 and events


def test_student_failure_ends_the_thread_the_same_way(tmp_path, monkeypatch):
    runs = _both_ways(tmp_path, monkeypatch, "skillmix", k=[2], n=2, rounds=1, model="fake:fail", judge="fake")
    assert runs["direct"] == runs["langgraph"]
    assert all(call[2] == "student" for call in runs["direct"][4][0])  # routed to END before the judge


def test_instruct_skillmix_direct_matches_langgraph(tmp_path, monkeypatch, cli_run):
    """Nine nodes, loops back (drop last turn), conditional edges on every node."""
    runs = _both_ways_cli(tmp_path, monkeypatch, cli_run, "run", "instruct-skillmix", "--model", "fake", "--n", "4")
    assert runs["direct"] == runs["langgraph"]
    content, (calls, events) = runs["direct"]
    assert len(content["items"]) == 4 and len(calls) >= 4 * 5 and events


@pytest.mark.parametrize("first,then", [("direct", "langgraph"), ("direct", "direct"), ("langgraph", "direct")])
def test_finished_threads_are_skipped_by_either_executor(tmp_path, monkeypatch, first, then):
    """A direct thread ends with a LangGraph checkpoint (final values, nothing next): resume skips it."""
    db = str(tmp_path / "r.db")
    monkeypatch.setenv(executor.ENV, first)
    handle = skillweave.run("skillmix", k=2, n=3, rounds=1, grading_samples=1, model="fake", db=db)
    with sqlite3.connect(db) as conn:
        calls = conn.execute("select count(*) from llm_calls").fetchone()[0]
        conn.execute("update runs set status = 'interrupted'")
    monkeypatch.setenv(executor.ENV, then)
    again = skillweave.resume(handle.run_id, db=db)
    assert again.status == "done" and again.summary.skipped == 3 and again.summary.done == 3
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from llm_calls").fetchone()[0] == calls


def test_direct_checkpoint_reads_back_through_langgraph(tmp_path, monkeypatch):
    from skillweave.graphs.runtime import checkpointer, thread_config
    from skillweave.pipelines import get_pipeline
    from skillweave.store import Store

    monkeypatch.setenv(executor.ENV, "direct")
    handle = skillweave.run("skillmix", k=2, n=1, rounds=1, grading_samples=1, model="fake",
                            db=str(tmp_path / "c.db"))
    store = Store(tmp_path / "c.db")
    item = next(store.items(handle.run_id))

    async def state():
        async with checkpointer(store) as saver:
            graph = get_pipeline("skillmix").build_graph(checkpointer=saver)
            return await graph.aget_state(thread_config(f"{handle.run_id}:0:0"))

    snapshot = asyncio.run(state())
    assert snapshot.values == {"item_id": item["id"], "status": "done"}
    assert snapshot.next == () and snapshot.interrupts == () and snapshot.created_at
    assert snapshot.metadata["executor"] == "direct"


def test_a_thread_killed_before_its_checkpoint_reruns_free(tmp_path, monkeypatch):
    """As with exit durability: no checkpoint -> the thread runs again from its input, every reply reused."""
    db = str(tmp_path / "k.db")
    monkeypatch.setenv(executor.ENV, "direct")
    handle = skillweave.run("skillmix", k=2, n=2, rounds=1, grading_samples=1, model="fake", db=db)
    before = run_content(db)
    with sqlite3.connect(db) as conn:
        calls = conn.execute("select count(*) from llm_calls").fetchone()[0]
        conn.execute("delete from checkpoints")
        conn.execute("update runs set status = 'interrupted'")
    again = skillweave.resume(handle.run_id, db=db)
    assert again.status == "done" and again.summary.skipped == 0 and again.summary.done == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from llm_calls").fetchone()[0] == calls
        assert conn.execute("select count(*) from grades").fetchone()[0] == 2
    assert run_content(db) == before


# ---- which graphs run direct -------------------------------------------------------------------------------------

def _compiled(name: str):
    from skillweave.pipelines import get_pipeline

    pipeline = get_pipeline(name)
    return pipeline.build_graph(), pipeline.durability


def test_exit_durability_graphs_run_direct_and_the_others_do_not(monkeypatch):
    monkeypatch.delenv(executor.ENV, raising=False)
    for name in ("skillmix", "instruct-skillmix"):
        direct, why = direct_graph(*_compiled(name))
        assert direct is not None, (name, why)
    direct, why = direct_graph(*_compiled("math2"))  # pauses for human review: checkpoints between nodes
    assert direct is None and "durability 'async'" in why
    monkeypatch.setenv(executor.ENV, "langgraph")
    direct, why = direct_graph(*_compiled("skillmix"))
    assert direct is None and why == "SKILLWEAVE_EXECUTOR=langgraph"


def test_a_bad_executor_setting_is_refused(monkeypatch, cli_run):
    monkeypatch.setenv(executor.ENV, "pregel")
    with pytest.raises(skillweave.errors.ConfigError, match="SKILLWEAVE_EXECUTOR='pregel'"):
        executor_setting()
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2", "--n", "1")
    assert code == 2 and err.strip().splitlines()[-1].startswith("Error: SKILLWEAVE_EXECUTOR='pregel'"), err
    assert "Traceback" not in err


class _Counter(TypedDict, total=False):
    n: int
    log: str


def _graph(**options):
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(options.pop("schema", _Counter))

    async def step(state):
        return {"n": state.get("n", 0) + 1}

    async def again(state):
        return "step" if state["n"] < options.get("stop", 3) else END

    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", again, ["step", END])
    if options.get("parallel"):
        graph.add_node("other", step)
        graph.add_edge(START, "other")
        graph.add_edge("other", END)
    return graph.compile()


def test_loops_and_the_recursion_limit_match_langgraph():
    from langgraph.errors import GraphRecursionError

    graph = _graph(stop=5)
    state, steps = asyncio.run(DirectGraph(graph).run({"n": 0}, None))
    assert state == asyncio.run(graph.ainvoke({"n": 0})) == {"n": 5} and steps == 5
    endless = _graph(stop=10**6)
    with pytest.raises(GraphRecursionError):
        asyncio.run(endless.ainvoke({"n": 0}))
    with pytest.raises(GraphRecursionError):
        asyncio.run(DirectGraph(endless).run({"n": 0}, None))


class _WithReducer(TypedDict, total=False):
    n: Annotated[int, operator.add]


def test_graphs_outside_the_subset_are_refused():
    with pytest.raises(NotDirect, match="reducer"):
        DirectGraph(_graph(schema=_WithReducer))
    with pytest.raises(NotDirect, match="several outgoing edges|several ways out"):
        DirectGraph(_graph(parallel=True))


def test_a_node_that_pauses_sends_its_thread_through_langgraph(store):
    """`interrupt()` needs LangGraph's runtime: the thread (and the later ones) run through `ainvoke` instead."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from skillweave.graphs.executor import DirectThreads
    from skillweave.graphs.runtime import StoreCheckpointer

    async def ask(state):
        return {"log": f"reviewer said {interrupt('approve?')}"}

    builder = StateGraph(_Counter)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    saver = StoreCheckpointer(store.db.conn)
    saver.setup()
    graph = builder.compile(checkpointer=saver)
    threads = DirectThreads(DirectGraph(graph), None, store, graph, "exit")

    async def go():
        with store.batch_writes():
            first = await threads.run("t1", {"n": 1})
            second = await threads.run("t2", {"n": 2})
            return first, second

    first, second = asyncio.run(go())
    assert first["__interrupt__"][0].value == "approve?" and second["__interrupt__"][0].value == "approve?"
    assert "needs LangGraph's runtime" in threads.fallback
    paused = asyncio.run(graph.aget_state({"configurable": {"thread_id": "t1"}}))
    assert paused.next == ("ask",) and paused.interrupts

