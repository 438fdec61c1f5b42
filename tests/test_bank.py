"""The bundled math set (verified answers, splits) and skill banks (AdaptMI JSON round-trip, store, bundled)."""

from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction

import pytest

from skillweave.catalog import bank as bk
from skillweave.catalog import mathdata
from skillweave.errors import NotFound, UsageError
from skillweave.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    yield s
    s.close()


def test_bundled_file_is_what_the_generator_writes():
    shipped = mathdata.bundled_questions()
    assert shipped == mathdata.generate_questions()
    assert len(shipped) >= 60
    assert len({q["question"] for q in shipped}) == len(shipped)
    assert len({q["subject"] for q in shipped}) >= 5
    per_skill = Counter(q["skill"] for q in shipped)
    assert set(per_skill) == set(mathdata.SKILLS) and set(per_skill.values()) == {mathdata.PER_SKILL}
    for q in shipped:
        assert q["subject"] == mathdata.SKILLS[q["skill"]][0]
        assert q["solution"].endswith(f"The answer is {q['answer']}.")


def _independent_answer(q: dict) -> Fraction | None:
    """Re-derive some answers from the question text alone (a second, separate check)."""
    import re

    text = q["question"]
    if q["skill"] == "order_of_operations":
        a, b, c, d = map(int, re.findall(r"-?\d+", text))
        return Fraction(a + b * c - d)
    if q["skill"] == "linear_equations":
        a, sign, b, c = re.match(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)\.", text).groups()
        b = int(b) if sign == "+" else -int(b)
        return Fraction(int(c) - b, int(a))
    if q["skill"] == "modular_arithmetic":
        base, exp, m = map(int, re.findall(r"\d+", text))
        return Fraction(pow(base, exp, m))
    if q["skill"] == "combinations":
        k, n = map(int, re.findall(r"\d+", text))
        return Fraction(math.comb(n, k))
    if q["skill"] == "base_conversion":
        digits, base = re.search(r"number (\d+)_(\d+)", text).groups()
        return Fraction(int(digits, int(base)))
    if q["skill"] == "quadratic_equations":
        b, c = map(int, re.findall(r"(\d+)x \+ (\d+)", text)[0])
        roots = [x for x in range(-50, 51) if x * x - b * x + c == 0]
        return Fraction(max(roots))
    return None


def test_answers_check_out_independently():
    checked = 0
    for q in mathdata.bundled_questions():
        expected = _independent_answer(q)
        if expected is not None:
            assert Fraction(q["answer"]) == expected, q
            checked += 1
    assert checked >= 30


def test_splits_are_disjoint_and_bank_uses_train_only():
    train, test = mathdata.bundled_questions("train"), mathdata.bundled_questions("test")
    assert len(train) + len(test) == len(mathdata.bundled_questions()) and test
    bank = bk.bundled_bank()
    assert bank.skill_names() == list(mathdata.SKILLS)
    bank_questions = {x.question for x in bank.exemplars}
    assert bank_questions == {q["question"] for q in train}
    assert not bank_questions & {q["question"] for q in test}
    assert all(len(v) == mathdata.BANK_PER_SKILL for v in bank.by_skill().values())


def test_load_questions_jsonl_and_csv(tmp_path):
    (tmp_path / "q.jsonl").write_text(
        '{"question": "1+1?", "answer": 2}\n\n{"question": "2+2?", "subject": "a"}\n'
    )
    rows = mathdata.load_questions(tmp_path / "q.jsonl")
    assert [(r["id"], r["answer"], r["subject"]) for r in rows] == [("0", "2", ""), ("1", "", "a")]
    (tmp_path / "q.csv").write_text("question,answer,subject\nWhat is 3*3?,9,arith\n")
    assert mathdata.load_questions(tmp_path / "q.csv")[0]["answer"] == "9"
    (tmp_path / "bad.csv").write_text("prompt,answer\nx,1\n")
    with pytest.raises(UsageError, match="'question' column"):
        mathdata.load_questions(tmp_path / "bad.csv")
    with pytest.raises(UsageError, match="does not exist"):
        mathdata.load_questions(tmp_path / "nope.jsonl")
    assert len(mathdata.load_questions("bundled", split="test")) == len(mathdata.bundled_questions("test"))


ADAPTMI = {
    "skills": ["quadratic_equation_skills", "base_conversion", "unused_skill"],
    "example_nums": {"quadratic_equation_skills": 2, "base_conversion": 7, "unused_skill": 0},
    "skill_dict": {
        "base_conversion": [{"question": "Convert 101_2.", "answer": "It is 5.", "level": "Level 2"}],
        "quadratic_equation_skills": [
            {"question": "Solve x^2=4.", "answer": "x=2 or x=-2"},
            {"answer": "first answer then question", "question": "Q?"},
        ],
        "only_in_dict": [{"question": "Orphan?", "answer": "yes"}],
    },
    "note": "top-level extra",
}


def test_adaptmi_json_round_trips_through_the_store(store, tmp_path):
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(ADAPTMI))
    bank = bk.read_bank_json(path)
    assert bank.skill_names() == [
        "quadratic_equation_skills",
        "base_conversion",
        "unused_skill",
        "only_in_dict",
    ]
    catalog_id = bk.save_bank(store, bank, "adaptmi")
    assert store.get_catalog(catalog_id)["kind"] == "bank"
    again = bk.load_bank(store, "adaptmi")
    out = tmp_path / "out.json"
    bk.write_bank_json(again, out)
    assert json.loads(out.read_text()) == ADAPTMI
    # key order inside exemplars survives too
    assert list(json.loads(out.read_text())["skill_dict"]["quadratic_equation_skills"][1]) == [
        "answer",
        "question",
    ]


def test_bundled_bank_stored_and_exported(store, tmp_path):
    bank = bk.bundled_bank()
    catalog_id = bk.save_bank(store, bank, "bundled-math")
    assert bk.save_bank(store, bk.bundled_bank(), "bundled-math") == catalog_id  # content-addressed
    loaded = bk.load_bank(store, catalog_id)
    data = bk.bank_to_adaptmi(loaded)
    assert data["skills"] == list(mathdata.SKILLS)
    assert data["example_nums"] == {s: mathdata.BANK_PER_SKILL for s in mathdata.SKILLS}
    assert "provenance" not in data["skill_dict"]["percentage"][0]
    with_prov = bk.bank_to_adaptmi(loaded, include_provenance=True)
    assert with_prov["skill_dict"]["percentage"][0]["provenance"]["source"] == "bundled"
    assert bk.list_banks(store)[0]["exemplars"] == len(bank.exemplars)


def test_fine_labels_and_provenance_survive_the_store(store):
    bank = bk.Bank(
        skills=[bk.BankSkill("ratio_skills", "prealgebra", "ratios", fine=["part_whole_ratio", "scale"])],
        exemplars=[
            bk.Exemplar(
                "ratio_skills",
                "Q",
                "A",
                provenance={"model": "fake", "fine": "scale"},
                source_item_id="item1",
            )
        ],
    )
    loaded = bk.load_bank(store, bk.save_bank(store, bank, "x"))
    assert loaded.skills[0].fine == ["part_whole_ratio", "scale"]
    assert loaded.exemplars[0].provenance == {"model": "fake", "fine": "scale"}
    assert loaded.exemplars[0].source_item_id == "item1"


def test_bad_banks_are_usage_errors(store, tmp_path):
    with pytest.raises(UsageError, match="not an AdaptMI skill bank"):
        bk.bank_from_adaptmi([1, 2])
    with pytest.raises(UsageError, match="must be a list"):
        bk.bank_from_adaptmi({"skill_dict": {"a": "oops"}})
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UsageError, match="not readable JSON"):
        bk.read_bank_json(tmp_path / "broken.json")
    with pytest.raises(NotFound, match="no skill bank 'nothing'"):
        bk.load_bank(store, "nothing")
