"""LESS data selection: the gradient datastore index and selections with their provenance."""


def migrate(db):
    # One row per (pool, checkpoint, side, d) feature file set on disk; status 'partial' while chunks are written.
    db["less_datastores"].create(
        {
            "id": str, "pool": str, "pool_hash": str, "checkpoint": int, "kind": str, "dim": int, "seed": int,
            "model": str, "n_rows": int, "path": str, "status": str, "created_at": str, "updated_at": str,
        },
        pk="id",
    )
    # A selection is also a run (pipeline 'select-<method>') whose items are the selected rows, so it exports
    # like any dataset; this table keeps the method-level provenance.
    db["selections"].create(
        {
            "id": str, "method": str, "run_id": str, "source_run": str, "pool": str, "pool_hash": str,
            "n_pool": int, "n_selected": int, "fraction": float, "provenance": str, "created_at": str,
        },
        pk="id",
    )
    db["selection_rows"].create(
        {"selection_id": str, "rank": int, "row_index": int, "item_id": str, "score": float},
        pk=("selection_id", "rank"),
        foreign_keys=[("selection_id", "selections", "id")],
    )
    db["less_datastores"].create_index(["pool_hash", "checkpoint", "kind", "dim"])
    db["selection_rows"].create_index(["item_id"])
