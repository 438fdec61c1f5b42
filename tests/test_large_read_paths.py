"""Large runs: the fake provider a run builds keeps nothing per call, the chunked JSON decoding of
`items_with_grades` fails on a broken text as before, and export and report leave the garbage collector on."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from skillweave.providers.core import ChatRequest, FakeProvider, get_provider
from skillweave.store import Store
from skillweave.store.reads import gc_paused, items_with_grades


def _chat(provider) -> None:
    asyncio.run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "hello"}])))


def test_a_spec_built_fake_provider_keeps_no_request_but_a_test_fake_does():
    built = get_provider("fake")
    for _ in range(3):
        _chat(built)
    assert built.calls is None  # a `--model fake` run of 10^5 items held every request before
    scripted = FakeProvider("default")
    _chat(scripted)
    assert len(scripted.calls) == 1 and scripted.calls[0].messages[0]["content"] == "hello"


def _store_with(tmp_path, payloads: list[str]) -> tuple[Store, str]:
    store = Store(str(tmp_path / "s.db"))
    run_id = store.create_run("skillmix", {"k": [2], "n": len(payloads)}, run_id="r")
    for i, text in enumerate(payloads):
        item = store.ensure_item(run_id, "skillmix.text", i, 0, k=2, skills=["a", "b"], status="done",
                                 payload={"text_1": "x"})
        store.db.conn.execute("UPDATE items SET payload = ? WHERE id = ?", [text, item])
    store.db.conn.commit()
    return store, run_id


@pytest.mark.parametrize("broken", ["not json", "1, 2", "[1", "{\"a\": 1} x"])
def test_a_payload_that_is_not_json_fails_as_it_did_item_by_item(tmp_path, broken):
    store, run_id = _store_with(tmp_path, ['{"a": 1}', broken, '{"b": [2]}'])
    with pytest.raises(json.JSONDecodeError):
        list(items_with_grades(store, run_id))


def test_empty_and_null_payloads_decode_to_fresh_defaults(tmp_path):
    store, run_id = _store_with(tmp_path, ["", '{"a": "\\u00e9"}', "", "[1]"])
    store.db.conn.execute("UPDATE items SET payload = NULL, prompt_versions = NULL WHERE combo_index = 2")
    store.db.conn.commit()
    items = list(items_with_grades(store, run_id, grades="points"))
    assert [i["payload"] for i in items] == [{}, {"a": "é"}, {}, [1]]
    assert items[0]["payload"] is not items[2]["payload"]
    assert [i["grade_points"] for i in items] == [[], [], [], []]
    assert [{k: v for k, v in i.items() if k != "grade_points"} for i in items] == \
        [{k: v for k, v in i.items() if k != "grades"} for i in items_with_grades(store, run_id)]


def test_gc_is_on_again_after_a_failed_export_and_after_a_report(tmp_path, cli_run):
    store, run_id = _store_with(tmp_path, ['{"prompt_0": "p"}'])  # no text_1: nothing to export
    store.close()
    assert gc.isenabled()
    code, _, err = cli_run("export", run_id, "--out", str(tmp_path / "o.jsonl"), db=str(tmp_path / "s.db"))
    assert code == 2 and "no rows to export" in err and gc.isenabled()
    code, _, _ = cli_run("report", run_id, "--json", db=str(tmp_path / "s.db"))
    assert code == 0 and gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
