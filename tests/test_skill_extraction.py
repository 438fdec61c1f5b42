"""Skill extraction: reply parsers, the dataset route end to end with a scripted model, the review pause and
resume from the CLI, parse-failure handling, the dataset-agnostic route, and import/export round trips."""

from __future__ import annotations

import json
import re

import pytest

from skillweave.agents.skill_extraction import (
    dedupe_skills,
    parse_choice,
    parse_clusters,
    parse_skill_label,
    parse_skill_outline,
)
from skillweave.catalog import instruct_formats as fmt
from skillweave.catalog.bank import bank_from_catalog
from skillweave.catalog.mathdata import bundled_questions
from skillweave.errors import ParseFailure
from skillweave.pipelines import get_pipeline
from skillweave.providers.core import FakeProvider, message_text, register_provider
from skillweave.store import Store

CONC = 4


def run_bundled(cli_run, limit: int, *options: str, model: str = "fake:oracle", concurrency: int = CONC):
    """`skillweave run extract-skills` on the first `limit` bundled train questions; returns (code, out, err)."""
    return cli_run("run", "extract-skills", "--dataset", "bundled", "--split", "train", "--limit", str(limit),
                   "--model", model, "--concurrency", str(concurrency), *options)


def latest_run_id(db_path) -> str:
    return Store(db_path).list_runs(pipeline="extract-skills")[0]["id"]

# Two fine spellings per true skill, so clustering has real work: the scripted clusterer merges them back.
QUESTIONS = {q["question"]: q for q in bundled_questions("train")}


def _fine(question: str) -> str:
    q = QUESTIONS[question]
    variant = int(q["id"].rsplit("-", 1)[1]) % 2
    return f"{q['skill']}_{'technique' if variant else 'method'}"


def _user(request) -> str:
    return message_text(request.messages[-1])


def oracle_script(request):
    text = _user(request)
    if "Which one skill does a student most need" in text:
        question = re.search(r"Problem:\n(.+?)\n", text).group(1).strip()
        return f"Skill: {_fine(question)}"
    if "fine-grained skill labels" in text:
        labels = re.findall(r"^- (\S+) \(\d+\)", text, re.M)
        groups: dict[str, list[str]] = {}
        for label in labels:
            groups.setdefault(re.sub(r"_(technique|method)$", "", label), []).append(label)
        return (
            "```json\n"
            + json.dumps(
                {
                    "skills": [
                        {"name": name, "definition": f"The skill {name}.", "members": members}
                        for name, members in groups.items()
                    ]
                }
            )
            + "\n```"
        )
    if "Which one of the following skills" in text:
        return "Skill: " + re.findall(r"^- (\w+):", text, re.M)[-1]
    raise AssertionError(f"unexpected prompt: {text[:80]}")


def test_parse_skill_label():
    assert parse_skill_label("Skill: fraction_simplification") == "fraction_simplification"
    assert parse_skill_label("**Skill:** `Modular Arithmetic`\nbecause...") == "modular_arithmetic"
    assert parse_skill_label("base_conversion") == "base_conversion"
    assert parse_skill_label('The skill a student needs most is "Ratio Reasoning".') == "ratio_reasoning"
    for bad in (
        "",
        "I think this needs algebra and geometry",
        "Skill: 42",
        'The skill needed is "30% of 580"',
    ):
        with pytest.raises(ParseFailure):
            parse_skill_label(bad)


def test_parse_choice_picks_exactly_one_listed_name():
    names = ["gcd_lcm", "modular_arithmetic", "linear_equations"]
    assert parse_choice("Skill: modular_arithmetic", names) == "modular_arithmetic"
    assert parse_choice("Skill: gcd_lcm because it asks for a divisor", names) == "gcd_lcm"
    assert parse_choice("The problem needs linear_equations to solve.", names) == "linear_equations"
    with pytest.raises(ParseFailure, match="several"):
        parse_choice("either gcd_lcm or modular_arithmetic", names)
    with pytest.raises(ParseFailure, match="no"):
        parse_choice("Skill: geometry", names)


def test_parse_clusters_formats_and_missing_labels():
    labels = ["a_x", "a_y", "b_x"]
    groups, missing = parse_clusters(
        '{"skills": [{"name": "A Skills", "definition": "d", "members": ["a_x", "a_y", "zzz"]}]}', labels
    )
    assert groups == [{"name": "a_skills", "definition": "d", "members": ["a_x", "a_y"]}] and missing == [
        "b_x"
    ]
    groups, missing = parse_clusters('Here:\n```json\n{"a": ["a_x", "a_y"], "b": ["b_x"]}\n```', labels)
    assert [g["name"] for g in groups] == ["a", "b"] and not missing
    groups, _ = parse_clusters('{"a_x": "a", "a_y": "a", "b_x": "b"}', labels)
    assert groups[0]["members"] == ["a_x", "a_y"]
    with pytest.raises(ParseFailure):
        parse_clusters("no json here", labels)
    with pytest.raises(ParseFailure):
        parse_clusters('{"skills": [{"name": "!!", "members": ["a_x"]}]}', labels)


def test_outline_and_dedupe():
    pairs = parse_skill_outline(
        "## Writing\n- concise_summary\n- Concise Summary\n## Logic\n1. error_analysis\n"
    )
    assert pairs == [
        ("Writing", "concise_summary"),
        ("Writing", "concise_summary"),
        ("Logic", "error_analysis"),
    ]
    assert [(s["name"], s["count"]) for s in dedupe_skills(pairs)] == [
        ("concise_summary", 2),
        ("error_analysis", 1),
    ]


def test_dataset_route_builds_a_bank_with_provenance(cli_run, db_path):
    register_provider("fake:oracle", FakeProvider("oracle", script=oracle_script), max_concurrency=CONC)
    # the first 7 skills (4 train questions each), gcd_lcm included
    code, out, err = run_bundled(cli_run, 28, "--reviewer", "auto", "--bank-name", "mybank")
    assert code == 0, err
    store = Store(db_path)
    run = store.list_runs(pipeline="extract-skills")[0]
    from skillweave.agents.skill_extraction import run_report

    report = run_report(store, store.get_run(run["id"]))
    assert report["status"] == "done" and report["questions"] == {"relabelled": 28}
    assert report["fine_labels"] == 14 and report["coarse_skills"] == 7
    assert report["purity"] == 1.0 and report["inverse_purity"] == 1.0
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run["id"])["bank"]))
    assert bank.name == "mybank" and len(bank.exemplars) == 28
    skill = bank.skill("gcd_lcm")
    assert skill.subject == "number_theory" and skill.fine == ["gcd_lcm_method", "gcd_lcm_technique"]
    assert skill.definition == "The skill gcd_lcm."
    x = next(x for x in bank.exemplars if x.skill == "gcd_lcm")
    assert x.provenance["label_model"] == "fake:oracle" and x.provenance["fine_skill"].startswith("gcd_lcm_")
    assert x.provenance["prompt_versions"][0].startswith("b3:")
    lineage = store.lineage(x.source_item_id)
    assert [c["role"] for c in lineage["llm_calls"]] == ["label"]
    assert lineage["catalogs"]["dataset"].startswith("questions-")
    # the bank is usable by name and exports to AdaptMI JSON
    code, out, _ = cli_run("skills", "show", "mybank", "--json")
    assert code == 0 and {r["skill"]: r["exemplars"] for r in json.loads(out)["rows"]}["gcd_lcm"] == 4


def test_review_pause_edit_and_approve_from_the_cli(cli_run, db_path):
    register_provider("fake:oracle", FakeProvider("oracle", script=oracle_script), max_concurrency=CONC)
    code, _, err = run_bundled(cli_run, 16)
    assert code == 4 and "paused for review" in err  # paused: exit status 4 (docs/large-runs.md)
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    assert store.run_catalogs(run_id).get("bank") is None  # nothing relabelled before the review
    code, out, _ = cli_run("review", "skills", "list", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [run_id]
    # 16 questions: percentage, ratio_proportion, order_of_operations, linear_equations (4 each)
    assert (
        cli_run(
            "review",
            "skills",
            "merge",
            run_id,
            "percentage",
            "ratio_proportion",
            "--into",
            "proportional_reasoning",
        )[0]
        == 0
    )
    assert (
        cli_run("review", "skills", "rename", run_id, "order_of_operations", "Arithmetic Evaluation")[0] == 0
    )
    assert (
        cli_run(
            "review",
            "skills",
            "split",
            run_id,
            "linear_equations",
            "--into",
            "linear_a=linear_equations_method",
            "--into",
            "linear_b=linear_equations_technique",
        )[0]
        == 0
    )
    assert cli_run("review", "skills", "drop", run_id, "linear_b")[0] == 0
    code, _, err = cli_run("review", "skills", "drop", run_id, "no_such_skill")
    assert code == 2 and "no coarse skill 'no_such_skill'" in err
    code, out, _ = cli_run("review", "skills", "show", run_id, "--json")
    draft = json.loads(out)
    assert [s["name"] for s in draft["skills"]] == [
        "arithmetic_evaluation",
        "linear_a",
        "proportional_reasoning",
    ] or sorted(s["name"] for s in draft["skills"]) == [
        "arithmetic_evaluation",
        "linear_a",
        "proportional_reasoning",
    ]
    assert len(draft["ops"]) == 4
    code, out, err = cli_run(
        "review", "skills", "approve", run_id, "--reason", "looks right", "--reviewer", "ana"
    )
    assert code == 0, err
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    counts = {s: len(v) for s, v in bank.by_skill().items()}
    # the dropped skill's 2 questions were relabelled by the model (the script picks the last listed skill)
    assert counts == {"arithmetic_evaluation": 4, "linear_a": 4, "proportional_reasoning": 8}
    relabelled = [x for x in bank.exemplars if x.provenance["relabel"] == "llm"]
    assert len(relabelled) == 2 and all(
        x.provenance["fine_skill"] == "linear_equations_technique" for x in relabelled
    )
    reviews = list(store.db["reviews"].rows_where("run_id = ?", [run_id]))
    assert len(reviews) == 1 and reviews[0]["reviewer"] == "ana" and reviews[0]["decision"] == "edit"
    assert [op["op"] for op in json.loads(reviews[0]["changes"])["ops"]] == [
        "merge",
        "rename",
        "split",
        "drop",
    ]
    code, _, err = cli_run("review", "skills", "approve", run_id)
    assert code == 2 and "not waiting" in err


def test_drop_with_exclusion_and_reject(cli_run, db_path):
    register_provider("fake:oracle", FakeProvider("oracle", script=oracle_script), max_concurrency=CONC)
    run_bundled(cli_run, 8)
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    assert cli_run("review", "skills", "drop", run_id, "percentage", "--exclude-questions")[0] == 0
    assert cli_run("review", "skills", "approve", run_id)[0] == 0
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    assert bank.skill_names() == ["ratio_proportion"] and len(bank.exemplars) == 4
    assert sum(1 for _ in store.items(run_id, status="excluded")) == 4
    # a second run, rejected: no bank
    run_bundled(cli_run, 4)
    run2 = latest_run_id(db_path)
    code, _, err = cli_run("review", "skills", "reject", run2, "--reason", "too coarse")
    assert code == 0, err
    assert "bank" not in store.run_catalogs(run2)


def test_unparseable_labels_are_retried_then_failed(cli_run, db_path):
    calls = {"n": 0}

    def script(request):
        text = _user(request)
        if "Which one skill" in text:
            calls["n"] += 1
            question = re.search(r"Problem:\n(.+?)\n", text).group(1).strip()
            if QUESTIONS[question]["id"] == "percentage-0":
                return "I am not sure what to say here."
            return (
                "Skill: percent_stuff" if calls["n"] % 2 else "no idea, sorry!"
            )  # every other reply fails once
        return oracle_script(request)

    register_provider("fake:s", FakeProvider("s", script=script), max_concurrency=1)
    code, _, err = run_bundled(cli_run, 4, "--reviewer", "auto", "--parse-retries", "2", model="fake:s", concurrency=1)
    assert code == 0, err
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    failed = list(store.items(run_id, kind="skills.question", status="failed"))
    assert len(failed) == 1 and "no parseable reply after 3 attempts" in failed[0]["error"]
    assert failed[0]["payload"]["question_id"] == "percentage-0"
    events = list(store.db["events"].rows_where("run_id = ? and status = 'parse_failed'", [run_id]))
    assert len(events) >= 3
    assert sum(1 for _ in store.items(run_id, kind="skills.question", status="relabelled")) == 3


def test_dataset_agnostic_route_dedupes_and_exports(cli_run, db_path, tmp_path):
    code, _, err = cli_run(
        "run", "extract-skills", "--model", "fake", "--reviewer", "auto", "--bank-name", "sda"
    )
    assert code == 0, err
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    roles = store.run_catalogs(run_id)
    skills = [e["name"] for e in store.get_catalog(roles["skills"])["entries"]]
    # the fake reply repeats concise_summarization and spells one skill "Error Analysis"
    assert skills == [
        "concise_summarization",
        "persuasive_argumentation",
        "step_by_step_planning",
        "error_analysis",
        "polite_request_phrasing",
    ]
    queries = [e["name"] for e in store.get_catalog(roles["query_types"])["entries"]]
    assert queries == ["Information-Seeking", "Decision-Making"]
    assert cli_run("skills", "export", "sda", str(tmp_path / "skills.txt"), "--format", "skills-txt")[0] == 0
    assert fmt.read_skills_txt(tmp_path / "skills.txt") == skills
    code, _, err = cli_run("skills", "export", roles["query_types"], str(tmp_path / "queries.txt"))
    assert code == 0, err
    assert [q.name for q in fmt.read_queries_txt(tmp_path / "queries.txt")] == queries


def test_import_export_round_trips(cli_run, tmp_path):
    bank = {
        "skills": ["b", "a"],
        "example_nums": {"a": 1, "b": 3},
        "skill_dict": {
            "a": [{"question": "q1", "answer": "s1"}],
            "b": [{"question": "q2", "answer": "s2", "x": 1}],
        },
    }
    (tmp_path / "bank.json").write_text(json.dumps(bank))
    code, out, err = cli_run("skills", "import", str(tmp_path / "bank.json"), "--name", "ext", "--json")
    assert code == 0, err and json.loads(out)["exemplars"] == 2
    assert cli_run("skills", "export", "ext", str(tmp_path / "out.json"))[0] == 0
    assert json.loads((tmp_path / "out.json").read_text()) == bank
    skills_txt = "marketing_and_promotion\nbudget_planning\nmarketing_and_promotion\n"
    (tmp_path / "skills.txt").write_text(skills_txt)
    assert cli_run("skills", "import", str(tmp_path / "skills.txt"), "--name", "sk")[0] == 0
    assert cli_run("skills", "export", "sk", str(tmp_path / "skills_out.txt"))[0] == 0
    assert (tmp_path / "skills_out.txt").read_text() == skills_txt
    queries = fmt.bundled_query_types()
    fmt.write_queries_txt(tmp_path / "queries.txt", queries)
    assert cli_run("skills", "import", str(tmp_path / "queries.txt"), "--name", "qt")[0] == 0
    assert cli_run("skills", "export", "qt", str(tmp_path / "queries_out.txt"))[0] == 0
    assert (tmp_path / "queries_out.txt").read_text() == (tmp_path / "queries.txt").read_text()
    assert fmt.read_queries_txt(tmp_path / "queries_out.txt") == queries
    code, _, err = cli_run("skills", "export", "sk", str(tmp_path / "x.json"))
    assert code == 2 and "needs a skill bank" in err
    code, _, err = cli_run("skills", "show", "nothing")
    assert code == 2 and "no skill bank or catalog 'nothing'" in err


def test_generic_review_commands_see_and_approve_the_catalog(cli_run, db_path):
    register_provider("fake:oracle", FakeProvider("oracle", script=oracle_script), max_concurrency=CONC)
    run_bundled(cli_run, 4)
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    item = next(store.items(run_id, kind="skills.catalog"))
    code, out, err = cli_run("review", "show", item["id"])
    assert code == 0, err
    assert "percentage: percentage_method, percentage_technique" in out
    code, _, err = cli_run("review", "approve", item["id"])
    assert code == 0, err
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    assert bank.skill_names() == ["percentage"] and len(bank.exemplars) == 4


def _family_embed(texts):
    """A stand-in for MiniLM: labels of the same family ('... gcd', '... modular') share a direction."""
    import numpy as np

    families = sorted({t.split()[-1] for t in texts})
    out = np.zeros((len(texts), len(families) + 1))
    for i, t in enumerate(texts):
        out[i, families.index(t.split()[-1])] = 1.0
        out[i, -1] = 0.01 * i
    return out


def test_embedding_pregrouping_keeps_similar_labels_together():
    from skillweave.agents.skill_grouping import batch_labels

    labels = [f"{p}_{fam}" for fam in ("gcd", "modular", "base") for p in ("alpha", "mid", "zed")]
    alpha = batch_labels(labels, 3, "alpha")
    assert any(len({b.split("_")[-1] for b in batch}) > 1 for batch in alpha)  # name order mixes families
    embed = batch_labels(labels, 3, "embed", embed=_family_embed)
    assert sorted(len(b) for b in embed) == [3, 3, 3]
    assert all(len({b.split("_")[-1] for b in batch}) == 1 for batch in embed)
    assert batch_labels(labels, 3, "embed", embed=_family_embed) == embed  # seeded
    assert sum(len(b) for b in batch_labels(labels, 2, "embed", embed=_family_embed)) == len(labels)


def test_pregroup_option_batches_the_clustering_calls(cli_run, db_path, monkeypatch):
    import skillweave.agents.skill_grouping as grouping

    # group by the label's last word (method / technique): different from name order, so the test can fail
    monkeypatch.setattr(grouping, "minilm_embed", _family_embed)
    register_provider("fake:oracle", FakeProvider("oracle", script=oracle_script), max_concurrency=CONC)
    code, _, err = run_bundled(cli_run, 12, "--reviewer", "auto", "--cluster-batch", "2", "--pregroup", "embed")
    assert code == 0, err
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    calls = list(store.db["llm_calls"].rows_where("run_id = ? and role like 'cluster:%'", [run_id]))
    batches = [
        re.findall(r"^- (\S+) \(\d+\)", json.loads(c["request"])["messages"][-1]["content"], re.M)
        for c in calls
    ]
    assert sorted(len(b) for b in batches) == [1, 1, 2, 2]
    assert all(len({b.rsplit("_", 1)[-1] for b in batch}) == 1 for batch in batches)
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    assert bank.skill_names() == ["order_of_operations", "percentage", "ratio_proportion"] or sorted(
        bank.skill_names()
    ) == ["order_of_operations", "percentage", "ratio_proportion"]


# LangGraph's callback manager complains (unraisably) when Ctrl-C tears the event loop down mid-node
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::RuntimeWarning")
def test_interrupted_run_resumes_without_repeating_calls(store):
    from skillweave.agents.solver import dataset_entries
    from skillweave.graphs.runtime import run_pipeline

    rows = bundled_questions("train")[:8]
    config = {
        "model": "fake:intr",
        "reviewer": "auto",
        "relabel": "map",
        "concurrency": 1,
        "parse_retries": 0,
        "label_template": "skill_extraction/label",
        "cluster_template": "skill_extraction/cluster",
        "relabel_template": "skill_extraction/relabel",
        "dataset_catalog": store.save_catalog("d", "questions", dataset_entries(rows)),
    }
    run_id = store.create_run("extract-skills", config)
    seen = {"labels": 0}

    def interrupting(request):
        if "Which one skill" in _user(request):
            seen["labels"] += 1
            if seen["labels"] == 4:
                raise KeyboardInterrupt  # the user presses Ctrl-C during the fourth label call
        return oracle_script(request)

    register_provider("fake:intr", FakeProvider("intr", script=interrupting), max_concurrency=1)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(get_pipeline("extract-skills"), store, run_id, concurrency=1, progress=False)
    assert store.get_run(run_id)["status"] == "interrupted"
    import gc
    import warnings

    with warnings.catch_warnings():  # collect the torn-down coroutines here, not in a later test
        warnings.simplefilter("ignore")
        gc.collect()
    done_before = store.db["llm_calls"].count_where("run_id = ? and error is null", [run_id])
    assert done_before == 3
    summary = run_pipeline(get_pipeline("extract-skills"), store, run_id, concurrency=1, progress=False)
    assert summary.done == 1 and store.get_run(run_id)["status"] == "done"
    labels = store.db["llm_calls"].count_where("run_id = ? and role = 'label' and error is null", [run_id])
    assert labels == 8  # 3 before the interruption + 5 after; none repeated
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    assert len(bank.exemplars) == 8


def test_same_fine_label_in_two_subjects_keeps_each_subjects_coarse_skill(cli_run, db_path, tmp_path):
    rows = [
        {"question": f"Q{i} about {s}?", "answer": str(i), "subject": s}
        for i, s in enumerate(["geo", "alg"] * 2)
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def script(request):
        text = _user(request)
        if "Which one skill" in text:
            return "Skill: other_label" if "Q2 about" in text else "Skill: shared_label"
        if "fine-grained skill labels" in text:
            # geo: shared -> x, other -> y; alg: shared -> y (so y spans both subjects)
            if '"geo"' in text:
                groups = [
                    {"name": "x", "members": ["shared_label"]},
                    {"name": "y", "members": ["other_label"]},
                ]
            else:
                groups = [{"name": "y", "members": ["shared_label"]}]
            return json.dumps({"skills": groups})
        raise AssertionError(text[:80])

    register_provider("fake:two", FakeProvider("two", script=script), max_concurrency=CONC)
    code, _, err = cli_run(
        "run",
        "extract-skills",
        "--dataset",
        str(tmp_path / "d.jsonl"),
        "--model",
        "fake:two",
        "--reviewer",
        "auto",
        "--concurrency",
        str(CONC),
    )
    assert code == 0, err
    store = Store(db_path)
    run_id = latest_run_id(db_path)
    bank = bank_from_catalog(store.get_catalog(store.run_catalogs(run_id)["bank"]))
    assert {(x.provenance["subject"], x.skill, x.provenance["fine_skill"]) for x in bank.exemplars} == {
        ("geo", "x", "shared_label"),
        ("geo", "y", "other_label"),
        ("alg", "y", "shared_label"),
    }
