"""Re-judging: a new run that grades the student texts of an existing run again, without calling the student.

The new run has the source run's config with a new judge (and optionally judge template and number of grading
samples) and `rejudge_of` naming the source run. Its items are created before the plan runs, with the same
combination index and round as the source items (so the plan finds them by key), the source's student turns in
their payload and `parent_id` pointing at the source item. The Skill-Mix student node then finds both turns
already present and makes no call; items whose source has no text are failed with that reason.

Supported: Skill-Mix runs made by `skillweave run skillmix` (with stored catalogs).
"""

from __future__ import annotations

from skillweave.errors import UsageError

SUPPORTED = {"skillmix"}
_COPIED = ("skill_rows", "prompt_0", "output_0", "text_0", "prompt_1", "output_1", "text_1")


def rejudge_config(source: dict, *, judge: str, judge_template: str | None = None,
                   grading_samples: int | None = None, concurrency: int | None = None,
                   reply_cache: str | None = None):
    """The new run's typed settings: the source run's (loaded as resume loads them) with the new judge."""
    from skillweave.pipelines import get_pipeline

    if source["pipeline"] not in SUPPORTED:
        raise UsageError(f"rejudge supports {', '.join(sorted(SUPPORTED))} runs; run {source['id']} is a "
                         f"{source['pipeline']} run")
    config = get_pipeline(source["pipeline"]).load_config(source["config"])
    if not config.skills_catalog or not config.topics_catalog:
        raise UsageError(f"run {source['id']} has no stored catalogs (an imported run?); rejudge needs a run made "
                         "by `skillweave run skillmix`")
    changes = {"judge": judge, "rejudge_of": source["id"], "reply_cache": reply_cache,
               "judge_template": judge_template, "grading_samples": grading_samples, "concurrency": concurrency}
    return config.model_copy(update={k: v for k, v in changes.items() if v is not None or k == "reply_cache"})


def copy_items(store, source_id: str, new_id: str) -> tuple[int, int]:
    """Create the new run's items from the source's; returns (texts to judge, items without a text)."""
    copied = missing = 0
    for item in store.items(source_id):
        payload = {k: v for k, v in item["payload"].items() if k in _COPIED}
        has_text = "output_1" in payload and "text_1" in payload
        fields = dict(k=item["k"], skills=item["skills"], topic=item["topic"], payload=payload,
                      prompt_versions=item["prompt_versions"], parent_id=item["id"])
        if not has_text:
            fields.update(status="failed", error=f"rejudge: source item {item['id']} has no student text "
                                                 f"({item['status']}: {item.get('error') or 'not generated'})")
        store.ensure_item(new_id, item["kind"], item["combo_index"], item["round"], **fields)
        copied += has_text
        missing += not has_text
    return copied, missing
