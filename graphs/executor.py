"""The direct executor: runs one thread of a compiled LangGraph `StateGraph` as a plain async loop.

LangGraph stays the graph's definition and the executor wherever it is needed (a thread that pauses at an
`interrupt`, continues from a mid-way checkpoint, or resumes with a reviewer's decision). A graph whose pipeline
declares `DURABILITY = "exit"` needs no checkpoint between nodes: a thread cut short restarts from its input and
every node finds its finished work in the store (stored replies, payload keys). For such graphs the Pregel loop's
per-step bookkeeping (tasks, channel versions, config merging; about 0.7 ms of CPU per node) buys nothing, so
`DirectGraph` reads the builder's nodes, edges and conditional edges once and runs a fresh thread by calling the
node functions and routers in order, with LangGraph's semantics for this subset:

- every state key is a last-value channel (no reducers); a node returns a partial update (or None) that
  overwrites keys; a key the state does not declare is an error, as in LangGraph;
- each node (and START) has one way out: one edge, or one conditional edge whose router returns one name
  (mapped through its path map);
- a node gets a copy of the state and the run's `Runtime` (its `context` is the `RunContext`); a router gets
  the state after the node's update;
- at most `RECURSION_LIMIT` node runs per thread (LangGraph's default), then `GraphRecursionError`.

When a thread ends, one LangGraph checkpoint with its final values is written, as the exit-durability path does,
so `resume`, `aget_state` and the LangGraph path treat it as finished. The checkpoint joins the event-loop
tick's store transaction (`Store.batch_writes`) instead of committing by itself, so it never becomes durable
before the writes of the nodes it records.

A graph outside this subset, or `SKILLWEAVE_EXECUTOR=langgraph`, runs every thread through `graph.ainvoke`.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager

from skillweave.errors import ConfigError

ENV = "SKILLWEAVE_EXECUTOR"
EXECUTORS = ("direct", "langgraph")
RECURSION_LIMIT = 25
START, END = "__start__", "__end__"


def executor_setting() -> str:
    """`direct` (the default: direct where the graph allows it) or `langgraph` (every thread through Pregel)."""
    value = (os.environ.get(ENV) or "direct").strip().lower()
    if value not in EXECUTORS:
        raise ConfigError(f"{ENV}={value!r} is not one of: {', '.join(EXECUTORS)}")
    return value


class NotDirect(Exception):
    """The graph uses something the direct executor does not run (the reason is the message)."""


def _async_callable(runnable, what: str, allowed: set[str]):
    func = getattr(runnable, "afunc", None)
    accepts = getattr(runnable, "func_accepts", None)
    if func is None or accepts is None or not inspect.iscoroutinefunction(func):
        raise NotDirect(f"{what} is not an async function")
    extra = set(accepts) - allowed
    if extra:
        raise NotDirect(f"{what} takes {', '.join(sorted(extra))}")
    if getattr(runnable, "kwargs", None):
        raise NotDirect(f"{what} has bound keyword arguments")
    return func, "runtime" in accepts


class DirectGraph:
    """A compiled graph's nodes and routes, ready to run threads without Pregel (see the module docstring)."""

    def __init__(self, graph):
        from langgraph.channels.last_value import LastValue

        builder = getattr(graph, "builder", None)
        if builder is None or not hasattr(builder, "branches"):
            raise NotDirect("not a compiled StateGraph")
        schema = builder.state_schema
        if builder.input_schema is not schema or builder.output_schema is not schema:
            raise NotDirect("separate input or output schema")
        if builder.waiting_edges:
            raise NotDirect("joins (edges from several nodes)")
        if getattr(builder, "managed", None):
            raise NotDirect("managed values")
        for key, channel in builder.channels.items():
            if type(channel) is not LastValue:
                raise NotDirect(f"state key '{key}' has a reducer ({type(channel).__name__})")
        self.keys = frozenset(builder.channels)
        self.nodes: dict[str, tuple] = {}
        for name, spec in builder.nodes.items():
            if (spec.retry_policy or spec.cache_policy or spec.defer or spec.ends or spec.metadata
                    or getattr(spec, "is_error_handler", False) or getattr(spec, "error_handler_node", None)
                    or getattr(spec, "timeout", None) or spec.input_schema is not schema):
                raise NotDirect(f"node '{name}' has options (retry, cache, defer, Command ends, own input schema)")
            self.nodes[name] = _async_callable(spec.runnable, f"node '{name}'", {"runtime"})
        # node -> the next node's name (an edge) or (router, takes_runtime, path map) (a conditional edge)
        self.routes: dict[str, str | tuple] = {}
        for start, end in builder.edges:
            if start in self.routes:
                raise NotDirect(f"'{start}' has several outgoing edges (parallel branches)")
            self.routes[start] = end
        for start, branches in builder.branches.items():
            if start in self.routes or len(branches) != 1:
                raise NotDirect(f"'{start}' has several ways out (parallel branches)")
            (name, branch), = branches.items()
            router, takes_runtime = _async_callable(branch.path, f"router '{name}'", {"runtime"})
            self.routes[start] = (router, takes_runtime, branch.ends)
        missing = [n for n in [START, *self.nodes] if n not in self.routes]
        if missing:
            raise NotDirect(f"no way out of {', '.join(missing)}")

    async def run(self, values: dict, runtime) -> tuple[dict, int]:
        """Run one thread from its input to END: (the final state, as `ainvoke` returns it; node runs)."""
        from langgraph.errors import GraphRecursionError, InvalidUpdateError

        keys, nodes, routes = self.keys, self.nodes, self.routes
        state = {k: v for k, v in values.items() if k in keys}
        node, steps = START, 0
        while True:
            route = routes[node]
            node = route if type(route) is str else await self._decide(node, route, state, runtime)
            if node == END:
                return state, steps
            steps += 1
            if steps > RECURSION_LIMIT:
                raise GraphRecursionError(f"Recursion limit of {RECURSION_LIMIT} reached without hitting a stop "
                                          f"condition (direct executor)")
            func, takes_runtime = nodes[node]
            update = await (func(dict(state), runtime) if takes_runtime else func(dict(state)))
            if update is None:
                continue
            if type(update) is not dict:
                raise InvalidUpdateError(f"node '{node}' returned {type(update).__name__}, not a dict of state "
                                         f"updates (the direct executor runs plain updates only)")
            for key in update:
                if key not in keys:
                    raise InvalidUpdateError(f"node '{node}' returned key '{key}', not in the state")
            state.update(update)

    @staticmethod
    async def _decide(node: str, route: tuple, state: dict, runtime) -> str:
        router, takes_runtime, ends = route
        result = await (router(dict(state), runtime) if takes_runtime else router(dict(state)))
        if isinstance(result, list | tuple):  # one destination in a list is still one way out
            if len(result) != 1:
                raise NotDirect(f"the router after '{node}' returned {len(result)} destinations")
            result = result[0]
        if not isinstance(result, str):
            raise NotDirect(f"the router after '{node}' returned {type(result).__name__}, not a node name")
        return ends[result] if ends else result


def direct_graph(graph, durability: str) -> tuple[DirectGraph | None, str]:
    """The direct form of a compiled graph, or None and the reason when it cannot or must not run so."""
    if executor_setting() == "langgraph":
        return None, f"{ENV}=langgraph"
    if durability != "exit":
        return None, f"the graph checkpoints between nodes (durability '{durability}')"
    try:
        return DirectGraph(graph), ""
    except NotDirect as exc:
        return None, str(exc)


def final_checkpoint(saver, values: dict, steps: int) -> tuple[dict, dict]:
    """(checkpoint, metadata) recording a finished thread as LangGraph's exit durability does: its final values
    and no pending node, so `aget_state` reports the values and an empty `next`, and the thread counts as done."""
    from langgraph.checkpoint.base import empty_checkpoint

    version = saver.get_next_version(None, None)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = dict(values)
    checkpoint["channel_versions"] = dict.fromkeys(values, version)
    checkpoint["updated_channels"] = sorted(values)
    return checkpoint, {"source": "loop", "step": steps, "parents": {}, "executor": "direct"}


class DirectThreads:
    """Runs fresh threads of one run directly and records each finished one with its final checkpoint.

    A node that needs LangGraph's own runtime (it calls `interrupt()` or `get_config()`) raises outside Pregel;
    that thread, and every later one of the run, then runs through `graph.ainvoke` from its input instead (what
    the node stored before is reused, as when any thread of such a graph restarts from its input).
    """

    def __init__(self, direct: DirectGraph, ctx, store, graph, durability: str):
        from langgraph.runtime import Runtime

        self.direct, self.runtime, self.ctx = direct, Runtime(context=ctx), ctx
        self.graph, self.durability = graph, durability
        self.saver = _tick_saver(store, graph.checkpointer)
        self.fallback: str | None = None  # why threads now go through LangGraph

    async def run(self, thread_id: str, values: dict) -> dict:
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        if self.fallback is None:
            try:
                state, steps = await self.direct.run(values, self.runtime)
            except RuntimeError as exc:
                if "outside of a runnable context" not in str(exc):
                    raise
                self.fallback = f"a node needs LangGraph's runtime ({exc})"
            else:
                checkpoint, metadata = final_checkpoint(self.saver, state, steps)
                self.saver.put(config, checkpoint, metadata, {})
                return state
        return await self.graph.ainvoke(values, config, context=self.ctx, durability=self.durability)


def _tick_saver(store, checkpointer):
    """LangGraph's SQLite saver whose writes go through the store's write path: inside a run they join the
    event-loop tick's transaction (`Store.batch_writes`) and are committed with it, not one commit each."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    class _Cursor:
        def execute(self, sql, args=()):
            return store.tick_write(sql, list(args))

    class TickSaver(SqliteSaver):
        @contextmanager
        def cursor(self, transaction: bool = True):
            yield _Cursor()

    saver = TickSaver(checkpointer.conn)  # the run's checkpointer: the store's connection, its tables set up
    saver.is_setup = True
    return saver

