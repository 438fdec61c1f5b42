"""The `train_checkpoints` table (migration m0070): one row per checkpoint a trainer saved, written here only.

A row names the run, the method (`sft`, `dpo`), where the weights went, the base model, the step, and the PTST
train/eval templates by name and content hash, so a result can be audited against the templates it used.
"""

from __future__ import annotations

from typing import Any

from skillweave.store import jdump, now


def record_checkpoint(store: Any, checkpoint_id: str, run_id: str, *, method: str, path: str | None,
                      base_model: str, step: int, train_template: Any, eval_template: Any = None,
                      metrics: dict) -> None:
    """Store one saved checkpoint; the templates are PTST templates (`name`, `version`), `eval_template` optional."""
    with store.lock:
        store.db["train_checkpoints"].insert({
            "id": checkpoint_id, "run_id": run_id, "method": method, "path": path, "base_model": base_model,
            "step": step, "train_template": train_template.name, "train_template_version": train_template.version,
            "eval_template": eval_template.name if eval_template is not None else None,
            "eval_template_version": eval_template.version if eval_template is not None else None,
            "metrics": jdump(metrics), "created_at": now()})
