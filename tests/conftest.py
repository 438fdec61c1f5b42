"""Shared fixtures: a temporary store per test, scripted fake providers, and a guard against network calls."""

from __future__ import annotations

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise RuntimeError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any connection outside 127.0.0.0/8 fails the test: no real model call can slip through."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _fresh_providers():
    from skillweave.providers.core import clear_providers

    clear_providers()
    yield
    clear_providers()


@pytest.fixture(autouse=True, scope="session")
def _kernel_builds(tmp_path_factory):
    """The embedded model's native attention kernel (providers/native.py) builds into a temporary folder, not the
    user's cache."""
    from skillweave.providers import native

    native.KERNEL_DIR = tmp_path_factory.mktemp("kernels")
    yield
    native.KERNEL_DIR = None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama saved as a transformers folder (tests/test_local_engine.py's `build_tiny_model`), one per
    test module: a module may write next to its weights (the int8 cache), so modules do not share it."""
    from tests.test_local_engine import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared, loaded CPU two threads spin against each other and run several
    times slower. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path):
    from skillweave.store import Store

    s = Store(tmp_path / "test.db")
    yield s
    s.close()


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "cli.db")


@pytest.fixture
def cli_run(db_path):
    """Invoke the CLI in-process like a user would; returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from skillweave.cli import main

    def run(*args, db: str | None = None):
        runner = CliRunner()

        def entry():
            main(["--db", db or db_path, *args])

        result = runner.invoke(_Wrapper(entry), [], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


class _Wrapper:
    """Lets CliRunner capture our `main()` (which calls sys.exit) like a click command."""

    def __init__(self, fn):
        self.fn = fn
        self.name = "skillweave"

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        self.fn()


def json_server(respond):
    """A 127.0.0.1 HTTP server for provider tests: each POST's JSON body goes to `respond(body)`, which returns
    (status, text) or (status, text, headers). Returns (server, base URL); call `server.shutdown()` when done."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            status, text, *rest = respond(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            payload = text.encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            for name, value in (rest[0] if rest else {}).items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _without_call_ids(value):
    """Model call ids are random per call (uuid4), in any store: the only field a re-run may not repeat."""
    if isinstance(value, dict):
        return {k: _without_call_ids(v) for k, v in value.items() if not k.endswith("call_id")}
    return [_without_call_ids(v) for v in value] if isinstance(value, list) else value


def run_content(db: str) -> dict:
    """For comparing runs (a sharded run merged against the unsharded one): what a run produced, independent of its id: items with texts and grades, and the pipeline's report (its
    table, and its metrics where the pipeline reports them)."""
    import json

    from skillweave.pipelines import get_pipeline
    from skillweave.store import Store

    store = Store(db)
    run = store.get_run("latest")
    items = []
    for item in store.items(run["id"]):
        grades = [(g["sample_index"], g["judge"], g["points"], g["raw"]) for g in store.grades(item["id"])]
        items.append((item["kind"], item["combo_index"], item["round"], item["k"], tuple(item["skills"]),
                      item["topic"], item["status"], json.dumps(_without_call_ids(item["payload"]), sort_keys=True),
                      tuple(grades)))
    report = get_pipeline(run["pipeline"]).reporter()(store, run)
    text = json.dumps({"items": sorted(items), "table": report["table"], "metrics": report.get("metrics")},
                      sort_keys=True, default=str)
    return json.loads(text.replace(run["id"], "RUN"))


@pytest.fixture
def training_arguments(monkeypatch) -> dict:
    """The keyword arguments of the last `transformers.TrainingArguments` built during the test (still built)."""
    import sys

    # what the trainers import, loaded first: that import can swap the lazily loaded `transformers` module object
    from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: F401

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        return TrainingArguments(*args, **kwargs)

    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", capture)
    return seen


@pytest.fixture
def cheap_models(tmp_path, monkeypatch):
    """A models file (set as $SKILLWEAVE_MODELS) with `cheap`, a fake model priced high enough that a small test
    run costs whole cents ($100 / $400 per 1M input / output tokens), and a price for `fake:cheap2`."""
    path = tmp_path / "models.yaml"
    path.write_text("""\
models:
  cheap:
    kind: fake
    model: default
    price_input: 100     # USD per 1M tokens: large, so a test run costs whole cents
    price_output: 400
prices:
  fake:cheap2: {input: 50, output: 200}
""")
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(path))
    return path
