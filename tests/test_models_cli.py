"""`skillweave models list|show|check|add|remove`, the models file's search order and its validation errors."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    """Keep the user's own models file out: the user config folder is a temporary one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SKILLWEAVE_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)


def test_add_list_show_remove_roundtrip(cli_run, tmp_path):
    code, _, err = cli_run("models", "add", "vllm", "--kind", "openai", "--model", "Qwen/Qwen2.5-7B-Instruct",
                           "--base-url", "http://127.0.0.1:8001/v1", "--base-url", "http://127.0.0.1:8002/v1/",
                           "--max-concurrency", "32", "--rpm", "600", "--price-input", "0.1", "--price-output", "0.2")
    assert code == 0, err
    user_file = tmp_path / "xdg" / "skillweave" / "models.yaml"  # no project file: the user config folder
    assert "wrote " + str(user_file) in err
    data = yaml.safe_load(user_file.read_text())
    assert data == {"models": {"vllm": {
        "kind": "openai", "model": "Qwen/Qwen2.5-7B-Instruct",
        "base_urls": ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"], "max_concurrency": 32,
        "requests_per_minute": 600.0, "price_input": 0.1, "price_output": 0.2}}}
    code, _, err = cli_run("models", "add", "lc", "--kind", "langchain", "--model", "m:Chat",
                           "--kwarg", "responses=[\"a\"]", "--kwarg", "name=x")
    assert code == 0, err
    code, out, _ = cli_run("models", "list", "--json")
    listing = json.loads(out)
    assert [m["name"] for m in listing["models"]] == ["vllm", "lc"] and listing["models"][0]["endpoints"] == 2
    code, out, _ = cli_run("models", "show", "lc", "--json")
    assert json.loads(out) == {"name": "lc", "kind": "langchain", "model": "m:Chat",
                               "kwargs": {"responses": ["a"], "name": "x"}}
    code, _, err = cli_run("models", "add", "lc", "--kind", "fake", "--model", "default")
    assert code == 2 and err.startswith("Error: model 'lc' already exists") and "--replace" in err
    code, _, err = cli_run("models", "remove", "lc")
    assert code == 0
    assert list(yaml.safe_load(user_file.read_text())["models"]) == ["vllm"]
    code, _, err = cli_run("models", "remove", "lc")
    assert code == 2 and err == f"Error: no model 'lc' in {user_file}\n"


def test_project_file_wins_over_user_file_and_env_wins_over_both(cli_run, tmp_path, monkeypatch):
    from skillweave.providers.model_config import models_path

    assert models_path() == tmp_path / "xdg" / "skillweave" / "models.yaml"
    (tmp_path / "skillweave-models.yaml").write_text("models: {}\n")
    assert models_path().resolve() == (tmp_path / "skillweave-models.yaml").resolve()
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(tmp_path / "elsewhere.yaml"))
    assert models_path() == tmp_path / "elsewhere.yaml"
    code, _, err = cli_run("run", "skillmix", "--model", "nope", "--k", "2", "--n", "1")
    assert code == 2 and "does not exist" in err and "elsewhere.yaml" in err


@pytest.mark.parametrize(("content", "message"), [
    ("models:\n  a:\n    kind: openai\n    model: m\n    colour: red\n", "models.a.colour: unknown field"),
    ("models:\n  a:\n    kind: vllm\n    model: m\n", "models.a.kind: Input should be"),
    ("models:\n  a:\n    kind: openai\n    model: m\n    base_urls: ftp://x\n", "is not an http(s) URL"),
    ("models:\n  a:\n    kind: openai\n    model: m\n    max_concurrency: 0\n", "models.a.max_concurrency"),
    ("models:\n  'a:b':\n    kind: fake\n    model: m\n", "model name 'a:b'"),
    ("models: [\n", "models file"),
])
def test_bad_models_file_is_one_error_line_naming_file_and_field(cli_run, tmp_path, content, message):
    path = tmp_path / "skillweave-models.yaml"
    path.write_text(content)
    code, out, err = cli_run("run", "skillmix", "--model", "a", "--k", "2", "--n", "1")
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1 and "skillweave-models.yaml" in err and message in err
    code, _, err = cli_run("models", "list")
    assert code == 2 and message in err


def test_usage_errors(cli_run):
    for args, message in [
        (("models", "add", "x", "--kind", "fake", "--model", "m", "--base-url", "http://h/v1"), "base_urls apply"),
        (("models", "add", "local", "--kind", "fake", "--model", "m"), "not a shorthand"),
        (("models", "add", "x", "--kind", "anthropic", "--model", "m", "--rpm", "10"), "applies to kind openai only"),
        (("models", "add", "x", "--kind", "openai", "--model", "m", "--base-url", "localhost:8000"), "http(s) URL"),
        (("models", "add", "x", "--kind", "langchain", "--model", "m:C", "--kwarg", "novalue"), "KEY=VALUE"),
        (("models", "show", "ghost"), "no model 'ghost'"),
        (("models", "check"), "no named models"),
        (("run", "skillmix", "--model", "ghost", "--k", "2", "--n", "1"), "unknown model spec 'ghost'"),
    ]:
        code, _, err = cli_run(*args)
        assert code == 2 and err.startswith("Error: ") and message in err, (args, err)


def test_check_calls_each_model_and_each_fleet_endpoint(cli_run, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from mock_openai import run_in_process

    proc, port = run_in_process(0.0)
    try:
        live = f"http://127.0.0.1:{port}/v1"
        (tmp_path / "skillweave-models.yaml").write_text(yaml.safe_dump({"models": {
            "fleet": {"kind": "openai", "model": "m", "base_urls": [live, "http://127.0.0.1:9/v1"]},
            "dry": {"kind": "fake", "model": "default"},
        }}, sort_keys=False))
        code, out, err = cli_run("models", "check", "--json")
        rows = json.loads(out)
        assert [(r["name"], r["endpoint"], r["status"]) for r in rows] == [
            ("fleet", live, "ok"), ("fleet", "http://127.0.0.1:9/v1", "error"), ("dry", "-", "ok")]
        assert "Connect" in rows[1]["detail"]  # the connection error is shown
        assert code == 1 and err == "Error: 1 of 3 checks failed\n"
        code, out, _ = cli_run("models", "check", "dry")
        assert code == 0 and "ok" in out
    finally:
        proc.terminate()
        sys.path.pop(0)


def test_anthropic_entry_uses_its_key_variable_and_base_url(monkeypatch):
    from skillweave.providers.model_config import ModelEntry, build_from_entry

    monkeypatch.setenv("MY_CLAUDE_KEY", "sk-test")
    provider = build_from_entry("claude", ModelEntry(kind="anthropic", model="claude-x", api_key_env="MY_CLAUDE_KEY",
                                                     base_urls=["http://127.0.0.1:9/anthropic"], attempts=2))

    async def client():
        made = provider._per_loop(None)
        await provider.aclose()
        return made

    made = asyncio.run(client())
    assert (made.api_key, str(made.base_url).rstrip("/"), made.max_retries) == (
        "sk-test", "http://127.0.0.1:9/anthropic", 0)
    assert provider.retry.max_attempts == 2 and provider.spec == "anthropic:claude-x"
    monkeypatch.delenv("MY_CLAUDE_KEY")
    from skillweave.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs \$MY_CLAUDE_KEY"):
        build_from_entry("claude", ModelEntry(kind="anthropic", model="claude-x", api_key_env="MY_CLAUDE_KEY"))
