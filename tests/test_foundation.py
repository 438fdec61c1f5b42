"""Store, prompt templates and providers: the behaviour every pipeline relies on."""

import asyncio
import sys
from pathlib import Path

import pytest

from skillweave.errors import ConfigError, ModelCallError, NotFound, TemplateError
from skillweave.prompts import content_version, list_templates, load_template
from skillweave.providers.core import ChatRequest, FakeProvider, OpenAIProvider, RetryPolicy, parse_spec
from skillweave.store import Store, migration_modules, queries

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


# ---- store ---------------------------------------------------------------------------------------------
def test_store_migrations_wal_and_idempotent_items(tmp_path):
    store = Store(tmp_path / "a.db")
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    applied = [r["name"] for r in store.db["_migrations"].rows]
    assert applied[0] == "m0001_core" and applied == sorted(applied)
    # the trainers' and providers' own sets are applied with the core one, under the names they shipped with
    assert {"m0070_trainers", "m0080_less", "m0090_unlearning", "m0121_batch_jobs"} <= set(applied)
    assert {"train_checkpoints", "less_datastores", "forget_sets", "batch_jobs"} <= set(store.db.table_names())
    owners = {name: module.__name__.split(".")[1] for name, module in migration_modules()}
    assert owners["m0001_core"] == "store" and owners["m0080_less"] == "trainers" and owners["m0121_batch_jobs"] == "providers"
    run = store.create_run("skillmix", {"k": [2]})
    first = store.ensure_item(run, "x", 0, 0, k=2)
    again = store.ensure_item(run, "x", 0, 0, k=3)
    assert first == again and store.db["items"].count == 1 and store.get_item(first)["k"] == 2
    store.close()
    reopened = Store(tmp_path / "a.db")  # migrations are not applied twice
    assert [r["name"] for r in reopened.db["_migrations"].rows] == applied


def test_store_transaction_rolls_back_everything(store):
    run = store.create_run("p", {})
    with pytest.raises(RuntimeError), store.transaction():
        store.ensure_item(run, "x", 0)
        store.update_item(store.item_id(run, "x", 0), status="done")
        raise RuntimeError("boom")
    assert store.db["items"].count == 0


def test_one_store_is_safe_to_share_between_threads(tmp_path):
    """The web page resumes a thread in a worker while serving pages from the same Store."""
    import threading

    from skillweave.graphs.runtime import StoreCheckpointer

    store = Store(tmp_path / "a.db")
    run = store.create_run("p", {})
    errors: list[BaseException] = []

    def work(worker: int):
        try:
            for i in range(300):
                item = store.ensure_item(run, f"w{worker}", i)
                store.update_item(item, status="done", payload_update={"i": i})
                assert store.get_item(item)["payload"] == {"i": i}
                assert store.db["items"].count_where("id = ?", [item]) == 1
                if worker == 0:  # what a resumed run does first, while the others read and write
                    with store.lock:
                        StoreCheckpointer(store.db.conn).setup()
        except BaseException as exc:  # noqa: BLE001  (collected and reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.db["items"].count_where("status = 'done'") == 1200
    store.close()


def test_store_errors_name_the_record(store, tmp_path):
    with pytest.raises(NotFound, match="no run 'r-missing'"):
        store.get_run("r-missing")
    with pytest.raises(NotFound, match="has no runs"):
        store.get_run("latest")
    from skillweave.errors import StoreError

    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "no" / "such" / "dir.db")


def test_catalogs_are_content_addressed(store):
    a = store.save_catalog("x", "skills", [{"name": "a"}, {"name": "b"}])
    b = store.save_catalog("renamed", "skills", [{"name": "a"}, {"name": "b"}])
    c = store.save_catalog("x", "skills", [{"name": "b"}, {"name": "a"}])
    assert a == b != c
    assert [e["name"] for e in store.get_catalog(c)["entries"]] == ["b", "a"]


# ---- prompts -------------------------------------------------------------------------------------------
def test_every_packaged_template_parses_and_renders_its_fake_reply():
    templates = list_templates()
    assert {"skillmix/student", "skillmix/judge", "skillmix/judge_points"} <= {t.name for t in templates}
    for t in templates:
        assert t.version.startswith("b3:") and t.description, t.name
        for folder in {Path(t.path).parent}:
            assert (folder / "README.md").exists(), f"{folder} needs a README describing its templates"


def test_skillmix_templates_take_what_the_nodes_supply():
    skill = {"name": "metaphor", "definition": "d", "example": "e"}
    student = {"skills": [skill], "topic": "Knots", "k": 1, "sentence_limit": "one sentence", "shorten": True}
    t = load_template("skillmix/student")
    assert "Knots" in t.render_turn(0, student) and "shorter" in t.render_turn(1, student)
    judge = {**student, "text": "A knot."}
    judge.pop("shorten")
    for name in ("skillmix/judge", "skillmix/judge_points"):
        assert "A knot." in load_template(name).render_turn(0, judge)


def test_missing_and_unknown_variables_fail_before_any_call():
    t = load_template("skillmix/judge")
    with pytest.raises(TemplateError, match="missing text"):
        t.render_turn(0, {"skills": [], "topic": "x", "k": 1, "sentence_limit": "one"})
    with pytest.raises(TemplateError, match="unknown colour"):
        t.render_turn(0, {"skills": [], "topic": "x", "k": 1, "sentence_limit": "one", "text": "t", "colour": 1})
    with pytest.raises(TemplateError, match="unknown template 'skillmix/nope'"):
        load_template("skillmix/nope")


def test_user_folder_overrides_and_edit_changes_version(tmp_path):
    packaged = load_template("skillmix/judge")
    (tmp_path / "skillmix").mkdir()
    override = tmp_path / "skillmix" / "judge.yaml"
    override.write_text(packaged.text)
    same = load_template("skillmix/judge", tmp_path)
    assert same.source == "user" and same.version == packaged.version  # same content, same version
    override.write_text(packaged.text.replace("You are grading", "Please grade"))
    edited = load_template("skillmix/judge", tmp_path)
    assert edited.version != packaged.version and edited.legacy_version == content_version(override.read_text())
    with pytest.raises(TemplateError, match="prompts folder .* does not exist"):
        load_template("skillmix/judge", tmp_path / "missing")
    (tmp_path / "skillmix" / "bad.yaml").write_text("variables: [a]\nprompt: '{{ a }} {{ b }}'\n")
    with pytest.raises(TemplateError, match="undeclared variable"):
        load_template("skillmix/bad", tmp_path)


# ---- providers -----------------------------------------------------------------------------------------
def test_model_specs():
    assert parse_spec("local") == ("local", "local")
    assert parse_spec("openai:gpt-4o") == ("openai", "gpt-4o")
    assert parse_spec("anthropic:claude-3-5-sonnet") == ("anthropic", "claude-3-5-sonnet")
    with pytest.raises(ConfigError, match="unknown model spec 'gtp-4o'; expected local, fake"):
        parse_spec("gtp-4o")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIProvider("gpt-4o")


def test_local_torch_threads_follow_the_override_and_the_load(monkeypatch):
    from skillweave.providers import core as providers

    monkeypatch.delenv("SKILLWEAVE_TORCH_THREADS", raising=False)
    monkeypatch.setattr(providers.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert providers.local_torch_threads(4) == 4  # idle: every core
    monkeypatch.setattr(providers.os, "getloadavg", lambda: (2.5, 1.0, 1.0))
    assert providers.local_torch_threads(4) == 1  # busy: one thread
    monkeypatch.setenv("SKILLWEAVE_TORCH_THREADS", "3")
    assert providers.local_torch_threads(4) == 3


def test_fake_provider_gives_up_after_retries():
    p = FakeProvider("fail", retry=RetryPolicy(max_attempts=3, base_delay=0))
    with pytest.raises(ModelCallError, match="scripted failure"):
        asyncio.run(p.chat(ChatRequest(messages=[{"role": "user", "content": "x"}])))


@pytest.fixture
def mock_server():
    sys.path.insert(0, str(BENCH))
    from mock_openai import run_in_process

    proc, port = run_in_process(0.01, fail_every=2)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    sys.path.remove(str(BENCH))


def test_openai_provider_honours_retry_after_on_429(mock_server, monkeypatch):
    """Every 2nd request gets 429 + Retry-After: 0.05; the provider waits that long and retries."""
    monkeypatch.setenv("OPENAI_BASE_URL", mock_server)
    p = OpenAIProvider("mock", retry=RetryPolicy(max_attempts=3, base_delay=5.0, timeout=10))

    async def go():
        try:
            return [await p.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], n=2)) for _ in range(3)]
        finally:
            await p.aclose()

    import time

    start = time.perf_counter()
    results = asyncio.run(go())
    elapsed = time.perf_counter() - start
    assert [attempts for _, attempts in results] == [1, 2, 2]  # server requests 2 and 4 get the 429
    assert all(len(r.texts) == 2 and r.input_tokens for r, _ in results)
    assert elapsed < 4.0  # Retry-After (0.05 s) was used instead of the 5 s backoff base


@pytest.fixture()
def scripted_server():
    """A 127.0.0.1 chat-completions server answering with scripted (status, body) pairs, then 200s."""
    import json

    from conftest import json_server

    script: list[tuple[int, str]] = []
    bodies: list[dict] = []
    ok = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    def respond(body):
        bodies.append(body)
        return script.pop(0) if script else (200, ok)

    server, url = json_server(respond)
    yield f"{url}/v1", script, bodies
    server.shutdown()


def test_openai_provider_statuses_retries_and_request_body(scripted_server, monkeypatch):
    url, script, bodies = scripted_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    p = OpenAIProvider("m", retry=RetryPolicy(max_attempts=3, base_delay=0.01, timeout=10))

    def chat(provider=p, **options):
        async def go():
            try:
                return await provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], options=options))
            finally:
                await provider.aclose()

        return asyncio.run(go())

    script[:] = [(503, "busy"), (500, "{}")]  # 5xx are retried
    result, attempts = chat(json=True, seed=7)
    assert (result.texts, result.input_tokens, result.output_tokens, attempts) == (["ok"], 3, 1, 3)
    assert bodies[-1]["response_format"] == {"type": "json_object"} and bodies[-1]["seed"] == 7
    assert bodies[-1]["model"] == "m" and "json" not in bodies[-1]
    script[:] = [(400, '{"error": {"message": "max_tokens is too large"}}')]  # a client error is not retried
    with pytest.raises(ModelCallError, match="HTTP 400 .*max_tokens is too large") as failure:
        chat()
    assert not failure.value.retryable and not script
    script[:] = [(200, '{"unexpected": true}')] * 3  # a 200 without choices is retried, then given up
    with pytest.raises(ModelCallError, match="gave up after 3 attempts: .*unusable reply .*no choices"):
        chat()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: retried, then given up
    with pytest.raises(ModelCallError, match="gave up after 3 attempts"):
        chat(OpenAIProvider("m", retry=RetryPolicy(max_attempts=3, base_delay=0.01, timeout=10)))


def test_provider_options_are_recorded_and_part_of_the_call_key(store):
    from skillweave.agents.llm import RunContext, call_template
    from skillweave.providers.core import register_provider

    seen = []
    register_provider("fake:opts", FakeProvider("opts", script=lambda r: seen.append(r.options) or "ok"))
    ctx = RunContext(store, store.create_run("t", {}), {})
    values = {"skills": [], "topic": "x", "k": 1, "sentence_limit": "one", "text": "t"}

    async def go(options):
        return await call_template(ctx, item_id=None, role="judge", template="skillmix/judge", values=values,
                                   model="fake:opts", options=options)

    plain, json_mode = asyncio.run(go(None)), asyncio.run(go({"json": True, "seed": 42}))
    assert plain.call_id != json_mode.call_id and seen == [{}, {"json": True, "seed": 42}]
    assert asyncio.run(go({"json": True, "seed": 42})).cached
    import json

    assert json.loads(queries.call_by_id(store, json_mode.call_id)["request"])["options"] == {"json": True, "seed": 42}
