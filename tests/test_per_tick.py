"""agents/per_tick.py: a model call's template and price lookups (file checks) are made once per event-loop turn,
not once per call; the next turn looks again, so an edit is still noticed; outside a loop nothing is kept."""

from __future__ import annotations

import asyncio
import math
import os

import pytest

import skillweave
from skillweave.agents import llm
from skillweave.agents.per_tick import once_per_tick


def test_outside_a_loop_every_call_looks_up():
    calls = []
    for _ in range(3):
        once_per_tick("k", calls.append, 1)
    assert calls == [1, 1, 1]


def test_once_per_turn_and_again_on_the_next():
    calls = []

    def look(value):
        calls.append(value)
        return value * 2

    async def go():
        first = [once_per_tick(("k", 1), look, 1) for _ in range(5)] + [once_per_tick(("k", 2), look, 2)]
        await asyncio.sleep(0)  # the loop turns: the answers are forgotten
        second = once_per_tick(("k", 1), look, 1)
        return first, second

    first, second = asyncio.run(go())
    assert first == [2, 2, 2, 2, 2, 4] and second == 2
    assert calls == [1, 2, 1]


def test_errors_are_raised_every_time_and_not_kept():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("no such template")

    async def go():
        for _ in range(2):
            with pytest.raises(ValueError):
                once_per_tick("broken", broken)

    asyncio.run(go())
    assert calls == [1, 1]


def test_a_run_checks_template_files_once_per_turn_not_per_call(tmp_path, monkeypatch):
    """Eight threads whose fake replies land together: their calls share each turn's template and price lookups."""
    lookups = {"template": 0, "price": 0}
    load_template, price_of = llm.load_template, llm.price_of

    def counted_template(*args):
        lookups["template"] += 1
        return load_template(*args)

    def counted_price(*args):
        lookups["price"] += 1
        return price_of(*args)

    monkeypatch.setattr(llm, "load_template", counted_template)
    monkeypatch.setattr(llm, "price_of", counted_price)
    real_sleep = asyncio.sleep

    async def on_the_grid(delay, result=None):
        # the fake model's latency ends on the next multiple of 50 ms, the same instant for every call in flight,
        # so the replies land in one loop turn however loaded the machine (a plain sleep lands them a few
        # microseconds apart, in one turn or several depending on the scheduler)
        if delay != 0.05:
            return await real_sleep(delay, result)
        loop = asyncio.get_running_loop()
        landed = loop.create_future()
        loop.call_at((math.floor(loop.time() / delay) + 1) * delay, landed.set_result, result)
        return await landed

    monkeypatch.setattr(asyncio, "sleep", on_the_grid)
    monkeypatch.setenv("SKILLWEAVE_FAKE_LATENCY", "0.05")
    db = str(tmp_path / "s.db")
    handle = skillweave.run("skillmix", db=db, k=[2], n=8, rounds=1, grading_samples=1, model="fake", judge="fake",
                            concurrency=8)
    assert handle.summary.done == 8
    import sqlite3

    with sqlite3.connect(db) as conn:
        calls = conn.execute("select count(*) from llm_calls where error is null").fetchone()[0]
    assert calls == 24
    assert lookups["price"] < calls / 2 and lookups["template"] < calls / 2, (lookups, calls)


def test_an_edited_template_is_seen_on_the_next_turn(tmp_path):
    from skillweave.prompts import load_template

    (tmp_path / "skillmix").mkdir()
    path = tmp_path / "skillmix" / "student.yaml"
    path.write_text("variables: [x]\nprompt: Say {{ x }}.\n")

    def look():
        return once_per_tick(("template", "skillmix/student", str(tmp_path)), load_template, "skillmix/student",
                             str(tmp_path))

    async def go():
        before = look().turns
        stat = path.stat()
        path.write_text("variables: [x]\nprompt: Shout {{ x }}.\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        same_turn = look().turns
        await asyncio.sleep(0)
        return before, same_turn, look().turns

    assert asyncio.run(go()) == (("Say {{ x }}.",), ("Say {{ x }}.",), ("Shout {{ x }}.",))
