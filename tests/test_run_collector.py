"""collector.py: while a run's threads execute, young-generation collections come every YOUNG
allocations instead of every 700; the threshold found before is restored afterwards, also after an error and
when runs overlap."""

from __future__ import annotations

import gc

import pytest

import skillweave
from skillweave import collector
from skillweave.collector import YOUNG, fewer_collections
from skillweave.providers.core import FakeProvider


@pytest.fixture(autouse=True)
def default_threshold():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_raised_inside_restored_after_also_on_error():
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(ValueError), fewer_collections():
        raise ValueError("boom")
    assert gc.get_threshold() == (700, 10, 10)
    assert collector._active == 0


def test_overlapping_runs_restore_once_the_last_ends():
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs: still raised
    assert gc.get_threshold()[0] == YOUNG
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_collector_settings_of_the_caller_are_respected():
    gc.set_threshold(0)  # automatic collection off: stays off
    with fewer_collections():
        assert gc.get_threshold()[0] == 0
    gc.set_threshold(100_000, 5, 5)  # already higher: left alone, and kept afterwards
    with fewer_collections():
        assert gc.get_threshold() == (100_000, 5, 5)
    assert gc.get_threshold() == (100_000, 5, 5)


def test_a_run_executes_with_the_raised_threshold_and_restores_it(tmp_path, monkeypatch):
    seen = []
    chat = FakeProvider._chat

    async def recording(self, request):
        seen.append(gc.get_threshold()[0])
        return await chat(self, request)

    monkeypatch.setattr(FakeProvider, "_chat", recording)
    handle = skillweave.run("skillmix", db=str(tmp_path / "s.db"), k=[2], n=2, rounds=1, grading_samples=1,
                            model="fake", judge="fake")
    assert handle.summary.done == 2
    assert seen and set(seen) == {YOUNG}
    assert gc.get_threshold() == (700, 10, 10)
