"""Provider batch jobs (`--batch`): each submitted batch and the calls in it, so a killed process polls the same
batch again on resume instead of submitting (and paying for) its requests twice."""


def migrate(db):
    db["batch_jobs"].create(
        {"id": str, "run_id": str, "provider": str, "model": str, "base_url": str, "status": str,
         "input_file_id": str, "output_file_id": str, "error_file_id": str, "requests": int, "error": str,
         "created_at": str, "updated_at": str},
        pk="id",
    )
    db["batch_requests"].create({"batch_id": str, "call_key": str, "run_id": str, "delivered": int},
                                pk=("batch_id", "call_key"))
    db["batch_requests"].create_index(["call_key"])
