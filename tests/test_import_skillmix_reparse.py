"""`import skillmix --reparse`: skillweave's parser against the official parsed points, per rubric item.

Fixture: graded records written in the official layout (LeoYu/skill-mix `graded/by_<grader>_on_text_1_<r>_<prompt>/
records.csv`, row i grading generation row i), with the reply styles the release holds: a rubric table, 'Point
earned: x' lines, and a reply whose official points were left empty. Set SKILLWEAVE_OFFICIAL_SKILLMIX to a
checkout of LeoYu/skill-mix to also run it on the released `test/` folder.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

GEN = ["k", "skills", "topic", "system prompt", "user_0", "assistant_0", "model_input_0", "text_0",
       "user_1", "assistant_1", "model_input_1", "text_1"]
GRADED = ["k", "skills", "topic", "system prompt", "user_0", "assistant_0", "model_input_0", "score_0",
          "score_extracted_0", "points_0", "num_sentences_manual_in_student_answer_0", "true_sentence_lim_pt_0",
          "num_sentences_extracted_eq_num_sentences_model_0"]
TABLE_PROMPT = "Using a rubric table format, please grade the student's answer. The criteria are: ..."
LINES_PROMPT = "For each item in the rubric, please include in your evaluation 'Point earned: 1' ..."
TABLE = """Here's the grading table:

| Criteria | Points Earned |
|---|---|
| Correctly illustrates irony | 1 |
| Correctly illustrates red herring | 0 |
| Correctly illustrates metaphor | 1/1 |
| Pertains to Sewing | 1 |
| Text makes sense | 1 |
| At most two sentences | 0 |
| Total Points Earned | 4 |

Explanation: fine."""
LINES = "**Irony**: yes. Point earned: 1\n\n**Red herring**: no. Point earned: 0\n\n**Metaphor**: Point earned: 0.5\n"
# (grading prompt, reply, official points_0). The last: the official code ran its table parser on a reply to a
# prompt that asked for 'Point earned' lines and recorded no points (as in the release): a disagreement
ROWS = [(TABLE_PROMPT, TABLE, "1.0,0.0,1.0,1.0,1.0,0.0"),
        (LINES_PROMPT, LINES, "1.0,0.0,0.5"),
        (LINES_PROMPT, LINES, "")]


def _write(path: Path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def release(tmp_path):
    student = tmp_path / "out" / "k3_s10_vdefault_r1" / "gpt-4"
    base = {"k": 3, "skills": "irony, \nred herring, \nmetaphor", "topic": "Sewing", "system prompt": ""}
    gen = [{**base, "user_0": "q", "assistant_0": "Answer: a", "model_input_0": "[]", "text_0": "a",
            "user_1": "q2", "assistant_1": "Answer: b", "model_input_1": "[]", "text_1": "One sentence."}
           for _ in range(len(ROWS) + 1)]  # one generation more than was graded: an unfinished grading run
    graded = [{**base, "user_0": prompt, "assistant_0": reply, "model_input_0": "[]", "score_0": 0,
               "score_extracted_0": 0, "points_0": points, "num_sentences_manual_in_student_answer_0": 1,
               "true_sentence_lim_pt_0": 1.0, "num_sentences_extracted_eq_num_sentences_model_0": True}
              for prompt, reply, points in ROWS]
    _write(student / "records.csv", GEN, gen)
    _write(student / "graded" / "by_gpt-4_on_text_1_1_gpt" / "records.csv", GRADED, graded)
    return tmp_path / "out"


def test_reparse_reports_agreement_per_rubric_item(cli_run, release):
    code, out, err = cli_run("import", "skillmix", str(release), "--reparse", "--json")
    assert code == 0, err
    result = json.loads(out)
    rep = result["reparse"]
    assert rep["samples"] == 3 and rep["records_agree"] == 2 and rep["length_agree"] == 2
    items = {c["item"]: (c["agree"], c["n"]) for c in rep["by_k"]["3"]}
    # the empty official list (padded to zeros) differs from skillweave's [1, 0, 0.5] on skills 1 and 3
    assert items == {"skill 1": (2, 3), "skill 2": (3, 3), "skill 3": (2, 3), "topic": (3, 3),
                     "makes sense": (3, 3), "sentence limit": (3, 3)}
    assert rep["disagreements"][0]["official"] == [] and rep["disagreements"][0]["skillweave"] == [1.0, 0.0, 0.5]
    # the import itself still happened: 4 generations, the 3 graded ones done
    (run,) = result["runs"]
    assert run["metrics"]["3"]["Ratio of Full Marks"]["n"] == 3

    code, out, err = cli_run("import", "skillmix", str(release), "--reparse")
    assert code == 0, err
    assert "all k+3 points equal in 2 (66.67%)" in out and "skill 1 2/3 (66.67%)" in out


def test_reparse_needs_graded_records(cli_run, tmp_path):
    student = tmp_path / "k3_s10_vdefault_r1" / "gpt-4"
    _write(student / "records.csv", GEN, [{"k": 3, "skills": "a, \nb, \nc", "topic": "t"}])
    code, _, err = cli_run("import", "skillmix", str(tmp_path), "--reparse")
    assert code == 2 and "no graded records" in err and "Traceback" not in err


@pytest.mark.skipif(not os.environ.get("SKILLWEAVE_OFFICIAL_SKILLMIX"), reason="SKILLWEAVE_OFFICIAL_SKILLMIX not set")
def test_reparse_on_the_released_outputs(cli_run):
    code, out, err = cli_run("import", "skillmix", str(Path(os.environ["SKILLWEAVE_OFFICIAL_SKILLMIX"]) / "test"),
                             "--reparse", "--json")
    assert code == 0, err
    rep = json.loads(out)["reparse"]
    assert rep["samples"] > 0 and rep["records_rate"] >= 0.95, rep
