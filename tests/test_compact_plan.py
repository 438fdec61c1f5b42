"""The Skill-Mix plan holds its drawn sample as indices: the threads of the samplers' transcribed draws
(tests/skillmix_reference.py), in a fraction of the memory."""

from __future__ import annotations

import gc
import tracemalloc
from types import SimpleNamespace

import pytest

from skillweave.agents.compactplan import interleaved_compact, official_compact
from skillweave.agents.skillmix import OFFICIAL_EXP_PATH, plan_threads
from skillweave.catalog import Skill, bundled_skills, bundled_topics
from skillweave.pipelines.skillmix import SkillMixConfig
from tests.skillmix_reference import interleaved_draws, official_draws


class _CatalogStore:
    """What `plan_threads` reads (the two catalogs) and writes (`ensure_item`, recorded)."""

    def __init__(self, skills: list[Skill], topics: list[str]):
        self.catalogs = {"skills": {"entries": [s.as_dict() for s in skills]},
                         "topics": {"entries": [{"name": t} for t in topics]}}
        self.items = []

    def get_catalog(self, name):
        return self.catalogs[name]

    def ensure_item(self, run_id, kind, index, round_, **fields):
        self.items.append((run_id, kind, index, round_, fields))
        return f"item-{index}-{round_}"


def _ctx(config, skills, topics):
    config = config.model_copy(update={"skills_catalog": "skills", "topics_catalog": "topics"})
    return SimpleNamespace(config=config, store=_CatalogStore(skills, topics), run_id="r1")


def _reference(config: SkillMixConfig, skills: list, topics: list, k: int) -> list[tuple[list, str]]:
    """The plan as the transcribed draws give it, on the skills' names, mapped back to the catalog entries."""
    by_name, names = {s.name: s for s in skills}, [s.name for s in skills]
    if config.sampler == "official":
        pairs = official_draws(names, list(topics), k, config.n, config.seed, config.exp_path or OFFICIAL_EXP_PATH)
    else:
        pairs = [(c, t[0]) for c, t in interleaved_draws(
            names, list(topics), k, config.n, config.seed, f"k{k}_s{config.seed}" if config.reshuffle else None)]
    return [([by_name[name] for name in combo], topic) for combo, topic in pairs]


CASES = [  # (sampler, ks, n, seed, skills, reshuffle, exp_path)
    ("official", [2], 30, 10, 12, True, ""),
    ("official", [3, 4], 25, 3, 20, True, "runs/x"),
    ("official", [2, 3], -1, 7, 8, True, ""),
    ("official", [3], 0, 1, 7, True, "e"),
    ("official", [1], 40, 0, 44, True, ""),
    ("official", [5, 2], -1, 12, 9, True, "p"),
    ("official", [5], 33, 21, 44, True, "test"),
    ("interleaved", [2, 3], 30, 10, 15, True, ""),
    ("interleaved", [3], 25, 5, 9, False, ""),
    ("interleaved", [2, 4], -1, 11, 7, True, ""),
    ("interleaved", [5], 12, 2, 44, True, ""),
    ("interleaved", [1, 3], 20, 8, 10, False, ""),
    ("interleaved", [2], 0, 10, 8, True, ""),  # n = 0: nothing drawn on this sampler
    ("interleaved", [1, 5], -1, 3, 8, False, ""),
]


@pytest.mark.parametrize(("sampler", "ks", "n", "seed", "size", "reshuffle", "exp_path"), CASES)
def test_compact_plan_gives_the_list_forms_threads(sampler, ks, n, seed, size, reshuffle, exp_path):
    skills, topics = bundled_skills()[:size], bundled_topics()[:9]
    config = SkillMixConfig(k=ks, n=n, seed=seed, sampler=sampler, reshuffle=reshuffle, exp_path=exp_path, rounds=2)
    ctx = _ctx(config, skills, topics)
    plan = plan_threads(ctx)
    specs = list(plan)
    expected, index = [], 0
    for k in ks:
        for combo, topic in _reference(config, skills, topics, k):
            for round_ in range(2):
                expected.append(((ctx.run_id, "skillmix.text", index, round_,
                                  {"k": k, "skills": [s.name for s in combo], "topic": topic,
                                   "payload": {"skill_rows": [s.as_dict() for s in combo]}}),
                                 f"r1:{index}:{round_}", {"item_id": f"item-{index}-{round_}"}))
            index += 1
    assert len(plan) == len(expected) == len(specs)
    assert expected or (sampler, n) == ("interleaved", 0)
    assert [(i, s.thread_id, s.input) for i, s in zip(ctx.store.items, specs, strict=True)] == expected
    # iterating again gives the same threads (the runtime's partial resume and --workers list it again)
    assert [s.thread_id for s in plan] == [s.thread_id for s in specs]


def test_catalogs_over_65536_entries_keep_every_index():
    """Indices past 2^16 need 4-byte entries: a topic catalog of 70,000 topics gives the transcription's topics."""
    skills, topics = bundled_skills()[:6], [f"topic {i}" for i in range(70_000)]
    config = SkillMixConfig(k=[2], n=4, seed=14, sampler="official", rounds=1)
    ctx = _ctx(config, skills, topics)
    assert len(list(plan_threads(ctx))) == 4
    got = [(f["skills"], f["topic"]) for *_, f in ctx.store.items]
    assert got == [([s.name for s in c], t) for c, t in _reference(config, skills, topics, 2)]
    assert any(int(t.split()[1]) >= 65_536 for _, t in got)  # the draw does reach the 4-byte indices


@pytest.mark.parametrize(("k", "n", "seed"), [(1, 9, 4), (2, 15, 10), (3, -1, 7), (4, 0, 2), (5, 11, 0)])
@pytest.mark.parametrize("num_topics", [2, 3, 12])  # 12: more topics than the 9 there are
def test_index_draws_with_several_topics(k, n, seed, num_topics):
    """Rows of the index draws with several topics each: the official draw's (combination, topic) pairs, each in
    its own prompt order, and the interleaved draw's combinations with all their topics."""
    skills, topics = bundled_skills()[:9], bundled_topics()[:9]
    names = [s.name for s in skills]
    official = official_compact(skills, topics, k, n, seed, "runs/x", num_topics=num_topics)
    expected = official_draws(list(names), list(topics), k, n, seed, "runs/x", num_topics=num_topics)
    assert [([s.name for s in c], t) for c, t in official] == expected and len(official) == len(expected)
    assert official.nbytes() == 2 * (k + 1) * len(expected)  # still k + 1 two-byte indices per pair
    interleaved = interleaved_compact(skills, topics, k, max(n, 1), seed, "key", num_topics=num_topics)
    expected = interleaved_draws(list(names), list(topics), k, max(n, 1), seed, "key", num_topics)
    assert [([s.name for s in c], t) for c, t in interleaved.draws()] == expected
    assert [([s.name for s in c], t) for c, t in interleaved] == [(c, t[0]) for c, t in expected]


@pytest.mark.parametrize("sampler", ["official", pytest.param("interleaved", marks=pytest.mark.slow)])
def test_planning_holds_a_few_bytes_per_combination(sampler):
    """10^5 combinations of k=3: the plan's drawn sample held as lists took ~150 bytes per combination
    (about 15 MB here, peak and kept); as indices it is 8 bytes (0.8 MB). The bounds leave room for the
    arrays' over-allocation and the catalogs, and fail by far on a list-form plan."""
    n = 100_000
    skills, topics = bundled_skills()[:4], bundled_topics()[:3]  # a small catalog keeps the shuffles quick
    config = SkillMixConfig(k=[3], n=n, seed=10, sampler=sampler, rounds=1)
    ctx = _ctx(config, skills, topics)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        plan = plan_threads(ctx)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == n
    held_per, peak_per = (held - before) / n, (peak - before) / n
    assert held_per < 20, f"the plan holds {held_per:.0f} bytes per combination"
    assert peak_per < 30, f"planning peaked at {peak_per:.0f} bytes per combination"
