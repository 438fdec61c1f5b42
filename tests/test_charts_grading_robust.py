"""The CharXiv programmatic grader reads the final answer the way a careful judge would.

Each case here was graded wrongly by the earlier grader (first number of the last line, colon-only markers,
'none'/'no lines' read as Not Applicable, the first number of '5 + 6 = 11').
"""

from __future__ import annotations

import pytest

from skillweave.charts.charxiv import ChartQuestion
from skillweave.charts.grading import (
    answer_number,
    compare,
    extract_final_answer,
    is_not_applicable,
    programmatic_grade,
)


def _q(qid=10, answer="1", mode="descriptive", **kw):
    base = dict(key="7_0", mode=mode, figure_id="7", image_path="7.jpg", question="q", rules=[], answer=answer,
                num_subplots=4, subject="cs", year="21", qid=qid)
    return ChartQuestion(**{**base, **kw})


@pytest.mark.parametrize("response,gold,score", [
    # a locator in the last line is not the answer
    ("The subplot in row 2, column 1 contains 1 line.", "1", 1),
    ("The subplot in row 2, column 1 contains 1 line.", "2", 0),
    ("In the 3rd subplot there are 4 lines.", "4", 1),
    # an equation: the value after the last '=' is the answer, not its first operand
    ("Final answer: 5 + 6 = 11", "5", 0),
    ("Final answer: 5 + 6 = 11", "11", 1),
    # "the answer is" without a colon
    ("There are 3 panels in total; the answer is 7.", "7", 1),
    ("Counting carefully, the final answer is **12**.", "12", 1),
    # a heading, then the value on its own line
    ("### Final Answer\n\n6", "6", 1),
    # two different numbers: refused, not guessed, unless the sentence says which one is the value
    ("Between 2 and 3 lines.", "2", 0),
    ("Between 2 and 3 lines.", "3", 0),
    ("The gap between 2010 and 2020 is 15", "15", 1),
    ("There are 3 lines, 2 of which are dashed.", "3", 1),
    ("The x-axis has 5 labeled ticks: 0, 2, 4, 6, 8", "5", 1),
    ("The x-axis has 5 labeled ticks: 0, 2, 4, 6, 8", "8", 0),
    # scientific notation written with a multiplication sign, in the answer or in the gold (CharXiv val holds
    # '4 x 10^-4'): the earlier grader read both as their first number, 4
    ("Final answer: 1.5 × 10^3", "1500", 1),
    ("Final answer: 4 x 10^-4", "4 x 10^-4", 1),
    ("Final answer: 0.0004", "4 x 10^-4", 1),
    ("Final answer: 4 x 10^-5", "4 x 10^-4", 0),
    # a gold list of numbers (CharXiv val holds '30, 40'): the same numbers in any order
    ("Final answer: 40, 30", "30, 40", 1),
    ("Final answer: 30, 41", "30, 40", 0),
    ("Final answer: 30", "30, 40", 0),
])
def test_number_answers(response, gold, score):
    assert programmatic_grade(_q(answer=gold), response)["score"] == score


@pytest.mark.parametrize("response,gold,score", [
    ("No, none of the lines intersect.", "No", 1),   # a plain 'No' answer is not 'Not Applicable'
    ("None of the lines cross.\nFinal answer: No", "No", 1),
    ("Final answer: Yes", "No", 0),
])
def test_yes_no_answers_are_not_read_as_not_applicable(response, gold, score):
    assert programmatic_grade(_q(qid=11, answer=gold), response)["score"] == score


@pytest.mark.parametrize("text,na", [
    ("Not Applicable", True), ("N/A", True), ("none", True), ("There is no legend.", True),
    ("The plot does not have a colorbar", True), ("No tick labels are shown", True),
    ("No, none of the lines intersect", False), ("No", False), ("Nanometers", False), ("5", False),
])
def test_not_applicable_detection(text, na):
    assert is_not_applicable(text) is na


def test_not_applicable_gold():
    assert compare("number", "The plot does not have a colorbar.", "Not Applicable") == 1
    assert compare("number", "There is no colorbar, so 0", "Not Applicable") == 0
    assert compare("number", "3", "Not Applicable") == 0


def test_extraction_and_number_reading():
    assert extract_final_answer("Reasoning...\nThe answer is 42") == "42"
    assert extract_final_answer("Final answer: **0.25**.") == "0.25"
    assert answer_number("row 2, column 1: 1") == 1
    assert answer_number("2 + 2 = 4") == 4
    assert answer_number("two numbers 3 and 5") is None
    assert answer_number("1,500") == 1500
