"""`parse_table` with its plain-digit fast path parses every reply as the regex-only parser before it did."""

from __future__ import annotations

import random
import re

from skillweave.metrics.skillmix import grade_points, parse_table

_NOT_NUMBER = re.compile(r"[^0-9./]")


def reference_parse_table(reply: str) -> tuple[list[float], float | None]:
    """The parser as it was before the fast path (every cell stripped, the number always through the regex)."""
    points, total = [], None
    for line in reply.splitlines():
        low = line.lower()
        if "|" not in line or "--" in line or "criteria" in low:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        value = _NOT_NUMBER.sub("", cells[1]).split("/")[0]
        try:
            number = float(value)
        except ValueError:
            continue
        if "total" in cells[0].lower():
            total = number
        else:
            points.append(number)
    return points, total


ALPHABET = ["|", "|", "|", " ", " ", "\t", "\u00a0", "\u2003", "1", "0", "7", "12", ".", "/", "-", "--", "a", "Total",
            "TOTAL", "total:", "Criteria", "criteria", "\u0663", "\u00b2", "\uff11", "1_0", "e5", "inf", "nan", "½",
            "İ", "Σ", "\n", "\r\n", "\u2028", "x", "Points", "0.5", "3/4", " 1 ", "Tota l"]


def test_fast_path_matches_the_reference_on_random_replies():
    rng = random.Random(20)
    for _ in range(20_000):
        reply = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        assert parse_table(reply) == reference_parse_table(reply), repr(reply)


def test_fast_path_matches_the_reference_on_judge_tables():
    rng = random.Random(3)
    for _ in range(3_000):
        rows = ["| Criteria | Points |", "|---|---|"]
        for i in range(rng.randint(0, 8)):
            cell = rng.choice(["1", " 1 ", "0", "1/1", "0.5", " 1\u00a0", "\u0663", "1 point", "", "10", " 007 ", "²"])
            rows.append(f"{rng.choice(['', ' ', '|'])}| item {i} |{cell}|{rng.choice(['', ' yes |'])}")
        rows.append(rng.choice(["| Total | 5 |", "| **Total** | 4/6 |", "Total: 5", "| total |  |"]))
        reply = rng.choice(["\n", "\r\n"]).join(rows)
        assert parse_table(reply) == reference_parse_table(reply), repr(reply)


def test_grade_points_on_a_usual_table():
    reply = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 4 + "| item | 0 |\n| Total | 4 |"
    assert parse_table(reply) == ([1.0, 1.0, 1.0, 1.0, 0.0], 4.0)
    assert grade_points(reply, 2, "One sentence.") == ([1.0, 1.0, 1.0, 1.0, 1.0], "ok")
