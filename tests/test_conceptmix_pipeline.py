"""ConceptMix end to end with scripted models: generation, bounded resampling, grading errors, import/export."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from skillweave.agents.conceptmix import KIND, parse_questions
from skillweave.cli import cli
from skillweave.errors import ParseFailure
from skillweave.providers.core import (
    ChatRequest,
    FakeProvider,
    clear_providers,
    message_text,
    register_provider,
)
from skillweave.providers.images import image_folder
from skillweave.store import Store


@pytest.fixture(autouse=True)
def _fresh_providers(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    clear_providers()
    yield
    clear_providers()


def invoke(db: Path, *args: str):
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def run_id_of(db: Path) -> str:
    return Store(db).get_run("latest")["id"]


def scripted(spec: str, reply, concurrency: int = 8) -> FakeProvider:
    """A fake provider whose reply is `reply(request, text_of_last_user_message)`, or the template's fake reply."""

    def script(request: ChatRequest):
        out = reply(request, message_text(request.messages[-1]))
        return request.meta.get("fake_reply") if out is None else out

    provider = FakeProvider(spec.partition(":")[2], script=script)
    register_provider(spec, provider, max_concurrency=concurrency)
    return provider


def test_offline_run_end_to_end(tmp_path):
    db = tmp_path / "s.db"
    result = invoke(db, "run", "conceptmix", "--k", "1..2", "--n", "3", "--model", "fake", "--image-model", "render",
                    "--grader", "fake")
    assert result.exit_code == 0, result.output
    store = Store(db)
    items = list(store.items(run_id_of(db), kind=KIND))
    assert len(items) == 6 and {it["status"] for it in items} == {"done"}
    for it in items:
        p = it["payload"]
        assert len(p["questions"]) == it["k"] + 1 == len(p["categories"])
        assert (image_folder(str(db)) / p["image"]).stat().st_size > 1000
        assert [g["score"] for g in store.grades(it["id"])] == [1.0] * (it["k"] + 1)
        assert p["refine_source"] == "llm" and p["questions_source"] == "llm"
        assert "?" not in json.dumps([r.get("ObjectA_id") for r in p["refined_config"].get("relation", [])])
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json", "--plot",
                               str(tmp_path / "p.png")).stdout)[0]
    assert report["scores"]["per_k"]["1"]["images"] == 3
    assert report["scores"]["per_k"]["2"]["proportion_all_correct"]["p"] == 1.0
    assert (tmp_path / "p.png").exists()
    # the generic report command understands the pipeline too
    assert "concept_acc" in invoke(db, "report", "latest").output


def test_conflicts_resample_a_bounded_number_of_times(tmp_path):
    db = tmp_path / "s.db"
    scripted("fake:conflict", lambda req, text: "CONFLICT" if text.startswith("Write a caption") else None)
    result = invoke(db, "run", "conceptmix", "--k", "2", "--n", "2", "--model", "fake:conflict", "--grader", "fake",
                    "--max-resamples", "2")
    assert result.exit_code == 3, result.output  # every item failed: exit status 3 (docs/large-runs.md)
    store = Store(db)
    run_id = run_id_of(db)
    for it in store.items(run_id, kind=KIND):
        assert it["status"] == "failed" and "no resamples left after 2" in it["error"]
        events = [e for e in store.db["events"].rows_where("item_id = ?", [it["id"]]) if e["status"] == "resample"]
        assert len(events) == 2 and all("conflicting" in e["reason"] for e in events)
        assert it["payload"]["attempt"] == 2  # two fresh draws after the first
        assert len(it["payload"]["resample_reasons"]) == 2


def test_a_single_conflict_resamples_then_succeeds(tmp_path):
    db = tmp_path / "s.db"
    seen: set[str] = set()

    def once(req, text):
        if text.startswith("Here is a caption") and not seen:
            seen.add(text)
            return "CONFLICT"
        return None

    scripted("fake:once", once, concurrency=1)
    invoke(db, "run", "conceptmix", "--k", "3", "--n", "1", "--model", "fake:once", "--grader", "fake",
           "--concurrency", "1")
    item = next(Store(db).items(run_id_of(db), kind=KIND))
    assert item["status"] == "done" and item["payload"]["attempt"] == 1
    assert item["payload"]["resample_reasons"] == ["verify: the checker found the caption impossible to draw"]


def test_grading_errors_count_as_failures_and_are_recorded(tmp_path):
    db = tmp_path / "s.db"
    invoke(db, "run", "conceptmix", "--k", "1", "--n", "2", "--model", "fake", "--grader", "fake:fail")
    store = Store(db)
    for it in store.items(run_id_of(db), kind=KIND):
        grades = store.grades(it["id"])
        assert len(grades) == 2 and {g["parse_status"] for g in grades} == {"error"}
        assert all(g["score"] == 0 for g in grades) and "scripted failure" in grades[0]["raw"]
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json").stdout)[0]
    k1 = report["scores"]["per_k"]["1"]
    assert k1["proportion_all_correct"]["p"] == 0.0 and k1["grading_errors"] == 4


def test_grader_answers_drive_scores(tmp_path):
    db = tmp_path / "s.db"
    # "No" to every question that is not about an object's presence: only all-object prompts pass
    grader = scripted("fake:picky", lambda req, text: "Yes" if text.startswith("Is there at least one") else "No.")
    invoke(db, "run", "conceptmix", "--k", "1", "--n", "8", "--model", "fake", "--grader", "fake:picky")
    # one question per call, the image attached as a base64 PNG content part, greedy and one token
    assert len(grader.calls) == 16
    for request in grader.calls:
        parts = request.messages[-1]["content"]
        assert [p["type"] for p in parts] == ["text", "image"] and parts[1]["mime"] == "image/png"
        assert base64.b64decode(parts[1]["data"])[:8] == b"\x89PNG\r\n\x1a\n"
        assert request.temperature == 0.0 and request.max_tokens == 1 and parts[0]["text"].count("?") == 1
    store = Store(db)
    items = list(store.items(run_id_of(db), kind=KIND))
    expected = sum(all(c == "object" for c in it["payload"]["categories"]) for it in items)
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json").stdout)[0]
    k1 = report["scores"]["per_k"]["1"]
    assert k1["proportion_all_correct"]["p"] == pytest.approx(expected / 8)
    assert report["scores"]["by_category"]["object"]["question_accuracy"]["p"] == 1.0


def test_unparseable_llm_steps_fall_back_or_resample(tmp_path):
    db = tmp_path / "s.db"
    scripted("fake:junk", lambda req, text: "I am not sure." if "JSON" in text or "questions" in text else None)
    invoke(db, "run", "conceptmix", "--k", "2", "--n", "2", "--model", "fake:junk", "--grader", "fake")
    store = Store(db)
    run_id = run_id_of(db)
    for it in store.items(run_id, kind=KIND):
        assert it["status"] == "done"
        assert it["payload"]["refine_source"] == "rule" and it["payload"]["questions_source"] == "template"
    fallbacks = store.db.execute("select count(*) from events where run_id = ? and status = 'fallback'",
                                 [run_id]).fetchone()[0]
    assert fallbacks == 4
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json").stdout)[0]
    assert report["fallbacks_and_resamples"] == {"rule_refine": 2, "template_questions": 2}
    db2 = tmp_path / "strict.db"
    invoke(db2, "run", "conceptmix", "--k", "2", "--n", "1", "--model", "fake:junk", "--grader", "fake",
           "--refine", "llm", "--max-resamples", "1")
    item = next(Store(db2).items(run_id_of(db2), kind=KIND))
    assert item["status"] == "failed" and item["error"].startswith("refine: no valid configuration")


OFFICIAL = [
    {"index": 1, "sentence": "Two red apples sit on a table.", "categories": ["object", "color", "number"],
     "skills": ["apple", "red", "2"], "question": ["Is there an apple?", "Are the apples red?", "Are there two apples?"]},
    {"index": 2, "sentence": "A cat in pixel art.", "categories": ["object", "style", "object"],
     "skills": ["cat", "pixel art", "dog"], "question": ["Is there a cat?", "", "Is there a dog?"]},
    {"index": 3, "sentence": "A tiny bee left of a rose.", "categories": ["object", "size", "spatial"],
     "skills": ["bee", "tiny", "left"], "question": ["Is there a bee?", "Is the bee tiny?", "Is the bee left of the rose?"]},
]


def test_import_official_prompt_set_and_grade(tmp_path):
    folder = tmp_path / "sentence_collection"
    folder.mkdir()
    (folder / "3_sentences_k=2.json").write_text(json.dumps(OFFICIAL))
    (folder / "3_refined_config_k=2.json").write_text(json.dumps(
        [{"objects": [{"id": 1, "item": "apple", "color": "red", "number": "2"}, {"id": 2, "item": "table"}],
          "relation": [{"name": "top", "description": "", "ObjectA_id": "1", "ObjectB_id": "2"}], "index": 1}]))
    db = tmp_path / "s.db"
    scripted("fake:nodog", lambda req, text: "No" if "dog" in text else "Yes")
    result = invoke(db, "import", "conceptmix", str(folder / "3_sentences_k=2.json"), "--grader", "fake:nodog")
    assert result.exit_code == 0, result.output
    store = Store(db)
    items = list(store.items(run_id_of(db), kind=KIND))
    assert [it["k"] for it in items] == [2, 2, 2] and {it["status"] for it in items} == {"done"}
    assert items[0]["payload"]["config_source"] == "file" and items[1]["payload"]["config_source"] == "rebuilt"
    assert len(store.grades(items[1]["id"])) == 2  # the empty question is skipped, not graded
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json").stdout)[0]
    assert report["scores"]["per_k"]["2"]["proportion_all_correct"]["p"] == pytest.approx(2 / 3)
    assert report["scores"]["per_k"]["2"]["concept_accuracy"]["n"] == 8

    # re-grade the same prompts with another grader, then export and re-import the official layout
    invoke(db, "conceptmix", "evaluate", run_id_of(db), "--grader", "fake")
    report = json.loads(invoke(db, "conceptmix", "report", "latest", "--json").stdout)[0]
    assert report["scores"]["per_k"]["2"]["proportion_all_correct"]["p"] == 1.0
    out = tmp_path / "export"
    invoke(db, "conceptmix", "export", "latest", str(out))
    exported = json.loads((out / "3_sentences_k=2.json").read_text())
    assert [r["question"] for r in exported] == [r["question"] for r in OFFICIAL]
    assert (out / "3_refined_config_k=2.json").exists()


def test_usage_errors_name_the_value(tmp_path):
    db = tmp_path / "s.db"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    for args, message in (
        (["run", "conceptmix", "--grader", "fake", "--image-model", "dalle"], "unknown image model spec 'dalle'"),
        (["run", "conceptmix", "--grader", "gpt4"], "unknown model spec 'gpt4'"),
        (["run", "conceptmix", "--grader", "local"], "--grader local reads text only"),
        (["import", "conceptmix", str(bad), "--grader", "fake"], "not a ConceptMix prompt set"),
    ):
        with pytest.raises(Exception, match=message):
            invoke(db, *args)


def test_parse_questions():
    dog, red = {"category": "object", "value": "dog"}, {"category": "color", "value": "red"}
    assert parse_questions("1. Is there a dog?\n2) Is it red?\nThanks!", [dog, red]) == ["Is there a dog?", "Is it red?"]
    assert parse_questions("Are there dogs?\nIs it red?", [dog, red]) == ["Are there dogs?", "Is it red?"]
    for reply, message in (("- Is there a dog?\n- Is it red?", "expected 3 questions, found 2"),
                           ("Is there a dog?\nIs there a dog?\nIs it red?", "repeat"),
                           ("Is there a cat?\nIs there a pig?\nIs it red?", "question 1 does not mention the object 'dog'")):
        with pytest.raises(ParseFailure, match=message):
            parse_questions(reply, [dog, {"category": "object", "value": "pig"}, red])


def test_every_command_has_help():
    for path in (["run", "conceptmix"], ["import", "conceptmix"], ["conceptmix", "sample"], ["conceptmix", "catalog"],
                 ["conceptmix", "evaluate"], ["conceptmix", "report"], ["conceptmix", "export"]):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, path


def test_sample_command_matches_the_run_plan(tmp_path):
    shown = json.loads(CliRunner().invoke(cli, ["conceptmix", "sample", "--k", "1..2", "--n", "2", "--seed", "5",
                                                "--json"]).stdout)
    db = tmp_path / "s.db"
    invoke(db, "run", "conceptmix", "--k", "1..2", "--n", "2", "--seed", "5", "--model", "fake", "--grader", "fake",
           "--refine", "rule", "--questions", "template")
    items = sorted(Store(db).items(run_id_of(db), kind=KIND), key=lambda it: it["combo_index"])
    assert [it["skills"] for it in items] == [row["skills"] for row in shown]


def test_templates_declare_what_the_nodes_supply():
    from skillweave.prompts import load_template

    supplied = {
        "conceptmix/refine": {"config_json", "rule_config_json", "properties"},
        "conceptmix/caption": {"properties", "config_json", "sentinel", "num_questions", "template_questions"},
        "conceptmix/verify": {"caption", "sentinel"},
        "conceptmix/grade": {"question"},
    }
    for name, variables in supplied.items():
        template = load_template(name)
        assert set(template.variables) == variables, name
        assert template.version.startswith("b3:")
    caption = load_template("conceptmix/caption")
    values = {"properties": ["one or more dogs appear in the image"], "config_json": "{}", "sentinel": "CONFLICT",
              "num_questions": 1, "template_questions": ["Is there at least one dog in the image?"]}
    assert "CONFLICT" in caption.render_turn(0, values) and "exactly 1 yes/no" in caption.render_turn(1, values)


@pytest.mark.slow
def test_embedded_model_finishes_a_record(tmp_path):
    """The issue's offline command at its smallest: SmolLM2 writes, Pillow draws, the scripted grader answers."""
    db = tmp_path / "s.db"
    result = invoke(db, "run", "conceptmix", "--k", "1", "--n", "1", "--model", "local", "--grader", "fake",
                    "--max-tokens", "200")
    assert result.exit_code == 0, result.output
    store = Store(db)
    item = next(store.items(run_id_of(db), kind=KIND))
    calls = list(store.db["llm_calls"].rows_where("item_id = ?", [item["id"]]))
    assert {c["role"] for c in calls} >= {"refine", "caption", "verify"}
    if item["status"] == "done":
        assert item["payload"]["sentence"] and len(item["payload"]["questions"]) == 2
    else:
        assert item["status"] == "failed" and item["error"]
