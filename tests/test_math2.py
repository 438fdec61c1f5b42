"""MATH² pipeline with scripted fake models: the accept path, the refine loop, every drop path, resampling."""

from __future__ import annotations

import re

import pytest

from skillweave.agents.math2 import KIND, default_config
from skillweave.graphs.runtime import run_pipeline
from skillweave.metrics.math2 import run_report
from skillweave.pipelines import get_pipeline
from skillweave.providers.core import FakeProvider, clear_providers, message_text, register_provider
from skillweave.store import Store

BANK_SKILLS = {
    "percentage": [("What is 20% of 50?", "20/100 * 50 = 10. The answer is \\boxed{10}.")],
    "gcd_lcm": [("Find gcd(12, 18).", "The divisors in common give 6. The answer is \\boxed{6}.")],
    "area_perimeter": [("A 3 by 4 rectangle has what area?", "3 * 4 = 12. \\boxed{12}")],
}

ROLE_MARKERS = {  # a phrase from each template -> the role that rendered it
    "Decide whether this pair is usable": "pair_check",
    "Write one new mathematics problem": "qgen",
    "hunts for flaws": "attempt",
    "Check the problem against each criterion": "validate",
    "Rewrite the problem to fix every objection": "refine",
    "Solve the following problem": "solve",
    "last reviewer before a problem enters": "review",
    "grading a student's written solution": "judge",
}


def role_of(request) -> str:
    text = "\n".join(message_text(m) for m in request.messages)
    for marker, role in ROLE_MARKERS.items():
        if marker in text:
            return role
    raise AssertionError(f"unknown prompt: {text[:200]}")


def script(spec: str, replies: dict, calls: list | None = None) -> None:
    """Install a fake provider for `spec`: replies[role] is a str, a list consumed in order, or a callable."""
    counters: dict[str, int] = {}

    def reply(request):
        role = role_of(request)
        if calls is not None:
            calls.append(role)
        value = replies.get(role)
        if value is None:
            return request.meta["fake_reply"]
        if callable(value):
            return value(request)
        if isinstance(value, list):
            i = counters.get(role, 0)
            counters[role] = i + 1
            return value[min(i, len(value) - 1)]
        return value

    provider = FakeProvider(spec.partition(":")[2] or "default", script=reply)
    for bound in (1, 8, 64):
        register_provider(spec, provider, max_concurrency=bound)


@pytest.fixture(autouse=True)
def _fresh_providers():
    clear_providers()
    yield
    clear_providers()


def make_store(tmp_path, skills: dict | None = None) -> tuple[Store, str]:
    store = Store(tmp_path / "m2.db")
    skills = skills or BANK_SKILLS
    entries = [{"name": name, "definition": f"use {name}", "status": "coarse"} for name in skills]
    exemplars = [{"skill": name, "question": q, "answer": a} for name, rows in skills.items() for q, a in rows]
    return store, store.save_catalog("test bank", "bank", entries, exemplars=exemplars)


def start(store: Store, bank: str, **overrides) -> tuple[str, object]:
    config = default_config(bank, **{"model": "fake", "n": 1, "max_pairs": 1, **overrides})
    run_id = store.create_run("math2", config)
    return run_id, run_pipeline(get_pipeline("math2"), store, run_id, progress=False, concurrency=8)


def items(store: Store, run_id: str) -> list[dict]:
    return list(store.items(run_id, kind=KIND))


def events(store: Store, item_id: str) -> list[tuple[str, str]]:
    return [(e["stage"], e["status"]) for e in store.db["events"].rows_where("item_id = ?", [item_id], order_by="id")]


def test_accepted_question_has_every_stage_logged(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, summary = start(store, bank, n=3)
    assert summary.threads == 3 and summary.done == 3 and summary.paused == 0
    rows = items(store, run_id)
    assert [r["status"] for r in rows] == ["accepted"] * 3
    item = rows[0]
    assert len(set(item["skills"])) == 2 and set(item["skills"]) <= set(BANK_SKILLS)
    assert item["payload"]["answer"] == "42" and "\\boxed{42}" in item["payload"]["solution"]
    assert item["payload"]["question"].startswith("A problem that uses")
    stages = [s for s, _ in events(store, item["id"])]
    assert stages == ["pair", "pair_check", "qgen", "attempt", "validate", "consistency", "review", "store"]
    # every call is recorded with the template version the item lists
    calls = list(store.db["llm_calls"].rows_where("item_id = ?", [item["id"]]))
    assert {c["role"] for c in calls} == {"qgen", "solver", "critic", "resolver"}
    assert {c["prompt_version"] for c in calls} <= set(item["prompt_versions"])
    report = run_report(store, store.get_run(run_id))
    assert report["accepted"] == 3 and report["acceptance_rate"] == 1.0


def test_same_seed_draws_the_same_pairs_and_resume_calls_nothing(tmp_path):
    store, bank = make_store(tmp_path)
    run_a, _ = start(store, bank, n=3, seed=5)
    run_b, _ = start(store, bank, n=3, seed=5)
    assert [i["skills"] for i in items(store, run_a)] == [i["skills"] for i in items(store, run_b)]
    before = store.db["llm_calls"].count
    summary = run_pipeline(get_pipeline("math2"), store, run_a, progress=False)
    assert summary.skipped == 3 and store.db["llm_calls"].count == before


def test_critic_failure_refines_then_passes(tmp_path):
    store, bank = make_store(tmp_path)
    calls: list[str] = []
    fail = "1. PASS - ok\n2. PASS - ok\n3. FAIL - only one skill is used\n" + "".join(
        f"{i}. PASS - ok\n" for i in range(4, 9)) + "Verdict: FAIL"
    script("fake", {"validate": [fail, _all_pass()]}, calls)
    run_id, _ = start(store, bank, max_rounds=3)
    (item,) = items(store, run_id)
    assert item["status"] == "accepted"
    p = item["payload"]
    assert len(p["questions"]) == 2 and p["questions"][1].startswith("Revised:")
    assert p["question"] == p["questions"][1]
    assert [v["passed"] for v in p["verdicts"]] == [False, True]
    assert p["verdicts"][0]["verdicts"][2] == {"criterion": "Both skills are genuinely required to solve it.",
                                               "verdict": "FAIL", "reason": "only one skill is used"}
    assert calls.count("validate") == 2 and calls.count("refine") == 1 and calls.count("attempt") == 2
    assert ("validate", "failed") in events(store, item["id"]) and ("refine", "refined") in events(store, item["id"])


def _all_pass() -> str:
    return "".join(f"{i}. PASS - fine\n" for i in range(1, 9)) + "Verdict: PASS"


FAIL_ALL = "1. FAIL - two answers\n" + "".join(f"{i}. PASS - ok\n" for i in range(2, 9)) + "Verdict: FAIL"

DROP_CASES = {
    "pair_check_llm": ({"pair_check": "Verdict: INCOMPATIBLE\nReason: both are the same idea"}, {"pair_check": "llm"},
                       "pair_check", "judged incompatible: both are the same idea"),
    "qgen_unparseable": ({"qgen": "I cannot think of one."}, {}, "qgen", "no 'Question:'"),
    "validate_exhausted": ({"validate": FAIL_ALL}, {"max_rounds": 2}, "validate", "still failing after 2 round(s)"),
    "refine_unparseable": ({"validate": FAIL_ALL, "refine": "Sorry."}, {}, "refine", "no 'Question:'"),
    "critic_unparseable": ({"validate": "Looks fine to me."}, {}, "validate", "unparseable critic reply"),
    # seen from the embedded model: the criteria echoed back with a bare overall verdict
    "critic_without_per_criterion_verdicts": ({"validate": "1. The problem has exactly one final answer.\n"
                                                           "2. Verdict: PASS."}, {}, "validate",
                                              "unparseable critic reply"),
    "consistency": ({"solve": ["\\boxed{41}", "\\boxed{42}"]}, {"consistency_samples": 3}, "consistency",
                    "majority '41'"),
    "review_llm_reject": ({"review": "Decision: reject\nReason: the answer is wrong"}, {"reviewer": "llm:fake"},
                          "review", "rejected by llm:fake: the answer is wrong"),
}


@pytest.mark.parametrize("case", list(DROP_CASES))
def test_every_drop_path_is_stored_with_its_stage_and_reason(tmp_path, case):
    replies, overrides, stage, reason = DROP_CASES[case]
    store, bank = make_store(tmp_path)
    calls: list[str] = []
    script("fake", replies, calls)
    run_id, summary = start(store, bank, **overrides)
    (item,) = items(store, run_id)
    assert item["status"] == "dropped" and summary.failed == 0
    assert item["payload"]["drop_stage"] == stage
    assert reason in item["payload"]["drop_reason"] and item["error"].startswith(f"{stage}: ")
    assert (stage, "dropped") in events(store, item["id"])
    assert run_report(store, store.get_run(run_id))["drops_by_stage"] == {stage: 1}
    if case == "qgen_unparseable":  # one retry, each try its own recorded call
        assert calls.count("qgen") == 2 and events(store, item["id"]).count(("qgen", "parse_failed")) == 2
    if case == "validate_exhausted":
        assert calls.count("validate") == 2 and calls.count("refine") == 1


def test_rule_pair_check_drops_near_duplicates(tmp_path):
    store, bank = make_store(tmp_path, {"linear_equations": BANK_SKILLS["percentage"],
                                        "linear_equations_basic": BANK_SKILLS["gcd_lcm"]})
    run_id, _ = start(store, bank)
    (item,) = items(store, run_id)
    assert item["status"] == "dropped" and item["payload"]["drop_stage"] == "pair_check"
    assert "near-duplicate" in item["payload"]["drop_reason"]


def test_model_failure_marks_the_item_failed(tmp_path):
    store, bank = make_store(tmp_path)
    run_id, summary = start(store, bank, model="fake:fail")
    (item,) = items(store, run_id)
    assert item["status"] == "failed" and item["error"].startswith("qgen: ") and summary.failed == 1
    assert store.db["llm_calls"].count_where("error is not null") == 1


def test_a_dropped_question_draws_a_new_pair(tmp_path):
    store, bank = make_store(tmp_path)
    script("fake", {"qgen": ["no question here", "still none", "Question: What is 6 * 7?"]})
    run_id, summary = start(store, bank, max_pairs=3)
    rows = items(store, run_id)
    assert [(r["round"], r["status"]) for r in rows] == [(0, "dropped"), (1, "accepted")]
    assert rows[0]["skills"] != rows[1]["skills"] or rows[0]["id"] != rows[1]["id"]
    assert rows[1]["payload"]["question"] == "What is 6 * 7?"
    assert summary.statuses == {"accepted": 1}


def test_report_counts_outcomes(tmp_path):
    store, bank = make_store(tmp_path)
    script("fake", {"qgen": lambda r: "Question: Q?" if "percentage" in message_text(r.messages[-1]) else "nothing"})
    run_id, _ = start(store, bank, n=4, parse_retries=0)
    report = run_report(store, store.get_run(run_id))
    statuses = [i["status"] for i in items(store, run_id)]
    assert report["accepted"] == statuses.count("accepted") and report["questions"] == 4
    assert report["drops_by_stage"].get("qgen", 0) == statuses.count("dropped")
    assert {r["outcome"] for r in report["table"]} >= {"accepted", "dropped at qgen", "waiting for review"}
    assert re.fullmatch(r"\d\.\d\d", report["table"][0]["share"])
