"""Core tables: runs, prompt versions, catalogs, items, model calls, grades, reviews, events."""


def migrate(db):
    db["runs"].create(
        {
            "id": str, "pipeline": str, "config": str, "version": str, "status": str, "command": str,
            "error": str, "created_at": str, "updated_at": str, "finished_at": str,
        },
        pk="id",
    )
    db["prompt_versions"].create(
        {"id": str, "name": str, "text": str, "source": str, "created_at": str}, pk="id"
    )
    # A catalog is a content-addressed snapshot of skills, topics, query types or concepts.
    db["catalogs"].create(
        {"id": str, "name": str, "kind": str, "source": str, "meta": str, "created_at": str}, pk="id"
    )
    db["catalog_entries"].create(
        {
            "id": str, "catalog_id": str, "position": int, "name": str, "category": str,
            "definition": str, "example": str, "status": str, "parent": str, "extra": str,
        },
        pk="id",
        foreign_keys=[("catalog_id", "catalogs", "id")],
    )
    db["exemplars"].create(
        {
            "id": str, "catalog_id": str, "skill": str, "question": str, "answer": str, "extra": str,
            "source_item_id": str,
        },
        pk="id",
        foreign_keys=[("catalog_id", "catalogs", "id")],
    )
    db["run_catalogs"].create(
        {"run_id": str, "catalog_id": str, "role": str}, pk=("run_id", "catalog_id", "role")
    )
    # One row per generated artefact; the id is a hash of (run, kind, combination index, round).
    db["items"].create(
        {
            "id": str, "run_id": str, "kind": str, "combo_index": int, "round": int, "status": str,
            "k": int, "skills": str, "topic": str, "payload": str, "prompt_versions": str, "error": str,
            "parent_id": str, "created_at": str, "updated_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["llm_calls"].create(
        {
            "id": str, "call_key": str, "run_id": str, "item_id": str, "role": str, "provider": str,
            "model": str, "prompt_version": str, "request": str, "response": str, "input_tokens": int,
            "output_tokens": int, "latency_ms": float, "attempts": int, "error": str, "created_at": str,
        },
        pk="id",
    )
    db["grades"].create(
        {
            "id": str, "item_id": str, "run_id": str, "call_id": str, "judge": str, "sample_index": int,
            "raw": str, "points": str, "score": float, "parse_status": str, "created_at": str,
        },
        pk="id",
    )
    db["reviews"].create(
        {
            "id": str, "item_id": str, "run_id": str, "reviewer": str, "decision": str, "reason": str,
            "changes": str, "created_at": str,
        },
        pk="id",
    )
    # Every state transition of an item, with its reason (why a question was dropped, and where).
    db["events"].create(
        {"id": int, "run_id": str, "item_id": str, "stage": str, "status": str, "reason": str, "created_at": str},
        pk="id",
    )
    db["items"].create_index(["run_id", "status"])
    db["llm_calls"].create_index(["call_key"])
    db["llm_calls"].create_index(["item_id"])
    db["llm_calls"].create_index(["run_id"])
    db["grades"].create_index(["item_id"])
    db["reviews"].create_index(["item_id"])
    db["events"].create_index(["item_id"])
    db["catalog_entries"].create_index(["catalog_id", "position"])
    db["exemplars"].create_index(["catalog_id", "skill"])
