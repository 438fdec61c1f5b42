"""Large runs, the last pieces: cost in the progress bar and line, `--shard I/N` on every run command whose plan is
fixed (a sharded run merged equals the unsharded run), and the refusal where it is not. Fake provider only."""

from __future__ import annotations

import io

import pytest

MODELS = """\
models:
  cheap:
    kind: fake
    model: default
    price_input: 100     # USD per 1M tokens
    price_output: 400
"""
SMALL = ("--k", "2", "--n", "2", "--rounds", "1", "--grading-samples", "1")


@pytest.fixture
def models_file(tmp_path, monkeypatch):
    path = tmp_path / "models.yaml"
    path.write_text(MODELS)
    monkeypatch.setenv("SKILLWEAVE_MODELS", str(path))
    return path


# ---- cost in the progress bar and the progress line -------------------------------------------------------
def _progress(store, run_id, stream=None):
    from skillweave.graphs.progress import Progress
    from skillweave.graphs.runtime import RunSummary

    return Progress(4, "skillmix", enabled=True, summary=RunSummary(run_id=run_id, done=1, failed=0), store=store,
                    run_id=run_id, every=0, stream=stream)


def test_progress_line_shows_spend_and_unknown_never_zero(store):
    run_id = store.create_run("skillmix", {})
    bar = _progress(store, run_id)
    assert "cost $0," in bar.line()  # no call yet: nothing spent
    store.record_call(run_id=run_id, role="student", input_tokens=10, output_tokens=5, response=["x"], cost_usd=None)
    assert "15 tokens, cost unknown (1 calls unpriced)," in bar.line()  # unpriced: unknown, not $0
    store.record_call(run_id=run_id, role="judge", input_tokens=4, output_tokens=1, response=["x"], cost_usd=0.0125)
    assert "20 tokens, cost at least $0.0125 (1 calls unpriced)," in bar.line()
    other = store.create_run("skillmix", {})
    store.record_call(run_id=other, role="judge", input_tokens=4, output_tokens=1, response=["x"], cost_usd=0.5)
    store.record_call(run_id=other, role="judge", error="boom")  # a failed call costs nothing and is not unpriced
    assert "5 tokens, cost $0.5000," in _progress(store, other).line()


def test_progress_bar_on_a_terminal_shows_cost(store):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run_id = store.create_run("skillmix", {})
    store.record_call(run_id=run_id, role="judge", input_tokens=7, output_tokens=3, response=["x"], cost_usd=0.25)
    stream = Terminal()
    bar = _progress(store, run_id, stream=stream)
    bar.update(1)
    bar._bar.refresh()
    assert "tokens=10" in stream.getvalue() and "cost=$0.2500" in stream.getvalue()
    bar.close()
    unpriced = store.create_run("skillmix", {})
    store.record_call(run_id=unpriced, role="judge", input_tokens=7, output_tokens=3, response=["x"])
    stream = Terminal()
    bar = _progress(store, unpriced, stream=stream)
    bar.update(1)
    bar._bar.refresh()
    assert "cost=unknown (1 calls unpriced)" in stream.getvalue()
    bar.close()


def test_progress_lines_of_a_run_show_its_cost(cli_run, db_path, models_file, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    code, _, err = cli_run("run", "skillmix", *SMALL, "--model", "cheap", "--judge", "cheap", "--progress-every", "0.02")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("progress skillmix: ")]
    assert lines and all(", cost $" in line for line in lines), err
    assert any(", cost $0," not in line for line in lines)  # spend grew while the run ran
    code, _, err = cli_run("run", "skillmix", *SMALL, "--model", "fake", "--progress-every", "0.02")
    lines = [line for line in err.splitlines() if line.startswith("progress skillmix: ")]
    assert code == 0 and lines and any("cost unknown (" in line for line in lines), err
    assert not any(", cost $" in line and ", cost $0," not in line for line in lines)  # never a price for fake
