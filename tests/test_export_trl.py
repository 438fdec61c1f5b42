"""TRL's SFTTrainer accepts the prompt/completion export (a tiny random-init model, three steps).

Its own file because importing TRL dominates: 16 s at moderate load on the shared 2-core machine, up to ~110 s
when every core is busy.
"""

from __future__ import annotations

from test_export import make_instruct_run

from skillweave.export import ExportFilters, export_runs


def test_trl_sft_trainer_accepts_prompt_completion_export(store, tmp_path):
    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from skillweave.trainers.models import tiny_model_and_tokenizer

    run_id = make_instruct_run(store)
    path = tmp_path / "pc.jsonl"
    export_runs(store, [run_id], path, shape="prompt-completion", filters=ExportFilters(exclude_shirkers=True))
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert len(dataset) == 8 and {"prompt", "completion", "item_id"} <= set(dataset.column_names)
    words = sorted({w for row in dataset for w in (row["prompt"] + " " + row["completion"]).split()})
    model, tokenizer = tiny_model_and_tokenizer(words, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                       learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                       max_length=128, bf16=False, fp16=False, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(changed) == len(before)  # every trainable parameter moved
