"""Topic model versions, the documents each was trained on, unlearning requests and their forget sets."""


def migrate(db):
    # One row per model version; `state` holds the private model plus stored statistics (npz), `released`
    # the published (noised) parameters. An unlearned model points at its parent and the request.
    db["topic_models"].create(
        {
            "id": str, "parent_id": str, "request_id": str, "name": str, "version": int, "kind": str,
            "config": str, "vocab": str, "n_docs": int, "n_words": int, "n_topics": int, "anchors": str,
            "metrics": str, "source": str, "state": bytes, "released": bytes, "created_at": str,
        },
        pk="id",
    )
    # The exact word counts each model version was trained on, so a later deletion subtracts precisely
    # what was added (even if the item is edited or deleted afterwards).
    db["topic_model_docs"].create(
        {"model_id": str, "item_id": str, "counts": str, "content_hash": str},
        pk=("model_id", "item_id"),
    )
    db["unlearning_requests"].create(
        {
            "id": str, "model_id": str, "new_model_id": str, "selectors": str, "mode": str, "epsilon": float,
            "delta": float, "sensitivity": float, "sigma": float, "noiseless": int, "n_forget": int,
            "n_forget_in_model": int, "stats": str, "status": str, "created_at": str,
        },
        pk="id",
    )
    db["forget_sets"].create(
        {"request_id": str, "item_id": str, "matched_by": str, "in_model": int},
        pk=("request_id", "item_id"),
    )
    db["topic_model_docs"].create_index(["item_id"])
    db["topic_models"].create_index(["name", "version"])
    db["forget_sets"].create_index(["item_id"])
