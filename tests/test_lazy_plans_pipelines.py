"""Lazy plans beyond Skill-Mix: Instruct-SkillMix, generated ConceptMix, solve and MATH² produce their threads
(and items) as the runtime takes them. Each plan is compared with a finished run of the same settings planned by
the code before (its stored items): same count, thread ids, item ids in plan order, and the same planned rows."""

from itertools import islice

import pytest

from skillweave.agents.lazyplan import LazyPlan
from skillweave.pipelines import get_pipeline
from skillweave.store import Store


def _same_settings(cli_run, db_path, pipeline, *args):
    """A finished run from the CLI, and a context for a new run with its stored settings."""
    from skillweave.graphs.runtime import run_context

    code, _, err = cli_run(*args)
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    assert run["pipeline"] == pipeline
    ctx = run_context(get_pipeline(pipeline), store, run["id"])
    ctx.run_id = store.create_run(pipeline, run["config"], command="test")
    return store, ctx, run["id"]


def _planned(item, payload_keys):
    return (item["kind"], item["combo_index"], item["round"], item["k"], tuple(item["skills"]), item["topic"],
            {key: item["payload"].get(key) for key in payload_keys})


CASES = {
    "instruct-skillmix": (("run", "instruct-skillmix", "--model", "fake", "--n", "9", "--shirkers"),
                          "skillweave.agents.instruct_skillmix",
                          ("set", "query_str", "query_type", "query_definition", "skills_joined_str",
                           "shirker_planned", "brevity")),
    "conceptmix": (("run", "conceptmix", "--model", "fake", "--grader", "fake", "--k", "1,2", "--n", "3"),
                   "skillweave.agents.conceptmix", ("concepts", "categories", "config")),
    "solve": (("eval", "solve", "--model", "fake", "--limit", "3", "--exemplars", "random,fixed"),
              "skillweave.agents.solver", ("method", "question_id", "question", "answer", "subject", "true_skill")),
}


@pytest.mark.parametrize("pipeline", sorted(CASES))
def test_lazy_plan_creates_items_as_taken_and_matches_the_eager_plan(cli_run, db_path, pipeline):
    import importlib

    args, module, payload_keys = CASES[pipeline]
    store, ctx, first = _same_settings(cli_run, db_path, pipeline, *args)
    plan = importlib.import_module(module).plan_threads(ctx)
    old_items = sorted(store.items(first), key=lambda i: (i["combo_index"], i["round"]))
    assert isinstance(plan, LazyPlan) and len(plan) == len(old_items)
    assert list(store.items(ctx.run_id)) == []  # nothing created before a thread is taken
    taken = list(islice(iter(plan), 2))
    assert len(list(store.items(ctx.run_id))) == 2
    specs = list(plan)  # iterating again starts from the first thread; creating an item twice is a no-op
    assert [s.thread_id for s in specs[:2]] == [s.thread_id for s in taken]
    new_items = {i["id"]: i for i in store.items(ctx.run_id)}
    assert len(new_items) == len(specs)
    # thread ids and the items behind them, in plan order, as the finished run's (its ids carry its run id)
    old_threads = [s.replace(first, ctx.run_id) for s in _thread_ids(store, first)]
    assert sorted(s.thread_id for s in specs) == sorted(old_threads)
    assert [_planned(new_items[s.input["item_id"]], payload_keys) for s in specs] == \
        [_planned(i, payload_keys) for i in _in_thread_order(store, first, specs, ctx.run_id, old_items)]


def _thread_ids(store, run_id):
    return [r["thread_id"] for r in store._all(
        "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id LIKE ?", [run_id + ":%"])]


def _in_thread_order(store, first, specs, run_id, old_items):
    """The finished run's items in the order of the new plan's threads (matched by the position in the id)."""
    by_key = {(i["combo_index"], i["round"]): i for i in old_items}
    new = {i["id"]: i for i in store.items(run_id)}
    return [by_key[(new[s.input["item_id"]]["combo_index"], new[s.input["item_id"]]["round"])] for s in specs]


def test_math2_plan_is_lazy_and_creates_nothing(cli_run, db_path):
    from skillweave.agents.math2 import plan_threads

    store, ctx, _ = _same_settings(cli_run, db_path, "math2", "run", "math2", "--model", "fake", "--n", "3")
    plan = plan_threads(ctx)
    assert isinstance(plan, LazyPlan) and len(plan) == 3
    specs = list(plan)
    assert [s.thread_id for s in specs] == [f"{ctx.run_id}:{i}" for i in range(3)]
    assert [s.input for s in specs] == [{"thread_id": f"{ctx.run_id}:{i}", "index": i, "attempt": 0}
                                        for i in range(3)]
    assert list(store.items(ctx.run_id)) == []  # its items are created by the threads (one per pair attempt)
