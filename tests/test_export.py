"""Exports: every format loads back with its natural reader, shapes and filters behave, the card says what was
done, the Skill-Mix full-marks recipe (Zhao et al.) works, and the JSONL feeds `trainers.data` (TRL's SFTTrainer: test_export_trl.py)."""

from __future__ import annotations

import json

import pytest

from skillweave.catalog.instruct_formats import (
    bundled_instruct_skills,
    bundled_query_types,
    query_entries,
    skill_entries,
)
from skillweave.errors import UsageError
from skillweave.export import ExportFilters, export_runs
from skillweave.graphs.runtime import run_pipeline
from skillweave.pipelines import get_pipeline

KIND = "instruct_skillmix.example"


def make_instruct_run(store, n: int = 10, shirker_fraction: float = 0.2) -> str:
    config = {
        "n": n, "k": 2, "set": "train", "seed": 42, "model": "fake", "temperature": 0.7, "max_tokens": 512,
        "parse_retries": 3, "shirker_fraction": shirker_fraction, "shirker_selection": "first", "brevity": False,
        "dedup": "minhash", "dedup_threshold": None, "concurrency": 8,
        "generate_template": "instruct_skillmix/generate", "shirker_template": "instruct_skillmix/shirker",
        "skills_catalog": store.save_catalog("bundled", "skills", skill_entries(bundled_instruct_skills())),
        "query_types_catalog": store.save_catalog("bundled", "query_types", query_entries(bundled_query_types())),
    }
    run_id = store.create_run("instruct-skillmix", config, command="skillweave run instruct-skillmix --model fake")
    summary = run_pipeline(get_pipeline("instruct-skillmix"), store, run_id, progress=False)
    assert summary.done == n
    return run_id


@pytest.fixture(scope="module")
def _ism_template(tmp_path_factory):
    """One fake Instruct-SkillMix run (10 points, 2 shirkers) per module; each test gets its own copy."""
    from skillweave.store import Store

    path = tmp_path_factory.mktemp("ism") / "template.db"
    store = Store(path)
    run_id = make_instruct_run(store)
    store.close()  # the last connection closing checkpoints the WAL into the file
    return path, run_id


@pytest.fixture
def ism(_ism_template, tmp_path):
    import shutil

    from skillweave.store import Store

    source, run_id = _ism_template
    shutil.copy(source, tmp_path / "ism.db")
    store = Store(tmp_path / "ism.db")
    yield store, run_id
    store.close()


def test_every_format_loads_back_with_its_natural_reader(ism, tmp_path):
    import datasets
    import pandas as pd

    store, run_id = ism
    item_ids = {i["id"] for i in store.items(run_id)}
    loaded = {}
    for fmt, name in (("jsonl", "d.jsonl"), ("json", "d.json"), ("parquet", "d.parquet"), ("hf", "d_hf")):
        result = export_runs(store, [run_id], tmp_path / name, fmt=fmt, shape="prompt-completion")
        assert result["rows"] == 10
        path = tmp_path / name
        if fmt == "jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
        elif fmt == "json":
            rows = json.loads(path.read_text())
        elif fmt == "parquet":
            rows = pd.read_parquet(path).to_dict("records")
        else:
            rows = list(datasets.load_from_disk(str(path)))
            assert (path / "README.md").is_file()
        loaded[fmt] = rows
        assert {r["item_id"] for r in rows} == item_ids
        assert all(r["prompt"] and r["completion"] and r["run_id"] == run_id for r in rows)
    assert [r["prompt"] for r in loaded["jsonl"]] == [r["prompt"] for r in loaded["hf"]]
    assert (tmp_path / "d.jsonl.card.md").is_file() and (tmp_path / "d.parquet.card.md").is_file()


def test_shapes_use_standard_field_names(ism, tmp_path):
    store, run_id = ism
    export_runs(store, [run_id], tmp_path / "a.jsonl", shape="alpaca")
    alpaca = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {"instruction", "input", "output", "item_id", "orig_instruction", "skills_joined_str",
            "query_type"} <= set(alpaca[0])
    export_runs(store, [run_id], tmp_path / "m.jsonl", shape="messages", system="Be helpful.")
    messages = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [m["role"] for m in messages[0]["messages"]] == ["system", "user", "assistant"]
    assert messages[0]["messages"][1]["content"] == alpaca[0]["instruction"]
    assert messages[0]["messages"][2]["content"] == alpaca[0]["output"]
    result = export_runs(store, [run_id], tmp_path / "p.jsonl", shape="preference")
    pairs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert result["rows"] == 2 and result["dropped"] == {"no preference pair for this item": 8}
    shirkers = {i["id"]: i["payload"] for i in store.items(run_id) if i["payload"].get("shirker")}
    for pair in pairs:
        assert pair["chosen"] == shirkers[pair["item_id"]]["orig_output"]
        assert pair["rejected"] == shirkers[pair["item_id"]]["output"] != pair["chosen"]


def test_filters_shirkers_reviews_and_card(ism, tmp_path):
    store, run_id = ism
    items = list(store.items(run_id))
    shirker_ids = {i["id"] for i in items if i["payload"].get("shirker")}
    assert len(shirker_ids) == 2
    result = export_runs(store, [run_id], tmp_path / "a.jsonl", filters=ExportFilters(exclude_shirkers=True),
                         command="skillweave export X --exclude-shirkers")
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert result["rows"] == 8 and not shirker_ids & {r["item_id"] for r in rows}
    card = (tmp_path / "a.jsonl.card.md").read_text()
    for expected in ("8 rows", "2 shirker response", "exclude_shirkers: True", "generator calls: fake:default",
                     "instruct_skillmix/generate b3:", "seed 42", "skillweave export X --exclude-shirkers",
                     "skillweave run instruct-skillmix --model fake"):
        assert expected in card, expected

    honest = [i for i in items if i["id"] not in shirker_ids]
    store.add_review(honest[0]["id"], run_id, "ann", "approve")
    store.add_review(honest[1]["id"], run_id, "ann", "edit", changes={"output": "An edited answer."})
    store.add_review(honest[2]["id"], run_id, "ann", "reject", reason="off topic")
    export_runs(store, [run_id], tmp_path / "r.jsonl", filters=ExportFilters(reviewed_only=True))
    reviewed = {r["item_id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert set(reviewed) == {honest[0]["id"], honest[1]["id"]}
    assert reviewed[honest[1]["id"]]["output"] == "An edited answer."
    result = export_runs(store, [run_id], tmp_path / "all.jsonl")
    assert result["rows"] == 9 and result["dropped"] == {"rejected by a reviewer": 1}


def test_errors_name_the_fix(ism, tmp_path):
    store, run_id = ism
    export_runs(store, [run_id], tmp_path / "a.jsonl")
    with pytest.raises(UsageError, match="--overwrite"):
        export_runs(store, [run_id], tmp_path / "a.jsonl")
    assert export_runs(store, [run_id], tmp_path / "a.jsonl", overwrite=True)["rows"] == 10
    with pytest.raises(UsageError, match="no rows to export .*10 status done"):
        export_runs(store, [run_id], tmp_path / "b.jsonl", filters=ExportFilters(status="failed"))
    with pytest.raises(UsageError, match="does not exist"):
        export_runs(store, [run_id], tmp_path / "missing" / "c.jsonl")


def make_skillmix_run(store) -> str:
    """A hand-built graded Skill-Mix run (train split) with known votes."""
    run_id = store.create_run("skillmix", {"k": [1, 2], "seed": 10, "split": "train",
                                           "train_categories": "literary,rhetorical", "model": "fake", "judge": "fake"})
    full = [1, 1, 1, 1]

    def add(combo, round_, k, samples, status="done"):
        item_id = store.ensure_item(run_id, "skillmix.text", combo, round_, k=k, skills=["metaphor", "irony"][:k],
                                    topic="Beekeeping", payload={"prompt_0": f"TURN0 request {combo}",
                                                                 "text_1": f"text {combo}.{round_}"})
        store.update_item(item_id, status=status)
        for j, points in enumerate(samples):
            store.add_grade(item_id, run_id, j, judge="fake", points=points, score=sum(points))
        return item_id

    add(0, 0, 1, [full] * 3)                                   # k=1 full marks
    add(0, 1, 1, [[0, 1, 1, 1]] * 3)                           # same combination, lower score
    add(1, 0, 2, [full + [1], full + [1], [0, 1, 1, 1, 1]])    # majority vote -> full marks
    add(1, 1, 2, [full + [1]] * 3)                             # tie with round 0: no pair
    add(2, 0, 2, [[1, 1, 1, 1, 0]] * 3)                        # length point lost
    add(3, 0, 2, [], status="failed")
    return run_id


def test_skillmix_full_marks_recipe_and_round_pairs(store, tmp_path):
    run_id = make_skillmix_run(store)
    result = export_runs(store, [run_id], tmp_path / "d.jsonl", shape="prompt-completion",
                         filters=ExportFilters(full_marks=True))
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert sorted(r["completion"] for r in rows) == ["text 0.0", "text 1.0", "text 1.1"]
    assert all(r["prompt"].startswith("TURN0 request") and r["category_split"] == "train" for r in rows)
    assert result["dropped"] == {"not full marks": 2, "status failed (not done)": 1}
    export_runs(store, [run_id], tmp_path / "d1.jsonl", filters=ExportFilters(full_marks=True, k=[1]))
    assert [json.loads(x)["k"] for x in (tmp_path / "d1.jsonl").read_text().splitlines()] == [1]
    export_runs(store, [run_id], tmp_path / "s.jsonl", filters=ExportFilters(min_score=4.5))
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 2  # the two k=2 rounds scoring 5
    result = export_runs(store, [run_id], tmp_path / "p.jsonl", shape="preference")
    pairs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("text 0.0", "text 0.1")]
    assert pairs[0]["rejected_item_id"] != pairs[0]["item_id"]


def test_cli_export_prints_summary_and_one_line_errors(cli_run, db_path, tmp_path):
    code, _, err = cli_run("run", "instruct-skillmix", "--model", "fake", "--n", "5", "--shirkers")
    assert code == 0, err
    out_path = tmp_path / "x.parquet"
    code, out, err = cli_run("export", "latest", "--format", "parquet", "--shape", "alpaca", "--out", str(out_path),
                             "--exclude-shirkers", "--json")
    assert code == 0, err
    assert json.loads(out)["rows"] == 4 and json.loads(out)["dropped"] == {"shirker response": 1}
    code, _, err = cli_run("export", "latest", "--out", str(out_path))
    assert code == 2 and err.startswith("Error: --out") and "Traceback" not in err
    code, _, err = cli_run("export", "no-such-run", "--out", str(tmp_path / "y.jsonl"))
    assert code == 2 and "no run 'no-such-run'" in err


def test_trainers_data_reads_every_sft_shape_and_keeps_item_ids(ism, tmp_path):
    from skillweave.trainers.data import load_preference_pairs, load_sft_examples

    store, run_id = ism
    ids = {i["id"] for i in store.items(run_id)}
    expected = None
    for shape in ("alpaca", "messages", "prompt-completion"):
        export_runs(store, [run_id], tmp_path / f"{shape}.jsonl", shape=shape)
        examples = load_sft_examples(tmp_path / f"{shape}.jsonl")
        assert {e.item_id for e in examples} == ids
        got = sorted((e.item_id, e.instruction + e.input, e.response) for e in examples)
        expected = expected or got
        assert got == expected
    export_runs(store, [run_id], tmp_path / "p.json", fmt="json", shape="preference")
    pairs = load_preference_pairs(tmp_path / "p.json")
    assert len(pairs) == 2 and all(p.item_id in ids and p.chosen != p.rejected for p in pairs)
