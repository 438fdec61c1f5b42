"""Typed structured outputs (agents/structured.py) and the parse-failure counts of `report`.

- the schema reaches an OpenAI-compatible server as `response_format: json_schema` and is part of the call key;
- a reply that does not validate gets exactly one repair turn quoting the error; one that still fails is a
  StructuredFailure with its reason, recorded as parse_failed events (never a success);
- `report` shows per step how many replies did not parse (5 of 20 Skill-Mix judge replies, which score 0).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field

from skillweave.agents.llm import RunContext, call_template
from skillweave.agents.structured import StructuredFailure, call_structured, schema_option
from skillweave.errors import ParseFailure
from skillweave.providers.core import (
    ChatRequest,
    FakeProvider,
    OpenAIProvider,
    message_text,
    register_provider,
)
from skillweave.store import Store


class Verdict(BaseModel):
    verdict: str
    score: int = Field(ge=0, le=1)


def _ctx(tmp_path) -> RunContext:
    store = Store(str(tmp_path / "s.db"))
    run_id = store.create_run("skillmix", {"model": "fake:s"})
    return RunContext(store, run_id, {})


def _run(ctx, **kw):
    call = dict(item_id=None, role="judge", template="skillmix/judge", model="fake:s",
                values={"k": 2, "skills": [{"name": "a", "definition": "x", "example": "y"}] * 2, "topic": "t",
                        "sentence_limit": 3, "text": "t"})
    return asyncio.run(call_structured(ctx, schema=Verdict, **{**call, **kw}))


def _script(*replies):
    seen = []

    def script(request):
        seen.append(request)
        return replies[min(len(seen), len(replies)) - 1]

    register_provider("fake:s", FakeProvider("s", script=script))
    return seen


def test_openai_body_sends_the_schema_as_response_format():
    provider = OpenAIProvider.__new__(OpenAIProvider)
    provider.model = "m"
    body = provider._body(ChatRequest(messages=[{"role": "user", "content": "hi"}],
                                      options={"json": True, "seed": 1, "json_schema": schema_option(Verdict)}))
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Verdict"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["verdict", "score"]
    assert body["seed"] == 1 and "json_schema" not in body and "json" not in body


def test_a_valid_reply_needs_no_repair_and_the_schema_is_in_the_recorded_request(tmp_path):
    ctx = _ctx(tmp_path)
    seen = _script('Sure. ```json\n{"verdict": "good", "score": 1}\n```')
    value, reply = _run(ctx)
    assert value == Verdict(verdict="good", score=1) and len(seen) == 1
    assert seen[0].options["json_schema"]["schema"] == Verdict.model_json_schema()
    (call,) = ctx.store.db.query("select request, call_key from llm_calls")
    assert json.loads(call["request"])["options"]["json_schema"]["name"] == "Verdict"

    class Other(Verdict):  # another schema, same prompt: another call key (a stored reply is not reused for it)
        reason: str = ""

    asyncio.run(call_structured(ctx, schema=Other, item_id=None, role="judge", template="skillmix/judge",
                                model="fake:s", values={"k": 2, "skills": [{"name": "a", "definition": "x",
                                                                           "example": "y"}] * 2,
                                                        "topic": "t", "sentence_limit": 3,
                                                        "text": "t"}))
    keys = [r["call_key"] for r in ctx.store.db.query("select call_key from llm_calls")]
    assert len(set(keys)) == 2 and len(seen) == 2


def test_one_repair_turn_quotes_the_validation_error(tmp_path):
    ctx = _ctx(tmp_path)
    seen = _script('{"verdict": "good", "score": 7}', '{"verdict": "good", "score": 1}')
    value, reply = _run(ctx)
    assert value.score == 1 and len(seen) == 2
    repair = seen[1].messages
    assert repair[-2] == {"role": "assistant", "content": '{"verdict": "good", "score": 7}'}
    assert repair[-1]["role"] == "user" and "score: Input should be less than or equal to 1" in repair[-1]["content"]
    assert repair[:-2] == seen[0].messages
    events = list(ctx.store.db.query("select stage, status, reason from events"))
    assert [(e["stage"], e["status"]) for e in events] == [("judge", "parse_failed")]
    assert ctx.store.db["llm_calls"].count == 2


def test_a_reply_that_still_fails_is_a_parse_failure_with_its_reason(tmp_path):
    ctx = _ctx(tmp_path)
    seen = _script("I think it is fine.", '{"verdict": "fine"}')
    with pytest.raises(StructuredFailure) as info:
        _run(ctx)
    assert len(seen) == 2  # bounded: one repair turn, no more
    assert "score: Field required" in str(info.value) and info.value.raw == '{"verdict": "fine"}'
    assert isinstance(info.value, ParseFailure) and info.value.call_id
    reasons = [e["reason"] for e in ctx.store.db.query("select reason from events where status = 'parse_failed'")]
    assert len(reasons) == 2 and "no JSON object" in reasons[0] and reasons[1].startswith("repair call")


def test_report_counts_unparseable_judge_replies_per_step(cli_run, db_path):
    """20 Skill-Mix judge replies, 5 of them without a rubric table: today they silently score 0; the report
    says so per step, in the table output and in --json."""
    counter = {"judge": 0}

    def script(request):
        text = message_text(request.messages[-1])
        if "grading" in text:
            counter["judge"] += 1
            if counter["judge"] % 4 == 0:
                return "I cannot grade this."
            return "| a | 1 |\n| b | 1 |\n| c | 1 |\n| d | 1 |\n| e | 1 |"
        return "Answer: a short text. Explanation: x"

    register_provider("fake:scripted", FakeProvider("scripted", script=script), max_concurrency=4)
    code, out, err = cli_run("run", "skillmix", "--model", "fake:scripted", "--k", "2", "--n", "20", "--rounds", "1",
                             "--grading-samples", "1", "--concurrency", "4")
    assert code == 0, err
    code, out, err = cli_run("report", "latest")
    assert code == 0, err
    assert "parse failures  judge: 5 of 20 replies, 5 grades unparsed" in out
    code, out, err = cli_run("report", "latest", "--json")
    rows = {r["step"]: r for r in json.loads(out)["parse_failures"]}
    assert rows["judge"] == {"step": "judge", "replies": 20, "parse_failures": 5, "unparsed_grades": 5}
    assert rows["student"]["parse_failures"] == 0
    from skillweave.api import RunHandle

    handle = RunHandle(run_id=Store(db_path).get_run("latest")["id"], pipeline="skillmix", db=db_path)
    assert {r["step"]: r for r in handle.metrics["parse_failures"]}["judge"]["parse_failures"] == 5


def test_chart_judge_reply_repaired_once_scores_instead_of_minus_one(tmp_path):
    """A chart judge whose first reply misses a key gets a repair turn and its corrected reply is the grade."""
    from skillweave.charts.grading import reasoning_from_model, reasoning_judge_schema
    from skillweave.pipelines.chart_eval.nodes import _judge_call

    store = Store(str(tmp_path / "c.db"))
    run_id = store.create_run("chart-eval", {})

    class Config:
        judge, judge_max_tokens, judge_max_tokens_cap, judge_retries = "fake:s", 256, 1024, 1

        def get(self, key, default=None):
            return default

    ctx = RunContext(store, run_id, Config())
    item = store.ensure_item(run_id, "chart.reasoning", 0, 0, payload={})
    seen = _script('{"extracted_answer": "4"}', '{"extracted_answer": "4", "score": 1}')
    values = {"question": "q", "answer": "4", "response": "Final answer: 4", "inst_category": 3, "extracted": "4"}
    parsed, call_id, raw, reason = asyncio.run(_judge_call(ctx, item, "chart_eval/judge_reasoning", values,
                                                           reasoning_judge_schema(), reasoning_from_model))
    assert parsed == {"extracted": "4", "score": 1} and reason is None and len(seen) == 2
    assert seen[0].options == {"json": True, "seed": 42, "top_p": 1.0,
                               "json_schema": {"name": "ReasoningJudgeReply",
                                               "schema": reasoning_judge_schema().model_json_schema(),
                                               "strict": False}}


def test_call_template_without_extra_messages_is_unchanged(tmp_path):
    ctx = _ctx(tmp_path)
    seen = _script("x")
    asyncio.run(call_template(ctx, item_id=None, role="judge", template="skillmix/judge", model="fake:s",
                              values={"k": 2, "skills": [{"name": "a", "definition": "x", "example": "y"}] * 2,
                                      "topic": "t", "sentence_limit": 3, "text": "t"}))
    assert seen[0].messages[-1]["role"] == "user" and len(seen[0].messages) <= 2


def test_skill_clustering_reply_is_typed_and_repaired(tmp_path):
    """The clustering step's JSON is validated against its schema: a reply in another shape gets one repair turn
    and the corrected reply is used; `parse_clusters` still checks names and membership."""
    from skillweave.agents.skill_extraction import _complete_clusters, _parsed_call
    from skillweave.agents.skill_parsing import clusters_schema

    store = Store(str(tmp_path / "k.db"))
    run_id = store.create_run("extract-skills", {})

    class Config:
        parse_retries, temperature, model = 0, 0.0, "fake:s"

        def get(self, key, default=None):
            return default

    ctx = RunContext(store, run_id, Config())
    good = '{"skills": [{"name": "counting", "definition": "Count.", "members": ["count", "tally"]}]}'
    seen = _script('[{"title": "counting"}]', good)
    values = {"subject": "Algebra", "labels": [{"name": "count", "count": 2}, {"name": "tally", "count": 1}],
              "target": 1}
    (groups, missing), reply = asyncio.run(_parsed_call(
        ctx, None, "cluster:Algebra:0", "skill_extraction/cluster", values,
        lambda t: _complete_clusters(t, ["count", "tally"]), max_tokens=200, schema=clusters_schema()))
    assert groups == [{"name": "counting", "definition": "Count.", "members": ["count", "tally"]}] and not missing
    assert len(seen) == 2 and "skills: Field required" in message_text(seen[1].messages[-1])
    assert seen[0].options["json_schema"]["name"] == "SkillClusters"
    from skillweave.metrics.parse_failures import parse_failures

    assert parse_failures(store, run_id) == [{"step": "cluster", "replies": 2, "parse_failures": 1,
                                              "unparsed_grades": 0}]


@pytest.fixture
def capturing_server():
    """A 127.0.0.1 chat-completions server that records request bodies and answers the scripted contents."""
    from conftest import json_server

    bodies, contents = [], []

    def respond(body):
        bodies.append(body)
        content = contents.pop(0) if contents else '{"verdict": "ok", "score": 1}'
        return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}],
                                "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    server, url = json_server(respond)
    yield f"{url}/v1", bodies, contents
    server.shutdown()


@pytest.mark.parametrize("spec", ["openai:m", "named"])
def test_openai_compatible_servers_get_the_schema_and_the_repair_turn(capturing_server, tmp_path, monkeypatch, spec):
    """Both OpenAI-compatible paths (`openai:` and a models-file name, i.e. a fleet) send
    `response_format: json_schema`; the repair request repeats the schema and quotes the error."""
    import yaml

    from skillweave.providers.core import close_clients

    url, bodies, contents = capturing_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"named": {"kind": "openai", "model": "m", "base_urls": [url]}}}))
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(models))
    contents[:] = ['{"verdict": "ok"}']
    ctx = _ctx(tmp_path)

    async def go():
        try:
            return await call_structured(
                ctx, schema=Verdict, item_id=None, role="judge", template="skillmix/judge", model=spec,
                values={"k": 2, "skills": [{"name": "a", "definition": "x", "example": "y"}] * 2, "topic": "t",
                        "sentence_limit": 3, "text": "t"}, options={"json": True, "seed": 3})
        finally:
            await close_clients()

    value, reply = asyncio.run(go())
    assert value == Verdict(verdict="ok", score=1) and len(bodies) == 2
    for body in bodies:
        assert body["response_format"] == {"type": "json_schema", "json_schema": schema_option(Verdict)}
        assert body["seed"] == 3 and "json_schema" not in body
    assert bodies[1]["messages"][-2] == {"role": "assistant", "content": '{"verdict": "ok"}'}
    assert "score: Field required" in bodies[1]["messages"][-1]["content"]


def test_conceptmix_refine_reply_is_repaired_not_dropped_to_the_rule(cli_run, db_path):
    """REFINE's JSON with a top-level field the schema forbids gets a repair turn; the repaired configuration is
    used (refine_source llm) instead of falling back to the rule completion."""
    refine_requests = []

    def script(request):
        text = message_text(request.messages[-1])
        fake = request.meta.get("fake_reply")
        if "completed JSON only" in text:
            refine_requests.append(request)
            return json.dumps({**json.loads(fake), "mood": "cheerful"})
        return fake

    register_provider("fake:cm", FakeProvider("cm", script=script), max_concurrency=4)
    code, out, err = cli_run("run", "conceptmix", "--k", "2", "--n", "2", "--model", "fake:cm", "--grader", "fake",
                             "--concurrency", "4")
    assert code == 0, err
    store = Store(db_path)
    run_id = store.get_run("latest")["id"]
    items = [i for i in store.items(run_id) if "refine_source" in i["payload"]]
    assert len(items) == 2 and all(i["payload"]["refine_source"] == "llm" for i in items)
    assert all("mood" not in i["payload"]["refined_config"] for i in items)
    assert len(refine_requests) == 2 and all(r.options["json_schema"]["name"] == "RefinedConfig"
                                             for r in refine_requests)
    events = list(store.db.query("select reason from events where run_id = ? and stage = 'refine' and "
                                 "status = 'parse_failed'", [run_id]))
    assert len(events) == 2 and all("mood: Extra inputs are not permitted" in e["reason"] for e in events)
