"""SFT: export-shape loaders, response-only labels, Trainer smoke tests (full and LoRA), CLI with templates stored."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skillweave.errors import UsageError
from skillweave.trainers import sft
from skillweave.trainers.data import load_sft_examples, sft_example
from skillweave.trainers.models import tiny_model_and_tokenizer
from skillweave.trainers.templates import get_template, template_words

WORDS = [*template_words(), *"a b c d e f g h sorry no".split()]
ROWS = [
    {"prompt": "a b c", "completion": "d e f", "item_id": "row-1"},
    {"instruction": "a", "input": "b", "output": "c c"},
    {"messages": [{"role": "system", "content": "ignored"}, {"role": "user", "content": "h g"},
                  {"role": "assistant", "content": "a"}]},
]


def test_loaders_accept_every_export_shape(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    examples = load_sft_examples(path)
    assert [(e.instruction, e.input, e.response) for e in examples] == [
        ("a b c", "", "d e f"), ("a", "b", "c c"), ("h g", "", "a")]
    assert examples[0].item_id == "row-1" and examples[1].item_id and examples[1].item_id != examples[2].item_id
    alpaca_json = tmp_path / "alpaca.json"
    alpaca_json.write_text(json.dumps([ROWS[1], ROWS[1]]))
    assert len(load_sft_examples(alpaca_json)) == 2
    with pytest.raises(UsageError, match="unrecognised SFT row with keys \\['text'\\]"):
        sft_example({"text": "no boundary"})
    with pytest.raises(UsageError, match="must end with an assistant message"):
        sft_example({"messages": [{"role": "user", "content": "x"}]})


def test_labels_cover_the_response_and_eos_only():
    _, tokenizer = tiny_model_and_tokenizer(WORDS)
    examples = [sft_example(r) for r in ROWS]
    template = get_template("chat:vanilla")
    features, dropped = sft.encode_sft(tokenizer, examples, template, max_length=1024)
    assert dropped == 0
    first = features[0]
    prompt_ids = tokenizer(template.render_prompt("a b c"))["input_ids"]
    assert first["input_ids"][:len(prompt_ids)] == prompt_ids
    assert first["labels"][:len(prompt_ids)] == [-100] * len(prompt_ids)
    assert tokenizer.decode(first["labels"][len(prompt_ids):]) == "d e f </s>"
    _, dropped = sft.encode_sft(tokenizer, examples, template, max_length=len(prompt_ids))
    assert dropped >= 1  # a response truncated away is counted, not silently trained on


def test_full_finetune_logs_loss_and_changes_every_parameter(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = [sft_example(r) for r in ROWS] * 4
    result = sft.train_sft(model, tokenizer, examples, sft.SFTConfig(lr=1e-3, max_steps=3, batch_size=4))
    assert result["steps"] == 3 and len(result["losses"]) == 3 and all(math.isfinite(x) for x in result["losses"])
    changed = {n for n, p in result["model"].named_parameters() if not torch.equal(before[n], p)}
    assert changed == set(before)


def test_lora_trains_only_adapters_and_saves_a_plain_merged_folder(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=6)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = sft.SFTConfig(lr=1e-2, max_steps=2, batch_size=4, lora=True, lora_targets="q_proj,v_proj")
    result = sft.train_sft(model, tokenizer, [sft_example(r) for r in ROWS] * 4, config)
    trainable = {n for n, p in result["model"].named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    saved = sft.save_checkpoint(result["model"], tokenizer, str(tmp_path / "ckpt"), config,
                                get_template("chat:vanilla"), get_template("chat:llama"))
    assert not any("lora" in n for n, _ in saved.named_parameters())
    assert not torch.equal(saved.model.layers[0].self_attn.q_proj.weight, base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(saved.model.layers[0].mlp.up_proj.weight, base["model.layers.0.mlp.up_proj.weight"])
    assert (tmp_path / "ckpt" / "config.json").exists() and not (tmp_path / "ckpt" / "adapter_config.json").exists()


def test_cli_train_sft_records_templates_with_the_checkpoint(tmp_path, capsys):
    from skillweave.cli import main
    from skillweave.store import Store

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=7)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS * 3))
    db, out = tmp_path / "s.db", tmp_path / "ckpt"
    main(["--db", str(db), "train", "sft", "--data", str(data), "--model", str(tmp_path / "tiny"), "--output", str(out),
          "--train-template", "text:alpaca", "--eval-template", "chat:llama-short", "--max-steps", "2", "--lr", "1e-3",
          "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    saved = json.loads((out / "skillweave_training.json").read_text())
    assert saved["templates"]["train"] == get_template("text:alpaca").record()
    assert saved["templates"]["eval"] == get_template("chat:llama-short").record()
    row = next(Store(str(db)).db["train_checkpoints"].rows)
    assert (row["train_template"], row["eval_template"]) == ("text:alpaca", "chat:llama-short")
    assert row["train_template_version"] == get_template("text:alpaca").version
