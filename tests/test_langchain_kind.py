"""The `langchain:` kind: langchain-core's fake chat models run a pipeline end to end; messages convert both
ways; init_chat_model specs; retryable errors."""

from __future__ import annotations

import asyncio
import json
import sys
import types

import pytest
import yaml

from skillweave.store import Store

FAKES = "langchain_core.language_models.fake_chat_models"
STUDENT = "Answer: Sewing is patience, stitched one careful loop at a time. Explanation: metaphor."
JUDGE = "| Criteria | Points |\n|---|---|\n" + "| item | 1 |\n" * 5 + "| Total | 5 |"


@pytest.fixture
def models_file(tmp_path, monkeypatch):
    path = tmp_path / "models.yaml"
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(path))
    return path


def test_skillmix_runs_end_to_end_on_langchain_fake_chat_models(models_file, cli_run, db_path):
    models_file.write_text(yaml.safe_dump({"models": {
        "lc-student": {"kind": "langchain", "model": f"{FAKES}:FakeListChatModel", "kwargs": {"responses": [STUDENT]}},
        "lc-judge": {"kind": "langchain", "model": f"{FAKES}:FakeListChatModel", "kwargs": {"responses": [JUDGE]}},
    }}))
    code, out, err = cli_run("run", "skillmix", "--model", "lc-student", "--judge", "lc-judge", "--k", "2",
                             "--n", "3", "--rounds", "1", "--grading-samples", "2")
    assert code == 0, err
    store = Store(db_path)
    items = list(store.items(store.get_run("latest")["id"]))
    assert len(items) == 3 and all(i["status"] == "done" for i in items)
    calls = list(store.db.query("select provider, model, response, error from llm_calls"))
    assert len(calls) == 3 * 3 and all(c["error"] is None and c["provider"] == "langchain" for c in calls)
    judge_replies = [json.loads(c["response"]) for c in calls if c["response"] and "Total" in c["response"]]
    assert len(judge_replies) == 3 and all(r == [JUDGE, JUDGE] for r in judge_replies)  # n=2: two invocations
    code, out, _ = cli_run("report", "latest", "--json")
    assert json.loads(out)["metrics"]["2"]["Ratio of Full Marks"]["mean"] == 1.0


def test_langchain_spec_works_without_a_models_file(cli_run, db_path):
    """`langchain:<module>:<Class>` needs no models file; the parrot model echoes the prompt back."""
    code, _, err = cli_run("run", "skillmix", "--model", f"langchain:{FAKES}:ParrotFakeChatModel", "--judge", "fake",
                           "--k", "2", "--n", "2", "--rounds", "1", "--grading-samples", "1")
    assert code == 0, err
    store = Store(db_path)
    student = list(store.db.query("select request, response from llm_calls where provider = 'langchain'"))
    assert len(student) == 4
    for call in student:
        last = json.loads(call["request"])["messages"][-1]["content"]
        assert json.loads(call["response"]) == [last]


def test_messages_and_images_convert_both_ways():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from skillweave.providers.langchain_chat import from_langchain, to_langchain

    ours = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is in the chart?"},
                                     {"type": "image", "data": "iVBORw0KGgo=", "mime": "image/png"}]},
        {"role": "assistant", "content": "a bar chart"},
    ]
    theirs = to_langchain(ours)
    assert [type(m) for m in theirs] == [SystemMessage, HumanMessage, AIMessage]
    assert theirs[1].content[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert from_langchain(theirs) == ours
    # langchain-core's own standard image block comes back as our image part too
    standard = HumanMessage(content=[{"type": "image", "base64": "AAAA", "mime_type": "image/jpeg"}])
    assert from_langchain([standard]) == [{"role": "user", "content": [{"type": "image", "data": "AAAA",
                                                                        "mime": "image/jpeg"}]}]


def test_init_chat_model_spec_and_missing_package(monkeypatch):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from skillweave.errors import ConfigError
    from skillweave.providers.langchain_chat import build_chat_model

    monkeypatch.setitem(sys.modules, "langchain", None)  # not installed
    with pytest.raises(ConfigError, match="needs the langchain package"):
        build_chat_model("openai:gpt-4o-mini")
    seen = {}

    def init_chat_model(spec, **kwargs):
        seen.update(spec=spec, **kwargs)
        return FakeListChatModel(responses=["ok"])

    chat_models = types.ModuleType("langchain.chat_models")
    chat_models.init_chat_model = init_chat_model
    monkeypatch.setitem(sys.modules, "langchain", types.ModuleType("langchain"))
    monkeypatch.setitem(sys.modules, "langchain.chat_models", chat_models)
    model = build_chat_model("openai:gpt-4o-mini", {"temperature": 0})
    assert seen == {"spec": "openai:gpt-4o-mini", "temperature": 0} and model.responses == ["ok"]
    with pytest.raises(ConfigError, match="cannot import"):
        build_chat_model("no_such_module_xyz:ChatThing")


def test_rate_limit_errors_are_retried_and_others_fail(monkeypatch):
    from langchain_core.messages import AIMessage

    from skillweave.errors import ModelCallError
    from skillweave.providers.core import ChatRequest, RetryPolicy
    from skillweave.providers.langchain_chat import LangChainProvider

    class RateLimitError(Exception):
        pass

    class Model:
        def __init__(self, errors):
            self.errors = list(errors)
            self.kwargs = []

        async def ainvoke(self, messages, **kwargs):
            self.kwargs.append(kwargs)
            if self.errors:
                raise self.errors.pop(0)
            return AIMessage(content="fine", usage_metadata={"input_tokens": 3, "output_tokens": 1,
                                                            "total_tokens": 4})

    provider = LangChainProvider(f"{FAKES}:ParrotFakeChatModel", retry=RetryPolicy(max_attempts=3, base_delay=0))
    provider.chat_model = Model([RateLimitError("slow down")])
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, max_tokens=7)
    result, attempts = asyncio.run(provider.chat(request))
    assert (result.texts, result.input_tokens, result.output_tokens, attempts) == (["fine"], 3, 1, 2)
    assert provider.chat_model.kwargs[-1] == {"temperature": 0.2, "max_tokens": 7}
    provider.chat_model = Model([ValueError("bad request")])
    with pytest.raises(ModelCallError, match="bad request"):
        asyncio.run(provider.chat(request))
