"""Trainer tables: checkpoints with their PTST templates, evaluations, and CHES scores per pair and model."""


def migrate(db):
    # One row per saved checkpoint; the template names and content hashes are what PTST needs to audit a result.
    db["train_checkpoints"].create(
        {
            "id": str, "run_id": str, "method": str, "path": str, "base_model": str, "step": int,
            "train_template": str, "train_template_version": str, "eval_template": str,
            "eval_template_version": str, "metrics": str, "created_at": str,
        },
        pk="id",
    )
    # One row per evaluation (a checkpoint or model on a prompt set with one template and one judge).
    db["evaluations"].create(
        {
            "id": str, "run_id": str, "checkpoint_id": str, "model": str, "template": str,
            "template_version": str, "judge": str, "n": int, "metrics": str, "records": str, "created_at": str,
        },
        pk="id",
    )
    # One row per (preference pair, model): CHES, length-normalized CHES and the two baselines.
    db["ches_scores"].create(
        {
            "id": str, "pair_id": str, "model": str, "model_path": str, "source": str, "run_id": str,
            "ches": float, "ches_norm": float, "neg_ned": float, "last_inner": float, "len_chosen": int,
            "len_rejected": int, "created_at": str,
        },
        pk="id",
    )
    db["train_checkpoints"].create_index(["run_id"])
    db["evaluations"].create_index(["run_id"])
    db["ches_scores"].create_index(["pair_id"])
