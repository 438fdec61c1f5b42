"""Importing the official Skill-Mix output layout reproduces metrics computed by hand."""

import csv
import json

import pytest

from skillweave.store import Store

GEN_COLUMNS = ["k", "skills", "topic", "system prompt", "user_0", "assistant_0", "model_input_0", "text_0",
               "user_1", "assistant_1", "model_input_1", "text_1"]
GRADE_COLUMNS = ["k", "skills", "topic", "system prompt", "user_0", "assistant_0", "model_input_0", "score_0",
                 "score_extracted_0", "points_0", "num_sentences_manual_in_student_answer_0",
                 "true_sentence_lim_pt_0", "num_sentences_extracted_eq_num_sentences_model_0"]
COMBOS = [("spatial reasoning,  \nred herring,  \nmetaphor", "Sewing"),
          ("irony,  \nstatistical syllogism,  \nanaphora", "Knots")]
# (round, row) -> (points_0 as written by the grader, true_sentence_lim_pt_0)
POINTS = {
    (1, 0): ("1.0,1.0,0.0", 1.0),                  # truncated list: padded -> [1,1,0,0,0,1]
    (1, 1): ("1.0,1.0,1.0,1.0,1.0,0.0", 1.0),      # sentence override repairs the last point -> full marks
    (2, 0): ("1.0,1.0,1.0,1.0,0.0,1.0", 1.0),      # all skills, rest 2
    (2, 1): ("0.0,1.0,1.0,1.0,1.0,1.0", 0.0),      # override zeroes the sentence point
}


def _write(path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def official_layout(tmp_path):
    root = tmp_path / "skill-mix-out"
    for rnd in (1, 2):
        student = root / f"k3_s10_vdefault_r{rnd}" / "llama2-7b-chat"
        gen, grades = [], []
        for i, (skills, topic) in enumerate(COMBOS):
            base = {"k": 3, "skills": skills, "topic": topic, "system prompt": ""}
            gen.append({**base, "user_0": "q", "assistant_0": "Answer: a", "model_input_0": "[]", "text_0": "a",
                        "user_1": "q2", "assistant_1": "Answer: b. Explanation: c", "model_input_1": "[]",
                        "text_1": "One sentence here."})
            points, lim = POINTS[(rnd, i)]
            grades.append({**base, "user_0": "grade", "assistant_0": "| table |", "model_input_0": "[]",
                           "score_0": 0, "score_extracted_0": 0, "points_0": points,
                           "num_sentences_manual_in_student_answer_0": 1, "true_sentence_lim_pt_0": lim,
                           "num_sentences_extracted_eq_num_sentences_model_0": True})
        _write(student / "records.csv", GEN_COLUMNS, gen)
        _write(student / "graded" / f"by_gpt-4_on_text_1_{rnd}_gpt" / "records.csv", GRADE_COLUMNS, grades)
    return root


def test_import_reproduces_hand_computed_metrics(cli_run, db_path, official_layout):
    code, out, err = cli_run("import", "skillmix", str(official_layout), "--json")
    assert code == 0, err
    (report,) = json.loads(out)
    m = report["metrics"]["3"]
    # by hand: combo 0 rounds -> full (0, 0), all-skills (0, 1), fraction (0, 0); combo 1 -> (1, 0), (1, 0), (1, 0)
    assert m["Ratio of Full Marks"]["mean"] == pytest.approx(0.5)
    assert m["Ratio of Full Marks"]["se"] == pytest.approx(0.5)
    assert m["Ratio of All Skills"]["mean"] == pytest.approx(1.0)
    assert m["Ratio of All Skills"]["se"] == pytest.approx(0.0)
    assert m["Skill Fraction"]["mean"] == pytest.approx(0.5)
    store = Store(db_path)
    items = list(store.items(report["run_id"]))
    assert len(items) == 4 and items[0]["skills"] == ["spatial reasoning", "red herring", "metaphor"]
    padded = [g for i in items for g in store.grades(i["id"]) if g["parse_status"] == "repaired"]
    assert len(padded) == 1 and padded[0]["points"] == [1, 1, 0, 0, 0, 1]
    # report recomputes the same numbers from the store
    code, out, _ = cli_run("report", report["run_id"], "--json")
    assert json.loads(out)["metrics"] == report["metrics"]


def test_import_rejects_a_folder_without_records(cli_run, tmp_path):
    code, _, err = cli_run("import", "skillmix", str(tmp_path))
    assert code == 2 and "no '<k..._s..._v..._r...>/<student>/records.csv'" in err


def test_import_is_all_or_nothing(cli_run, db_path, official_layout):
    bad = official_layout / "k3_s10_vdefault_r2" / "llama2-7b-chat" / "graded" / "by_gpt-4_on_text_1_2_gpt"
    rows = list(csv.DictReader((bad / "records.csv").open()))
    _write(bad / "records.csv", GRADE_COLUMNS, rows + rows[:1])  # three grade rows for two generations
    code, _, err = cli_run("import", "skillmix", str(official_layout))
    assert code == 2 and "has 3 rows" in err
    store = Store(db_path)
    assert store.list_runs() == [] and store.db["items"].count == 0
