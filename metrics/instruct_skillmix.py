"""Instruct-SkillMix run report: how many points were kept, failed (and why), rejected as near-duplicates,
replaced by shirkers; query-type balance; mean instruction and response length in words
(docs/methods.md#instruct-skillmix-records)."""

from __future__ import annotations

from collections import Counter

KIND = "instruct_skillmix.example"


def _words(text: str | None) -> int:
    return len((text or "").split())


def _settings(run: dict):
    from skillweave.pipelines.instruct_skillmix import PIPELINE

    return PIPELINE.load_config(run["config"])


def run_report(store, run: dict, **_options) -> dict:
    items = list(store.items(run["id"], kind=KIND))
    status = Counter(i["status"] for i in items)
    done = [i for i in items if i["status"] == "done"]
    shirkers = [i for i in done if i["payload"].get("shirker")]
    types = Counter(i["payload"].get("query_str") for i in done)
    retries = sum(len(i["payload"].get("dropped_outputs", [])) for i in items)
    failures = Counter((i.get("error") or "").split(":")[0] for i in items if i["status"] == "failed")
    honest = [i for i in done if not i["payload"].get("shirker")]
    summary = {
        "planned": len(items),
        "kept": len(done),
        "failed": status.get("failed", 0),
        "rejected_duplicates": status.get("rejected", 0),
        "pending": status.get("pending", 0),
        "shirkers": len(shirkers),
        "shirker_fraction_planned": (sum(bool(i["payload"].get("shirker_planned")) for i in items) / len(items)
                                     if items else 0.0),
        "shirker_fraction_kept": len(shirkers) / len(done) if done else 0.0,
        "parse_retries": retries,
        "query_types_used": len(types),
        "per_type_min": min(types.values()) if types else 0,
        "per_type_max": max(types.values()) if types else 0,
        "mean_instruction_words": round(sum(_words(i["payload"].get("instruction")) for i in done) / len(done), 1)
        if done else 0.0,
        "mean_output_words": round(sum(_words(i["payload"].get("output")) for i in honest) / len(honest), 1)
        if honest else 0.0,
    }
    return {
        "run_id": run["id"], "pipeline": run["pipeline"], "set": _settings(run).set,
        "columns": ["metric", "value"], "table": [{"metric": k, "value": v} for k, v in summary.items()],
        "summary": summary, "per_query_type": dict(sorted(types.items())), "failure_stages": dict(failures),
    }
