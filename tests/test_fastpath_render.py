"""Per-call work the Skill-Mix fast path no longer repeats (docs/benchmarks.md, "Skill-Mix pipeline throughput"):
turn 0 rendered once per item, a prompt version appended once per template, the store's JSON encoder built once,
with the same stored requests, call keys and item records as before."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

import skillweave
from skillweave.agents.llm import build_messages
from skillweave.metrics.skillmix import sentence_limit_words
from skillweave.prompts import PromptTemplate, load_template
from skillweave.store import jdump, jload, stable_id


class _Odd:
    def __str__(self):
        return "odd-object"


@pytest.mark.parametrize("value", [
    {"b": [1, 2.5, None, True], "a": {"é": "naïve – ü", "z": "\u2028 \n \"quoted\""}},
    ["run", "item", "student", "b3:0123", 1, "openai:mock", '{"messages": [{"content": "x"}]}'],
    {"odd": _Odd(), "nan": math.nan, "big": 2 ** 80, "empty": {}, "list": []},
    "plain ✓ text", 3, None,
])
def test_jdump_is_the_json_dumps_it_replaced(value):
    assert jdump(value) == json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def test_jdump_still_refuses_circular_values():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jdump(loop)


def _values(skills: int = 2) -> dict:
    rows = [{"name": f"skill {i}", "definition": f"definition {i}", "example": f"example {i}"} for i in range(skills)]
    return {"skills": rows, "topic": "sewing", "k": skills, "sentence_limit": "2 sentences", "shorten": True}


def test_build_messages_with_the_earlier_prompts_is_the_same_request():
    template = load_template("skillmix/student")
    values = _values()
    turn0 = build_messages(template, values, 0, [])
    given = build_messages(template, values, 1, ["reply 0"], previous_prompts=[turn0[-1]["content"]])
    assert given == build_messages(template, values, 1, ["reply 0"])
    with pytest.raises(ValueError, match="1 earlier prompts for 0 earlier outputs"):
        build_messages(template, values, 0, [], previous_prompts=["extra"])


def test_skillmix_renders_turn_zero_once_per_item_and_stores_the_same_requests(tmp_path, monkeypatch):
    rendered: list[tuple[str, int]] = []
    render_turn = PromptTemplate.render_turn

    def counting(self, index, values):
        rendered.append((self.name, index))
        return render_turn(self, index, values)

    monkeypatch.setattr(PromptTemplate, "render_turn", counting)
    db = str(tmp_path / "run.db")
    handle = skillweave.run("skillmix", db=db, k=[2], n=4, rounds=2, grading_samples=2, model="fake", judge="fake")
    assert handle.summary.done == 8
    # one render per turn sent: turn 0, turn 1, the judge (was 4: turn 1's request rendered turn 0 again)
    assert sorted(set(rendered)) == [("skillmix/judge", 0), ("skillmix/student", 0), ("skillmix/student", 1)]
    assert rendered.count(("skillmix/student", 0)) == 8 and rendered.count(("skillmix/student", 1)) == 8

    monkeypatch.setattr(PromptTemplate, "render_turn", render_turn)
    student, judge = load_template("skillmix/student"), load_template("skillmix/judge")
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        items = conn.execute("select * from items").fetchall()
        calls = conn.execute("select * from llm_calls where role = 'student'").fetchall()
    assert len(items) == 8 and len(calls) == 16
    by_item = {}
    for call in calls:
        by_item.setdefault(call["item_id"], []).append(call)
    for item in items:
        payload = jload(item["payload"])
        values = {"skills": payload["skill_rows"], "topic": item["topic"], "k": item["k"],
                  "sentence_limit": sentence_limit_words(item["k"]), "shorten": False}
        # each version listed once, in the order first used: the student's, then the judge's
        assert jload(item["prompt_versions"]) == [student.version, judge.version]
        turn1 = next(c for c in by_item[item["id"]] if len(jload(c["request"])["messages"]) == 3)
        request = jload(turn1["request"])
        # the stored turn-1 request resends turn 0 exactly as rendered afresh, and its call key is the one a
        # fresh rendering gives (so a resumed run of an older version finds it)
        assert request["messages"][0]["content"] == student.render_turn(0, values) == payload["prompt_0"]
        assert request["messages"][1] == {"role": "assistant", "content": payload["output_0"]}
        key = stable_id(item["run_id"], item["id"], "student", student.version, 1, "fake",
                        jdump(request), length=32)
        assert turn1["call_key"] == key


def test_skillmix_appends_each_prompt_version_once(tmp_path):
    """Turn 1 no longer asks the store to append the student version turn 0 appended (a JSON scan per update)."""
    from skillweave.catalog import bundled_skills, bundled_topics
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline
    from skillweave.store import Store

    store = Store(str(tmp_path / "run.db"))
    config = {
        "k": [2], "n": 3, "rounds": 1, "model": "fake", "judge": "fake", "grading_samples": 2,
        "skills_catalog": store.save_catalog("b", "skills", [s.as_dict() for s in bundled_skills()]),
        "topics_catalog": store.save_catalog("b", "topics", [{"name": t} for t in bundled_topics()]),
    }
    run_id = store.create_run("skillmix", config)
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)  # the run writes on this thread's connection
    summary = run_pipeline(get_pipeline("skillmix"), store, run_id, concurrency=2, progress=False)
    store.db.conn.set_trace_callback(None)
    assert summary.done == 3
    updates = [s for s in statements if s.startswith("UPDATE items")]
    appends = [s for s in updates if "json_insert" in s]
    assert len(updates) == 9  # turn 0, turn 1, grade: per item, as before
    assert len(appends) == 6  # the student's version once, the judge's once (was 9: turn 1 appended again)
    assert all(len(set(item["prompt_versions"])) == len(item["prompt_versions"]) == 2 for item in store.items(run_id))
