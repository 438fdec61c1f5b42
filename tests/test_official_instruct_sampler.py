"""Instruct-SkillMix sampling in the released `1_generate_data.py` order (and types-first, by name).

The reference is a transcription of the driver's sampling calls on NumPy's global generator (skill
combinations, the doubled/shuffled/truncated query list, one in-place shuffle per combination at use, run
in plan order as one worker thread does). The queries are parsed with upstream's own `split('*')` rule.
"""

from itertools import combinations

import numpy as np
import pytest

from skillweave.agents.instruct_skillmix import sample_instruct_official, sample_instruct_plan
from skillweave.catalog.instruct_formats import QueryType
from skillweave.store import Store

SKILLS = ["budget_planning", "code_debugging", "persuasive_writing", "recipe_adaptation", "time_management",
          "data_visualization", "conflict_resolution", "travel_logistics", "poetry_meter"]
QUERIES_TXT = """### 1. **Information-Seeking**: The person wants facts about a subject.
### 2. **Planning**: The person needs a plan with steps and a timeline.
### 3. **Comparative**: The person weighs options against each other.
"""


def official_queries(text):
    out = []
    for elem in text.split("###"):
        if len(elem.strip()) > 0:
            parts = [p.strip() for p in elem.split("*") if len(p.strip()) > 0]
            out.append({"query_str": parts[1].strip(), "query_type": f"{parts[1].strip()}: {parts[2].strip()}"})
    return out


def official_plan(skills, queries, k, num, seed):
    np.random.seed(seed)
    if num > 0:
        comb_list = []
        for _ in range(num):
            np.random.shuffle(skills)
            comb_list.append(skills[:k])
    else:
        comb_list = [list(e) for e in sorted(combinations(skills, k))]
    while len(queries) < len(comb_list):
        queries += queries
    np.random.shuffle(queries)
    queries = queries[:len(comb_list)]
    plan = []
    for skills_, q in zip(comb_list, queries, strict=True):
        np.random.shuffle(skills_)
        plan.append((", ".join(skills_), q["query_str"]))
    return plan


def _types(text):
    return [QueryType(q["query_str"], q["query_type"].split(": ", 1)[1]) for q in official_queries(text)]


@pytest.mark.parametrize("k,n,seed", [(2, 10, 42), (2, 7, 4242), (1, 5, 0), (3, 20, 1), (2, -1, 42)])
def test_official_sampler_matches_the_transcribed_driver(k, n, seed):
    expected = official_plan(list(SKILLS), official_queries(QUERIES_TXT), k, n, seed)
    plan = sample_instruct_official(SKILLS, _types(QUERIES_TXT), n, k, seed)
    assert [(", ".join(c), q.name) for c, q in plan] == expected
    if n < 0:
        assert len(plan) == len(list(combinations(SKILLS, k)))


def test_types_first_is_a_different_named_order():
    official = sample_instruct_official(SKILLS, _types(QUERIES_TXT), 12, 2, 42)
    other = sample_instruct_plan(SKILLS, _types(QUERIES_TXT), 12, 2, 42)
    assert [(c, q.name) for c, q in official] != [(c, q.name) for c, q in other]


def test_run_defaults_to_the_official_plan(cli_run, db_path, tmp_path):
    (tmp_path / "skills.txt").write_text("\n".join(SKILLS))
    (tmp_path / "queries.txt").write_text(QUERIES_TXT)
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "6", "--skills",
                           str(tmp_path / "skills.txt"), "--queries", str(tmp_path / "queries.txt"))
    assert code == 0, err
    store = Store(db_path)
    run = store.get_run("latest")
    assert run["config"]["sampler"] == "official"
    items = sorted(store.items(run["id"]), key=lambda i: i["combo_index"])
    expected = official_plan(list(SKILLS), official_queries(QUERIES_TXT), 2, 6, 42)
    assert [(i["payload"]["skills_joined_str"], i["payload"]["query_str"]) for i in items] == expected
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "6", "--skills",
                           str(tmp_path / "skills.txt"), "--queries", str(tmp_path / "queries.txt"),
                           "--sampler", "types-first")
    assert code == 0, err
    run = store.get_run("latest")
    assert run["config"]["sampler"] == "types-first"
    items = sorted(store.items(run["id"]), key=lambda i: i["combo_index"])
    assert [i["skills"] for i in items] == [c for c, _ in sample_instruct_plan(SKILLS, _types(QUERIES_TXT), 6, 2, 42)]
