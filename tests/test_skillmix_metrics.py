"""Verification S1-S4 (docs/methods.md#verification-skillmix): aggregation, judge parsing and repair, sentence override, sampler determinism."""

import numpy as np
import pytest

from skillweave.agents.skillmix import sample_skill_combinations
from skillweave.metrics.skillmix import (
    aggregate,
    aggregate_records,
    count_sentences,
    extract_answer,
    grade_points,
    parse_point_list,
    parse_table,
    repair_length,
    sentence_limit_words,
)


def _hand_metrics(voted, k):
    s, r = voted[:k].sum(), voted[k:].sum()
    return {"full": float(s + r == k + 3), "all_skills": float(s == k and r >= 2), "frac": s / k if r == 3 else 0.0}


def test_s1_aggregation_matches_hand_values():
    k, G, R, M = 2, 3, 3, 5
    P = np.zeros((G, R, M, k + 3))
    # combo 0: round 0 full marks; round 1 skills 2, rest 2 (all-skills but not full)
    P[0, :, 0] = [1, 1, 1, 1, 1]
    P[1, :, 0] = [1, 1, 1, 1, 0]
    # combo 1: best Full Marks nowhere; best Skill Fraction in round 2 (s=1, r=3) ; round 0 has s=2 but r=2
    P[0, :, 1] = [1, 1, 0, 1, 1]
    P[2, :, 1] = [1, 0, 1, 1, 1]
    # combo 2: majority vote matters: 2 of 3 samples give full marks in round 1
    P[1, 0, 2] = [1, 1, 1, 1, 1]
    P[1, 1, 2] = [1, 1, 1, 1, 1]
    P[1, 2, 2] = [0, 0, 0, 0, 0]
    # combo 3: only 1 of 3 samples positive -> votes to zero
    P[2, 0, 3] = [1, 1, 1, 1, 1]
    # combo 4: r=2 case with all skills
    P[0, :, 4] = [1, 1, 0, 1, 1]
    result = aggregate(P, k)

    voted = np.rint(P.mean(axis=1))
    per_combo = {name: [] for name in ("full", "all_skills", "frac")}
    for m in range(M):
        rounds = [_hand_metrics(voted[g, m], k) for g in range(G)]
        for name in per_combo:
            per_combo[name].append(max(r[name] for r in rounds))  # max independently per metric
    expected = {
        "all_points_earned_binary": per_combo["full"],
        "all_skills_and_good_rest": per_combo["all_skills"],
        "average_over_skills_filtered": per_combo["frac"],
    }
    assert per_combo["full"] == [1, 0, 1, 0, 0]
    assert per_combo["all_skills"] == [1, 1, 1, 0, 1]
    assert per_combo["frac"] == [1, 0.5, 1, 0, 0]
    for name, values in expected.items():
        assert result[name]["mean"] == pytest.approx(np.mean(values))
        assert result[name]["se"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(M))
        assert result[name]["n"] == M


def test_even_grading_samples_tie_rounds_to_zero():
    P = np.zeros((1, 2, 1, 5))
    P[0, 0, 0] = 1
    assert aggregate(P, 2)["all_points_earned_binary"]["mean"] == 0.0


def test_ragged_records_equal_tensor_aggregation():
    rng = np.random.default_rng(0)
    P = rng.integers(0, 2, size=(3, 3, 4, 6)).astype(float)
    records = [(m, g, P[g, :, m].tolist()) for g in range(3) for m in range(4)]
    a, b = aggregate(P, 3), aggregate_records(records, 3)
    for name in a:
        assert a[name]["mean"] == pytest.approx(b[name]["mean"])


def test_s2_table_parser():
    reply = (
        "Here's the grading table:\n\n| Criteria | Points Earned |\n|---|---|\n| Skill a | 1 |\n"
        "| Skill b | 2/3 |\n| Pertains to Sewing | 1 |\n| Makes sense | 0 |\n| At most one sentence | 1 |\n"
        "| Total Points Earned | 5 |\n\nExplanation: fine."
    )
    points, total = parse_table(reply)
    assert points == [1, 2, 1, 0, 1]  # numerator of 2/3; total row never enters the points
    assert total == 5


def test_s2_point_list_parser_and_repair():
    reply = "1. skill a. Points: 1\n2. skill b. Points: 0\nTotal grade: 1"
    points, total = parse_point_list(reply)
    assert points == [1, 0] and total == 1
    assert repair_length([], 2) == [0] * 5
    assert repair_length([1] * 7, 2) == [1] * 5
    assert repair_length([1, 1], 2) == [1, 1, 0, 0, 0]


def test_s2_grade_points_status():
    empty, status = grade_points("no table at all", 2, "One sentence.")
    assert status == "empty" and empty == [0, 0, 0, 0, 1]
    full, status = grade_points("| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 1 |\n| e | 0 |", 2, "One. Two.")
    assert status == "ok" and full == [1, 1, 1, 1, 0]


@pytest.mark.parametrize(
    "text, count",
    [
        ("Mr. Smith met Dr. Jones. They talked.", 2),
        ('He said "Stop!" Then he left.', 2),
        ("Is it? Yes! Fine.", 3),
        ("It was late. and then it rained.", 1),
        ("One sentence only.", 1),
        ("Mrs. Brown's cat. Prof. Green's dog.", 2),
        ("Wait.' 'Now it goes.", 2),
    ],
)
def test_s3_sentence_count(text, count):
    assert count_sentences(text) == count


def test_s3_override_beats_judge():
    judge_says_ok = "| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 1 |\n| e | 1 |"
    points, _ = grade_points(judge_says_ok, 2, "First sentence. Second sentence.")
    assert points[4] == 0  # k=2 allows one sentence
    judge_says_no = "| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 1 |\n| e | 0 |"
    points, _ = grade_points(judge_says_no, 3, "First sentence. Second sentence.")
    assert points[5] == 1  # k=3 allows two
    assert sentence_limit_words(2) == "one sentence" and sentence_limit_words(4) == "three sentences"


def test_explicit_name_filter():
    table = "| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 1 |\n| e | 1 |"
    points, _ = grade_points(table, 2, "A metaphor here.", skills=["metaphor (figure)", "irony"],
                             filter_explicit_name=True)
    assert points[:2] == [0, 1]


def test_extract_answer_uses_last_marker():
    out = "Answer: draft. Explanation: x\nAnswer: final text here.\nExplanation: because"
    assert extract_answer(out) == "final text here."


def test_s4_sampler_deterministic_and_reference_shuffle():
    skills = [f"s{i}" for i in range(10)]
    topics = [f"t{i}" for i in range(10)]
    a = sample_skill_combinations(skills, topics, 3, 20, seed=10)
    b = sample_skill_combinations(skills, topics, 3, 20, seed=10)
    assert a == b
    assert all(len(set(c)) == 3 and len(t) == 1 for c, t in a)
    # the interleaved procedure: one seed, shuffle both lists in place each draw (not the official order)
    import random

    random.seed(10)
    ref_s, ref_t, expected = list(skills), list(topics), []
    for _ in range(20):
        random.shuffle(ref_s)
        random.shuffle(ref_t)
        expected.append((ref_s[:3], ref_t[:1]))
    assert a == expected
    many = sample_skill_combinations(skills[:4], topics, 2, 200, seed=1)
    assert len({tuple(sorted(c)) for c, _ in many}) < 200  # independent draws: duplicates happen
    assert sample_skill_combinations(skills, topics, 3, 20, seed=11) != a
