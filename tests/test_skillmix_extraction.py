"""The student's text is cut from its reply as the official Skill-Mix code cuts it: after the last 'Answer:',
before the first 'Explanation' that follows, case-sensitive, stripped. `official` below is a transcription of
that rule (two str.split calls); a replayed release reproduces its texts (and so its grading prompts) only if
skillweave's extraction agrees with it."""

from __future__ import annotations

import pytest

from skillweave.metrics.skillmix import extract_answer


def official(reply: str) -> str:
    return reply.split("Answer:")[-1].split("Explanation")[0].strip()


@pytest.mark.parametrize("reply", [
    "Answer: In sewing, the simplest explanation is a loose stitch.\nExplanation: it shows the skills.",
    "Answer: \r\n\r\nWhy this thread?\r\n\r\nExplanation:\r\n\r\nbecause",
    "Sure! answer: lower case is not the marker.\nAnswer: the text.\nExplanation: x",
    "ANSWER: shouted. EXPLANATION: none",
    "Answer: draft. Explanation: x\nAnswer: final text here.\nExplanation: because",
    "no markers at all",
    "Answer:\n\nExplanation: an empty answer",
])
def test_extraction_matches_the_official_split(reply):
    assert extract_answer(reply) == official(reply)
