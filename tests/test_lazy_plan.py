"""The lazy plan: a Skill-Mix run's threads (and items) are produced as the runtime takes them, a batch at a time,
so the specs held during a run follow the concurrency and the batch, not the run size; same items and ids."""

import weakref
from itertools import islice

import pytest

from skillweave.pipelines import get_pipeline
from skillweave.store import Store


def _second_run(cli_run, db_path, n):
    """A finished run of n combinations (k 2 and 3, two rounds) and a context for a new run with its config."""
    from skillweave.graphs.runtime import run_context

    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "2,3", "--n", str(n), "--rounds", "2",
                           "--grading-samples", "1")
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    ctx = run_context(get_pipeline("skillmix"), store, run["id"])
    ctx.run_id = store.create_run("skillmix", run["config"], command="test")
    return store, ctx, run["id"]


def _item_key(item):
    return item["combo_index"], item["round"], item["k"], tuple(item["skills"]), item["topic"], item["payload"]


def test_plan_counts_first_and_creates_items_as_taken(cli_run, db_path):
    from skillweave.agents.skillmix import plan_threads

    store, ctx, first = _second_run(cli_run, db_path, 3)
    plan = plan_threads(ctx)
    assert len(plan) == 2 * 3 * 2
    assert list(store.items(ctx.run_id)) == []  # nothing created before a thread is taken
    taken = list(islice(iter(plan), 5))
    assert len(list(store.items(ctx.run_id))) == 5
    specs = list(plan)  # a second iteration starts again; creating an item twice is a no-op
    assert [s.thread_id for s in specs[:5]] == [s.thread_id for s in taken]
    assert [s.thread_id for s in specs] == [f"{ctx.run_id}:{i}:{r}" for i in range(6) for r in range(2)]
    items = list(store.items(ctx.run_id))
    assert [s.input["item_id"] for s in specs] == [i["id"] for i in sorted(items, key=lambda i: (i["combo_index"],
                                                                                               i["round"]))]
    old = sorted(_item_key({**i, "payload": {"skill_rows": i["payload"]["skill_rows"]}})
                 for i in store.items(first))
    assert sorted(_item_key(i) for i in items) == old  # the same combinations, topics and rows as the eager plan


def test_shard_of_a_lazy_plan_and_a_wrong_count():
    from skillweave.agents.lazyplan import LazyPlan
    from skillweave.graphs import shards

    specs = [f"t{p}" for p in range(11)]
    for shard in ("1/3", "2/3", "3/3", "1/1", "4/4"):
        lazy = shards.select(LazyPlan(11, lambda: iter(specs)), shard)
        assert list(lazy) == shards.select(specs, shard)
        assert len(lazy) == len(shards.select(specs, shard))
    with pytest.raises(RuntimeError, match="said 12 threads and produced 11"):
        list(LazyPlan(12, lambda: iter(specs)))


def test_a_run_holds_a_batch_of_specs_not_the_plan(cli_run, db_path, monkeypatch):
    import skillweave.agents.skillmix as skillmix
    import skillweave.graphs.runtime as runtime

    live, peak = weakref.WeakSet(), [0]

    class Spec(skillmix.ThreadSpec):
        __hash__ = object.__hash__  # counted by identity in a weak set

        def __init__(self, *args):
            super().__init__(*args)
            live.add(self)
            peak[0] = max(peak[0], len(live))

    monkeypatch.setattr(skillmix, "ThreadSpec", Spec)
    monkeypatch.setattr(runtime, "SCHEDULE_BATCH", 16, raising=False)
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "3", "--n", "300", "--rounds", "1",
                           "--grading-samples", "1", "--concurrency", "4")
    assert code == 0, err
    store = Store(db_path)
    items = list(store.items(store.get_run("latest")["id"]))
    assert len(items) == 300 and {i["status"] for i in items} == {"done"}
    assert 0 < peak[0] <= 2 * 16 + 4 + 2, peak[0]  # two batches (the next is built while the last is held)


def test_a_plan_that_breaks_part_way_stops_the_run(cli_run, db_path, monkeypatch):
    import skillweave.graphs.skillmix as graph
    from skillweave.agents.lazyplan import LazyPlan

    real = graph.plan

    def plan(ctx):
        specs = real(ctx)
        return LazyPlan(len(specs) + 1, lambda: iter(specs))  # one thread promised and never produced

    monkeypatch.setattr(graph, "plan", plan)
    with pytest.raises(RuntimeError, match="produced 40"):
        cli_run("run", "skillmix", "--model", "fake", "--k", "3", "--n", "40", "--rounds", "1")
    store = Store(db_path)
    run = store.get_run("latest")
    assert run["status"] == "failed" and "produced 40" in run["error"]
    assert {i["status"] for i in store.items(run["id"])} == {"done"}  # the threads taken finished


@pytest.mark.parametrize(("n", "seed", "exp_path", "size"), [(50, 10, "", 30), (7, 3, "runs/x", 12),
                                                             (0, 10, "", 6), (-1, 4, "e", 7), (40, 0, "", 3)])
def test_official_plan_in_one_pass_matches_the_transcribed_driver(n, seed, exp_path, size):
    from skillweave.agents.skillmix import OFFICIAL_EXP_PATH, plan_combinations
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.pipelines.skillmix import SkillMixConfig
    from tests.skillmix_reference import official_draws

    skills, topics = bundled_skills()[:size], bundled_topics()[:9]
    config = SkillMixConfig(k=[3], n=n, seed=seed, exp_path=exp_path, sampler="official")
    expected = official_draws([s.name for s in skills], list(topics), 3, n, seed, exp_path or OFFICIAL_EXP_PATH)
    got = plan_combinations(config, skills, topics, 3)
    assert [([s.name for s in c], t) for c, t in got] == expected and expected


def test_threads_that_never_wait_let_the_loop_turn(cli_run, monkeypatch):
    """With instant replies a worker would run thread after thread in one loop tick, holding every cancelled
    `asyncio.timeout` handle (purged between ticks) and one write transaction for the whole run."""
    import asyncio

    from skillweave.graphs.progress import Progress

    update, held = Progress.update, []

    def counting(self, n=1):
        update(self, n)
        held.append(len(asyncio.get_running_loop()._scheduled))  # timers still in the loop's heap

    monkeypatch.setattr(Progress, "update", counting)
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--k", "3", "--n", "300", "--rounds", "1",
                           "--grading-samples", "1", "--concurrency", "8")
    assert code == 0, err
    assert len(held) == 300 and max(held) < 150, max(held)  # the code before: ~3 per finished thread (900)
