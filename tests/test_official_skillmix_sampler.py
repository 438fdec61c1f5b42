"""Skill-Mix sampling in the official `query_random.py` order (and the interleaved alternative, by name).

The references (tests/skillmix_reference.py) are a line-by-line transcription of the official driver's sampling
calls on the module-level `random` generator and the interleaved order's calls written out; the fixtures are our own files in the official skills.csv / topics.txt
formats. With SKILLWEAVE_OFFICIAL_SKILLMIX pointing at a checkout of LeoYu/skill-mix, one more test checks
`run skillmix` against the records the repository ships under test/.
"""

import copy
import csv
import os
from itertools import combinations
from pathlib import Path

import pytest

from skillweave.agents.skillmix import (
    official_prompt_orders,
    sample_official,
    sample_skill_combinations,
)
from skillweave.catalog import load_skills_csv
from skillweave.store import Store
from tests.skillmix_reference import interleaved_draws, official_draws, official_orders, official_sample

ROWS = [  # category, skill, definition, example, comments, status, added by
    ("rhetorical", "understatement", "Saying less than is meant. ", "It is a bit damp (in a flood).", "", "keep", ""),
    ("reasoning", "base rate neglect", "Ignoring how common a thing is.", "A rare disease test...", "", "", ""),
    ("literary", "anaphora", "Repeating the start of clauses.", "We shall fight...", "", "remove", ""),
    ("literary", "alliteration", "Repeated first sounds.", "Peter Piper...", "", "", "me"),
    ("theory of mind", "false belief", "Knowing others can be wrong.", "Sally looks in the basket.", "", "maybe", ""),
    ("rhetorical", "  hyperbole ", "Exaggeration for effect.", "I told you a million times.", "", "", ""),
    ("reasoning", "modus ponens", "If P then Q; P; so Q.", "It rains, so the street is wet.", "", "in review", ""),
    ("reasoning", "post hoc fallacy", "After, therefore because of.", "I wore socks and won.", "", "Remove", ""),
    ("literary", "irony", "Saying the opposite of what is meant.", "What lovely weather (in a storm).", "", "", ""),
    ("pragmatics", "politeness", "Softening a request.", "Could you possibly...", "", "", ""),
    ("literary", "metonymy", "Naming a thing by an associate.", "The crown decided.", "", "", ""),
    ("literary", "alliteration", "Same first sounds, again.", "Big bad bears.", "", "keep", ""),
]
TOPICS = ["Sailing", "Bread baking", "Chess", "Beekeeping", "Urban cycling", "Origami", "Volcanoes"]


@pytest.fixture
def catalog(tmp_path):
    skills_csv = tmp_path / "skills.csv"
    with skills_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "skill", "definition", "example", "comments", "status", "added by"])
        writer.writerows(ROWS)
    topics_txt = tmp_path / "topics.txt"
    topics_txt.write_text("\n".join(TOPICS))  # no final newline, as the released file
    return skills_csv, topics_txt


def official_skills_dict(path):
    """get_skills_dict, transcribed: exact status match, stripped names, a dict keyed by name."""
    skills = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["status"] not in ["remove", "in review", "maybe"]:
                row["skill"] = row["skill"].strip()
                skills[row["skill"]] = row
    return skills


def test_loader_reads_skills_csv_as_get_skills_dict(catalog):
    skills_csv, _ = catalog
    expected = official_skills_dict(skills_csv)
    loaded = load_skills_csv(skills_csv)
    assert [s.name for s in loaded] == list(expected)  # 'Remove' is kept, duplicates keep the first position
    assert "post hoc fallacy" in expected and "anaphora" not in expected
    by_name = {s.name: s for s in loaded}
    assert by_name["alliteration"].definition == "Same first sounds, again."  # the last row's fields win
    assert by_name["understatement"].definition == "Saying less than is meant. "  # kept as written


@pytest.mark.parametrize("k,n,seed,exp_path", [(3, 5, 10, "test"), (2, 12, 0, "runs/a"), (1, 3, 7, "x"),
                                               (2, -1, 10, "test"), (3, 0, 3, "test")])
def test_official_sampler_matches_the_transcribed_driver(catalog, k, n, seed, exp_path):
    skills_csv, _ = catalog
    names = [s.name for s in load_skills_csv(skills_csv)]
    expected = official_draws(list(official_skills_dict(skills_csv)), list(TOPICS), k, n, seed, exp_path)
    draws = sample_official(names, TOPICS, k, n, seed=seed)
    orders = official_prompt_orders(draws, exp_path)
    assert [(order[0], topics[0]) for (_, topics), order in zip(draws, orders, strict=True)] == expected
    if n <= 0:
        assert len(draws) == len(list(combinations(names, k)))


def test_official_sampler_with_several_topics_reshuffles_per_topic(catalog):
    skills_csv, _ = catalog
    names = list(official_skills_dict(skills_csv))
    expected = official_draws(list(names), list(TOPICS), 2, 4, 5, "exp", num_topics=3)
    draws = sample_official(names, TOPICS, 2, 4, seed=5, num_topics=3)
    got = [(order, topic) for (_, topics), orders in zip(draws, official_prompt_orders(draws, "exp"), strict=True)
           for order, topic in zip(orders, topics, strict=True)]
    assert got == expected


DRAWS = [(k, n, seed, num_topics) for k in range(1, 6) for n, seed, num_topics in
         [(-1, 10, 1), (-1, 6, 3), (0, 3, 2), (7, 0, 1), (12, 5, 3), (4, 42, 9)]]  # 9 topics: more than the 7 there are


@pytest.mark.parametrize(("k", "n", "seed", "num_topics"), DRAWS)
def test_official_draw_alone_matches_the_transcribed_driver(catalog, k, n, seed, num_topics):
    """`sample_official` (combinations and topics, before the in-prompt order) and then `official_prompt_orders`
    on its draws, each against its step of the transcription."""
    names = list(official_skills_dict(catalog[0]))
    combs, topic_lists = official_sample(list(names), list(TOPICS), k, n, seed, num_topics)
    draws = sample_official(names, TOPICS, k, n, seed=seed, num_topics=num_topics)
    assert draws == list(zip(combs, topic_lists, strict=True)) and draws
    orders = official_prompt_orders(draws, "runs/e")
    assert [(order, topic) for (_, topics), per in zip(draws, orders, strict=True)
            for order, topic in zip(per, topics, strict=True)] == official_orders(combs, topic_lists, "runs/e")
    # the reorder shuffled the transcription's lists in place, never the sampler's draws
    assert draws == list(zip(*official_sample(list(names), list(TOPICS), k, n, seed, num_topics), strict=True))


def test_prompt_orders_of_any_draws_follow_the_transcribed_loop():
    """The reorder takes any draws (other skills, one to three topics, none): once per topic, in place, in order."""
    draws = [(["a", "b", "c"], ["t1"]), (["d", "e"], ["t2", "t3", "t4"]), (["f", "g", "h", "i"], []),
             (["j"], ["t5", "t6"]), (["k", "l", "m", "n", "o"], ["t7", "t8"])] * 3
    before = copy.deepcopy(draws)
    orders = official_prompt_orders(draws, "exp")
    assert draws == before  # the caller's draws are not shuffled
    expected = official_orders([list(c) for c, _ in draws], [t for _, t in draws], "exp")
    assert [(order, topic) for (_, topics), per in zip(draws, orders, strict=True)
            for order, topic in zip(per, topics, strict=True)] == expected
    assert [len(per) for per in orders] == [len(t) for _, t in draws]


@pytest.mark.parametrize(("k", "n", "seed", "num_topics"), DRAWS)
@pytest.mark.parametrize("reshuffle_key", [None, "k3_s10"])
def test_interleaved_sampler_matches_its_transcription(catalog, k, n, seed, num_topics, reshuffle_key):
    names = list(official_skills_dict(catalog[0]))
    if n == -1 and num_topics > len(TOPICS):  # `sample` draws without replacement
        with pytest.raises(ValueError):
            sample_skill_combinations(names, TOPICS, k, n, seed=seed, num_topics=num_topics)
        return
    expected = interleaved_draws(list(names), list(TOPICS), k, n, seed, reshuffle_key, num_topics)
    got = sample_skill_combinations(names, TOPICS, k, n, seed=seed, num_topics=num_topics,
                                    reshuffle_key=reshuffle_key)
    assert got == expected
    assert bool(got) == (n != 0)  # n = 0 draws nothing on this sampler (the official one enumerates)


def test_interleaved_sampler_is_a_different_named_order(catalog):
    skills_csv, _ = catalog
    names = [s.name for s in load_skills_csv(skills_csv)]
    official = [(sorted(c), t) for c, t in sample_official(names, TOPICS, 2, 20, seed=10)]
    interleaved = [(sorted(c), t) for c, t in sample_skill_combinations(names, TOPICS, 2, 20, seed=10)]
    assert official != interleaved


def _run_items(cli_run, db_path, *args):
    code, _, err = cli_run("run", "skillmix", "--model", "fake", "--grading-samples", "1", *args)
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    return run, sorted(store.items(run["id"]), key=lambda i: (i["combo_index"], i["round"]))


def test_run_skillmix_defaults_to_the_official_pairs_in_order(cli_run, db_path, catalog):
    skills_csv, topics_txt = catalog
    run, items = _run_items(cli_run, db_path, "--skills", str(skills_csv), "--topics", str(topics_txt),
                            "--k", "2,3", "--n", "4", "--rounds", "2", "--seed", "10")
    assert run["config"]["sampler"] == "official" and run["config"]["exp_path"] == "test"
    expected = []
    for k in (2, 3):  # upstream runs one process per k, each from the same seeds
        expected += official_draws(list(official_skills_dict(skills_csv)), list(TOPICS), k, 4, 10)
    by_index = {}
    for item in items:  # every round repeats its combination with the same in-prompt order
        by_index.setdefault(item["combo_index"], set()).add((tuple(item["skills"]), item["topic"]))
    assert [next(iter(v)) for _, v in sorted(by_index.items())] == [(tuple(c), t) for c, t in expected]
    assert all(len(v) == 1 for v in by_index.values()) and len(items) == 2 * len(expected)
    # the prompt lists the skills in that order
    first = items[0]
    assert [r["name"] for r in first["payload"]["skill_rows"]] == first["skills"]


def test_run_skillmix_interleaved_sampler_by_name(cli_run, db_path, catalog):
    skills_csv, topics_txt = catalog
    run, items = _run_items(cli_run, db_path, "--skills", str(skills_csv), "--topics", str(topics_txt),
                            "--k", "2", "--n", "3", "--rounds", "1", "--sampler", "interleaved")
    assert run["config"]["sampler"] == "interleaved"  # (exp_path is stored with every typed config; unused here)
    names = [s.name for s in load_skills_csv(skills_csv)]
    expected = interleaved_draws(list(names), list(TOPICS), 2, 3, 10, reshuffle_key="k2_s10")
    assert [(i["skills"], i["topic"]) for i in items] == [(c, t[0]) for c, t in expected]


OFFICIAL = os.environ.get("SKILLWEAVE_OFFICIAL_SKILLMIX")


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_SKILLMIX to a checkout of LeoYu/skill-mix")
def test_against_the_official_checkout(cli_run, db_path):
    """The repository's test/ outputs were made by test_pipeline.sh: k=3, 5 combinations, seed 10, exp_path
    'test', three generation rounds. Every shipped records.csv lists the pairs in generation order."""
    root = Path(OFFICIAL)
    _, items = _run_items(cli_run, db_path, "--skills", str(root / "skills.csv"), "--topics",
                          str(root / "topics.txt"), "--k", "3", "--n", "5", "--rounds", "3", "--seed", "10")
    ours = [(i["skills"], i["topic"]) for i in items if i["round"] == 0]
    records = sorted((root / "test").glob("k3_s10_vdefault_r*/*/records.csv"))
    assert records
    for path in records:
        with path.open(newline="", encoding="utf-8") as fh:
            shipped = [(row["skills"].split(", \n"), row["topic"]) for row in csv.DictReader(fh)]
        assert ours == shipped, path


def test_runs_stored_before_the_option_keep_their_plan(catalog):
    """A config without `sampler` (stored by an older version) plans as it did then: interleaved."""
    from skillweave.agents.skillmix import plan_combinations
    from skillweave.pipelines import get_pipeline

    skills_csv, _ = catalog
    names = [s.name for s in load_skills_csv(skills_csv)]
    old = get_pipeline("skillmix").load_config({"n": 4, "seed": 10})  # as resume loads a stored config
    expected = interleaved_draws(list(names), list(TOPICS), 2, 4, 10, reshuffle_key="k2_s10")
    assert plan_combinations(old, names, TOPICS, 2) == [(c, t[0]) for c, t in expected]
    with pytest.raises(ValueError, match="unknown Skill-Mix sampler 'mine'"):
        plan_combinations(old.model_copy(update={"sampler": "mine"}), names, TOPICS, 2)
