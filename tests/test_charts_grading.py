"""CharXiv templates and loader, programmatic grading, judge-reply parsing and accuracy breakdowns."""

from __future__ import annotations

import json

import pytest

from skillweave.charts.charxiv import (
    DESCRIPTIVE_GROUPS,
    DESCRIPTIVE_TEMPLATES,
    ChartQuestion,
    descriptive_question,
    load_release,
    number_instruction,
    subplot_bucket,
)
from skillweave.charts.grading import (
    accuracy_stats,
    agreement,
    compare,
    extract_final_answer,
    looks_truncated,
    parse_descriptive_judge,
    parse_number,
    parse_reasoning_judge,
    programmatic_grade,
)
from skillweave.errors import ParseFailure, UsageError


def test_templates_and_groups_cover_1_to_19_once():
    assert sorted(DESCRIPTIVE_TEMPLATES) == list(range(1, 20))
    grouped = sorted(q for qids in DESCRIPTIVE_GROUPS.values() for q in qids)
    assert grouped == list(range(1, 20))
    assert {t["rubric"] for t in DESCRIPTIVE_TEMPLATES.values()} == {
        "title", "ocr", "quant", "bool", "enum", "trend", "layout"}


def test_subplot_locator_rules():
    assert descriptive_question(2, [0, 0])[0].startswith("For the plot shown, ")
    assert descriptive_question(2, [2, 3])[0].startswith("For the subplot in row 2, column 3, ")
    assert descriptive_question(7, "the bottom subplot")[0].startswith("For the bottom subplot, ")
    assert descriptive_question(18, [2, 3])[0] == DESCRIPTIVE_TEMPLATES[18]["ask"]  # no locator on 18/19
    with pytest.raises(UsageError, match="20"):
        descriptive_question(20, [0, 0])


def test_number_in_general_instruction_follows_gold_decimals():
    assert number_instruction("3") == "Your final answer must be an exact integer."
    assert "2 decimal places" in number_instruction("9.17")
    assert "1 decimal places" in number_instruction("94.0")


def test_subplot_buckets():
    assert [subplot_bucket(n) for n in (1, 2, 4, 5, 21)] == [
        "1 Subplot", "2-4 Subplots", "2-4 Subplots", "5+ Subplots", "5+ Subplots"]


def _official_folder(tmp_path, split="test", answers=True, image_ids=("0", "3")):
    data = tmp_path / "charxiv" / "data"
    data.mkdir(parents=True)
    (tmp_path / "charxiv" / "images").mkdir()
    for fid in image_ids:
        (tmp_path / "charxiv" / "images" / f"{fid}.jpg").write_bytes(b"\xff\xd8\xff")
    meta = {"0": {"category": "cs", "year": "20", "figure_path": "x.jpg", "caption": "", "paper_id": "1",
                  "title": "t"},
            "3": {"category": "physics", "year": "23", "figure_path": "y.jpg", "caption": "", "paper_id": "2",
                  "title": "u"}}
    desc = {"0": {"figure_id": 0, "num_subplots": 2, "subplot_loc": [1, 2], "qids": [7, 13, 11, 15],
                  "answers": ["60", "A, B", "Yes", "Not Applicable"] if answers else None},
            "3": {"figure_id": 3, "num_subplots": 3, "subplot_loc": "the bottom subplot", "qids": [18, 1, 19, 12],
                  "answers": ["1 by 3", "(b) OPT", "3", "Not Applicable"] if answers else None}}
    reas = {"0": {"figure_id": 0, "query": "How many?", "answer": "9.17" if answers else None, "inst_category": 4,
                  "qa_source": 1},
            "3": {"figure_id": 3, "query": "Which?", "answer": "(b)" if answers else None, "inst_category": 1,
                  "qa_source": 3}}
    for name, value in (("image_metadata", meta), ("descriptive", desc), ("reasoning", reas)):
        (data / f"{name}_{split}.json").write_text(json.dumps(value))
    return tmp_path / "charxiv"


def test_official_layout_with_data_folder_and_null_test_answers(tmp_path):
    release = load_release(_official_folder(tmp_path, answers=False))
    assert release.split == "test"
    questions = release.questions()
    assert [q.key for q in questions] == ["0_0", "0_1", "0_2", "0_3", "0", "3_0", "3_1", "3_2", "3_3", "3"]
    assert all(q.answer is None for q in questions)
    (number_q,) = [q for q in questions if q.key == "0"]
    # Number-in-General with no gold answer still gets a format rule; it is never graded
    assert number_q.rules and programmatic_grade(number_q, "Final answer: 3") is None
    assert [q for q in questions if q.key == "3_1"][0].question.startswith("For the bottom subplot, ")


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_release(tmp_path / "nope")
    folder = _official_folder(tmp_path, split="val", image_ids=("0",))
    with pytest.raises(UsageError, match=r"1 chart images missing .*3\.jpg"):
        load_release(folder)
    with pytest.raises(UsageError, match="split 'test' not found"):
        load_release(folder, "test", require_images=False)


def test_extract_final_answer():
    assert extract_final_answer("Looking at the plot...\nFinal answer: **0.25**.") == "0.25"
    assert extract_final_answer("The answer is: 2 by 3") == "2 by 3"
    assert extract_final_answer("I think\n\nYes") == "Yes"
    assert extract_final_answer("") == ""


@pytest.mark.parametrize("text,value", [
    ("0.01", 0.01), ("10^-2", 0.01), ("10^{-6}", 1e-6), ("1.5e3", 1500), ("1,500 units", 1500),
    ("−3.5", -3.5), ("45%", 45), ("about .5", 0.5), ("no number", None),
])
def test_parse_number_notations(text, value):
    got = parse_number(text)
    assert (got is None) if value is None else got == pytest.approx(value)


@pytest.mark.parametrize("method,extracted,gold,score", [
    ("number", "1.00", "1", 1), ("number", "0.012", "0.01", 0), ("number", "1.5e3", "1500", 1),
    ("yesno", "No, they never cross", "No", 1), ("yesno", "Yes", "No", 0),
    ("layout", "two rows: 2 x 3", "2 by 3", 1), ("layout", "3 by 2", "2 by 3", 0),
    ("list", "A, B, C", "A, B, C", 1), ("list", "B, A, C", "A, B, C", 0),
    ("set", "SGD, Adam", "Adam, SGD", 1),
    ("text", "(a) Training curves", "Training curves", 1), ("text", '"(B) OUTPUT GAP"', "(b) Output gap", 1),
    ("trend", "dips then climbs", "decreases then increases", 1), ("trend", "risky", "increases", 0), ("text", "$\\alpha$ decay", "α decay", 1),
    ("trend", "it goes up and then falls", "increases then decreases", 1),
    ("trend", "increases", "increases then decreases", 0),
    ("text_or_number", "-1.40", "-1.4", 1), ("text_or_number", "Loss", "Accuracy (%)", 0),
    ("number", "0", "Not Applicable", 0), ("text", "Not Applicable", "Not Applicable", 1),
    ("text", "There is no title", "Not Applicable", 1), ("number", "Not Applicable", "5", 0),
])
def test_compare_methods(method, extracted, gold, score):
    assert compare(method, extracted, gold) == score


def _q(**kw):
    base = dict(key="1_0", mode="descriptive", figure_id="1", image_path="x.jpg", question="q", rules=[],
                answer="5", num_subplots=1, subject="cs", year="20", qid=10)
    return ChartQuestion(**{**base, **kw})


def test_programmatic_grading_scope():
    # official folders: counts/yes-no/layout are exact, titles and trends need the judge
    assert programmatic_grade(_q(qid=10), "Final answer: 5")["score"] == 1
    assert programmatic_grade(_q(qid=1, answer="Loss"), "Loss") is None
    assert programmatic_grade(_q(qid=16, answer="increases"), "increases") is None
    # synthetic questions are exact everywhere
    graded = programmatic_grade(_q(qid=16, answer="increases", extra={"exact": True}), "Final answer: rises")
    assert graded == {"score": 1, "extracted": "rises", "method": "trend"}
    reasoning = _q(mode="reasoning", key="1", qid=None, inst_category=4, answer="9.17")
    assert programmatic_grade(reasoning, "so 9.17")["score"] == 1
    assert programmatic_grade(reasoning, "so 9.2")["score"] == 0


def test_parse_descriptive_judge():
    reply = '```json\n{"extract_answer_T1": "5", "score_T1": 1, "extract_answer_T2": "x", "score_T2": "0"}\n```'
    assert parse_descriptive_judge(reply, 2) == [{"extracted": "5", "score": 1}, {"extracted": "x", "score": 0}]
    with pytest.raises(ParseFailure, match="score_T3"):
        parse_descriptive_judge(reply, 3)
    with pytest.raises(ParseFailure, match="not 0 or 1"):
        parse_descriptive_judge('{"extract_answer_T1": "5", "score_T1": 2}', 1)
    with pytest.raises(ParseFailure, match="no JSON"):
        parse_descriptive_judge("I cannot grade this", 1)


def test_parse_reasoning_judge_and_truncation():
    assert parse_reasoning_judge('Sure: {"extracted_answer": "b", "score": 1}') == {"extracted": "b", "score": 1}
    truncated = '{"extracted_answer": "a very long answer that never'
    assert looks_truncated(truncated) and not looks_truncated('{"score": 1}')
    with pytest.raises(ParseFailure):
        parse_reasoning_judge(truncated)


def _row(mode, score, **kw):
    base = {"mode": mode, "subject": "cs", "year": "20", "num_subplots": 1, "qid": 10, "inst_category": 4,
            "qa_source": 4, "skills": None}
    return {**base, **kw, "score": score}


def test_accuracy_counts_invalid_as_wrong_and_skips_ungraded():
    rows = [_row("descriptive", 1), _row("descriptive", 0, qid=1), _row("descriptive", -1, qid=18, num_subplots=6),
            _row("descriptive", 1, subject="physics", year="23", num_subplots=3),
            _row("descriptive", None),
            _row("reasoning", 1, skills=["a", "b"]), _row("reasoning", -1, inst_category=1, skills=["a", "b"])]
    stats = accuracy_stats(rows)
    d, r = stats["descriptive"], stats["reasoning"]
    assert (d["N"], d["N_valid"], d["N_invalid"], d["N_ungraded"]) == (5, 4, 1, 1)
    assert d["Overall Score"] == 50.0 and d["CI95"] == pytest.approx(49.0, abs=0.01)
    assert d["By Category"]["Counting"] == {"acc": 100.0, "n": 2}
    assert d["By Category"]["Pattern Recognition"] == {"acc": 0.0, "n": 1}
    assert d["By Subplot"]["5+ Subplots"]["acc"] == 0.0 and d["By Year"]["2023"]["acc"] == 100.0
    assert d["By Subject"]["Physics"] == {"acc": 100.0, "n": 1}
    assert r["Overall Score"] == 50.0 and r["N_invalid"] == 1
    assert r["By Answer Type"]["Text-in-Chart"]["acc"] == 0.0 and r["By Skills"]["a + b"]["n"] == 2
    assert agreement([{"score": 1, "programmatic": 1}, {"score": -1, "programmatic": 0},
                      {"score": 0, "programmatic": None}]) == {"n": 2, "agree": 1, "rate": 0.5}
