"""AdaptMI retrieval files: exported wrapped as the release's `skill_retrieval/.../{split}.json`
(`{"question2skill": {question: [skill, ...]}}`, a question filed twice under a skill listed twice), and
read by `eval solve --retrieval` (the released wrapped form and the bare form). Fixtures are our own."""

import json
import os
from pathlib import Path

import pytest

from skillweave.catalog.bank import (
    Bank,
    BankSkill,
    Exemplar,
    read_retrieval_json,
    retrieval_document,
    save_bank,
)
from skillweave.catalog.mathdata import bundled_questions
from skillweave.errors import UsageError
from skillweave.providers.core import FakeProvider, message_text, register_provider
from skillweave.store import Store


def _bank():
    skills = [BankSkill("ratios", "prealgebra"), BankSkill("angles", "geometry")]
    exemplars = [Exemplar("ratios", "Q1?", "1"), Exemplar("angles", "Q2?", "2"), Exemplar("ratios", "Q1?", "1"),
                 Exemplar("angles", "Q1?", "1")]
    return Bank(skills, exemplars, name="tiny")


def test_export_is_wrapped_and_keeps_repeats(cli_run, db_path, tmp_path):
    assert retrieval_document(_bank()) == {"question2skill": {"Q1?": ["ratios", "ratios", "angles"], "Q2?": ["angles"]}}
    save_bank(Store(db_path), _bank(), "tiny")
    out = tmp_path / "test.json"
    code, _, err = cli_run("skills", "export", "tiny", str(out), "--format", "retrieval")
    assert code == 0, err
    assert json.loads(out.read_text()) == retrieval_document(_bank())
    assert read_retrieval_json(out) == retrieval_document(_bank())["question2skill"]


def test_read_accepts_bare_maps_and_rejects_other_json(tmp_path):
    (tmp_path / "bare.json").write_text(json.dumps({"Q?": ["a"]}))
    assert read_retrieval_json(tmp_path / "bare.json") == {"Q?": ["a"]}
    (tmp_path / "bad.json").write_text(json.dumps({"question2skill": {"Q?": "a"}}))
    with pytest.raises(UsageError, match="not an AdaptMI retrieval file"):
        read_retrieval_json(tmp_path / "bad.json")


def test_eval_solve_takes_skills_from_an_official_retrieval_file(cli_run, db_path, tmp_path):
    questions = bundled_questions("test")[:3]
    retrieval = {"question2skill": {questions[0]["question"]: [questions[0]["skill"]],
                                    questions[1]["question"]: ["no_such_skill", questions[1]["skill"]]}}
    path = tmp_path / "test.json"
    path.write_text(json.dumps(retrieval, indent=2))
    calls = []

    def script(request):
        text = message_text(request.messages[-1])
        calls.append("pick" if "decide which skill it needs" in text else "solve")
        return "The answer is 1."

    register_provider("fake:r", FakeProvider("r", script=script), max_concurrency=4)
    code, out, err = cli_run("eval", "solve", "--model", "fake:r", "--limit", "3", "--exemplars", "skill",
                             "--retrieval", str(path), "--concurrency", "4", "--json")
    assert code == 0, err
    assert "pick" not in calls and calls.count("solve") == 3  # no model pick: the file decides
    store = Store(db_path)
    items = {i["payload"]["question"]: i["payload"] for i in store.items(json.loads(out)["run_id"])}
    first, second, third = (items[q["question"]] for q in questions)
    assert first["picked_skill"] == questions[0]["skill"] and first["pick_source"] == "retrieval"
    assert set(first["exemplar_skills"]) == {questions[0]["skill"]}
    assert second["picked_skill"] == questions[1]["skill"]  # the first listed skill the bank has
    assert third["picked_skill"] is None and third["pick_failed"] == "question not in the retrieval file"
    assert third["retrieval"] == "random"


def test_eval_solve_retrieval_usage_error(cli_run, tmp_path):
    (tmp_path / "r.json").write_text("[1, 2]")
    code, _, err = cli_run("eval", "solve", "--model", "fake", "--limit", "1", "--retrieval", str(tmp_path / "r.json"))
    assert code == 2 and err.startswith("Error: retrieval file") and "Traceback" not in err


OFFICIAL = os.environ.get("SKILLWEAVE_OFFICIAL_ADAPTMI")


@pytest.mark.skipif(not OFFICIAL, reason="set SKILLWEAVE_OFFICIAL_ADAPTMI to a checkout of princeton-pli/AdaptMI")
def test_released_retrieval_files_read():
    files = sorted((Path(OFFICIAL) / "skill_identifier" / "skill_retrieval").rglob("*.json"))
    assert files
    for path in files:
        released = json.loads(path.read_text(encoding="utf-8"))["question2skill"]
        assert read_retrieval_json(path) == released
