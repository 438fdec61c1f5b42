"""The store's write path on the hot loop: payload updates set keys in place without a read (json_set)."""

import pytest

from skillweave.errors import NotFound
from skillweave.store import Store


@pytest.fixture()
def item(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    run_id = store.create_run("demo", {})
    item_id = store.ensure_item(run_id, "text", 0, payload={"keep": 1, "nested": {"a": 1, "b": 2}})
    return store, item_id


def test_payload_update_merges_shallowly_and_keeps_nulls(item):
    store, item_id = item
    store.update_item(item_id, status="done", payload_update={"nested": {"c": 3}, "gone": None, "text": "é \"q\""})
    got = store.get_item(item_id)
    assert got["status"] == "done"
    # a nested dict replaces the old one (a shallow merge, like {**old, **update}); None is stored as null
    assert got["payload"] == {"keep": 1, "nested": {"c": 3}, "gone": None, "text": "é \"q\""}


def test_odd_keys_and_values_round_trip(item):
    store, item_id = item
    odd = {"a.b": [1, 2], "it's": {"x": [None, 1.5]}, "$[0]": True, 'with "quote"': "v", "n": 0}
    store.update_item(item_id, payload_update=odd, skills=["s1", "s2"])
    got = store.get_item(item_id)
    assert got["payload"] == {"keep": 1, "nested": {"a": 1, "b": 2}, **odd}
    assert got["skills"] == ["s1", "s2"]


def test_prompt_versions_still_accumulate(item):
    store, item_id = item
    store.update_item(item_id, prompt_versions=["v1"], payload_update={"x": 1})
    store.update_item(item_id, prompt_versions=["v2", "v1"], payload_update={"y": 2})
    got = store.get_item(item_id)
    assert got["prompt_versions"] == ["v1", "v2"] and got["payload"]["x"] == 1 and got["payload"]["y"] == 2


def test_a_missing_item_is_not_found_and_nothing_is_written(item):
    store, item_id = item
    with pytest.raises(NotFound):
        store.update_item("nope", payload_update={"x": 1})
    assert store.get_item(item_id)["payload"] == {"keep": 1, "nested": {"a": 1, "b": 2}}


def test_one_prompt_version_is_appended_once_in_order(item):
    store, item_id = item
    for version in ["b3:one", "b3:two", "b3:one", "b3:two", "b3:three"]:
        store.update_item(item_id, prompt_versions=[version], status="running")
    store.update_item(item_id, prompt_versions=["b3:four", "b3:one"])  # several at once: the general path
    assert store.get_item(item_id)["prompt_versions"] == ["b3:one", "b3:two", "b3:three", "b3:four"]
