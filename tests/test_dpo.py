"""DPO: loss formulas, summed response log-probs, training smoke test, displacement logging, CHES filter, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError

from skillweave.errors import ConfigError
from skillweave.trainers import dpo
from skillweave.trainers.ches import encode_pairs
from skillweave.trainers.data import PreferencePair, load_store_pairs, pair_from_payload
from skillweave.trainers.models import tiny_model_and_tokenizer
from skillweave.trainers.templates import template_words

WORDS = [*template_words(), *"a b c d e f g h i j k l".split()]


def tiny_folder_and_pairs(tmp_path, seed: int, n_pairs: int):
    """A tiny model saved as a plain folder, and a JSONL of n_pairs pairs; returns (model, folder, data path)."""
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=seed)
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p.to_dict()) for p in make_pairs(n_pairs)))
    return model, folder, data


def make_pairs(n: int = 20) -> list[PreferencePair]:
    letters = "abcdefghijkl"
    return [PreferencePair(f"{letters[i % 12]} {letters[(i + 3) % 12]}", " ".join(letters[(i + j) % 12] for j in range(1 + i % 3)),
                           " ".join(letters[(i + 5 + j) % 12] for j in range(1 + i % 4)), f"pair-{i}") for i in range(n)]


def test_dpo_loss_matches_formulas():
    c, r = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    h = (c - r) - (rc - rr)
    sig = lambda x: 1 / (1 + torch.exp(-x))  # noqa: E731
    assert dpo.dpo_loss(c, r, rc, rr, beta=0.1).item() == pytest.approx((-torch.log(sig(0.1 * h))).mean().item(), rel=1e-6)
    assert dpo.dpo_loss(c, r, rc, rr, beta=0.5, loss_type="ipo").item() == pytest.approx(((h - 1.0) ** 2).mean().item(), rel=1e-6)
    smooth = 0.8 * -torch.log(sig(0.1 * h)) + 0.2 * -torch.log(sig(-0.1 * h))
    assert dpo.dpo_loss(c, r, rc, rr, label_smoothing=0.2).item() == pytest.approx(smooth.mean().item(), rel=1e-6)
    with_sft = (-torch.log(sig(0.1 * h))).mean() + 0.5 * -c.mean()
    assert dpo.dpo_loss(c, r, rc, rr, c_sft=0.5).item() == pytest.approx(with_sft.item(), rel=1e-6)
    assert dpo.dpo_loss(c, r, c, r).item() == pytest.approx(math.log(2), rel=1e-6)  # policy = reference
    with pytest.raises(ConfigError, match="unknown loss type 'hinge'"):
        dpo.dpo_loss(c, r, rc, rr, loss_type="hinge")


def test_sequence_logps_sum_response_tokens_including_eos_and_ignore_padding():
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=2)
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(4))
    sequences = chosen + rejected
    batched = dpo.all_logps(model, sequences, tokenizer.pad_token_id, batch_size=8)
    for value, (ids, prompt_len) in zip(batched, sequences, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        manual = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(prompt_len, len(ids)))
        assert value.item() == pytest.approx(manual, abs=1e-4)


def test_train_dpo_logs_and_updates_every_parameter_with_rmsprop():
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(12))
    config = dpo.DPOConfig(lr=1e-3, batch_size=4, epochs=2, seed=0)
    result = dpo.train_dpo(model, tokenizer, chosen, rejected, config)
    assert result["steps"] == 6 and len(result["logs"]) == 6
    assert all(math.isfinite(entry["loss"]) for entry in result["logs"])
    assert result["logs"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # first step: policy = reference
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"} <= set(result["logs"][0])
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert sorted(changed) == sorted(n for n, _ in model.named_parameters())
    after, first = torch.tensor(result["after"]["logps_chosen"]), torch.tensor(result["before"]["logps_chosen"])
    assert result["delta_logp_chosen"] == pytest.approx((after - first).mean().item(), abs=1e-6)
    assert result["reward_accuracy_after"] > 0.5
    assert isinstance(dpo.make_optimizer("rmsprop", model.parameters(), 1e-3), torch.optim.RMSprop)
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        dpo.make_optimizer("lion", model.parameters(), 1e-3)


def test_micro_batches_accumulate_to_the_full_batch_update():
    trained = []
    for micro in (None, 4):  # 6 pairs per step split 4 + 2: the weighted micro-batch means must sum to the batch mean
        model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=4)
        chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(12))
        config = dpo.DPOConfig(lr=1e-2, batch_size=6, micro_batch_size=micro, epochs=1, optimizer="sgd", c_sft=0.5)
        result = dpo.train_dpo(model, tokenizer, chosen, rejected, config)
        trained.append((dict(model.named_parameters()), result))
    (whole, whole_result), (micro, micro_result) = trained
    assert whole_result["steps"] == micro_result["steps"] == 2
    assert [e["loss"] for e in micro_result["logs"]] == pytest.approx([e["loss"] for e in whole_result["logs"]], rel=1e-5)
    assert micro_result["logs"][1]["logps/chosen"] == pytest.approx(whole_result["logs"][1]["logps/chosen"], rel=1e-5)
    for name, param in whole.items():
        assert torch.allclose(micro[name], param, atol=1e-6), name
    assert not torch.allclose(whole["lm_head.weight"], tiny_model_and_tokenizer(WORDS, seed=4)[0].lm_head.weight)
    with pytest.raises(ValidationError, match="micro_batch_size"):  # checked when the settings are built
        dpo.DPOConfig(micro_batch_size=0)


def test_store_pairs_break_ties_with_a_fair_coin(tmp_path):
    from skillweave.store import Store

    picks = [pair_from_payload(f"item-{i}", {"prompt": "p", "responses": ["first", "second"], "preferred": "tie"})
             for i in range(40)]
    chosen = [p.chosen for p in picks]
    assert 10 < chosen.count("first") < 30  # the upstream bug always chose the second response
    assert chosen == [pair_from_payload(f"item-{i}", {"prompt": "p", "responses": ["first", "second"],
                                                      "preferred": "tie"}).chosen for i in range(40)]
    assert pair_from_payload("x", {"prompt": "p", "responses": ["a", "b"], "preferred": 1}).chosen == "b"
    store = Store(str(tmp_path / "s.db"))
    run_id = store.create_run("judge", {})
    store.ensure_item(run_id, "preference", 0, payload={"prompt": "q", "responses": ["good", "bad"], "preferred": 0})
    store.ensure_item(run_id, "preference", 1, payload={"prompt": "q"})  # incomplete: skipped
    pairs = load_store_pairs(store, run_id)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("q", "good", "bad")]


def test_cli_train_dpo_with_ches_keep_lowest(tmp_path, capsys):
    from skillweave.cli import main
    from skillweave.store import Store

    _, folder, data = tiny_folder_and_pairs(tmp_path, seed=4, n_pairs=40)
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("\n".join(json.dumps(p.to_dict()) for p in make_pairs(3)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ("a b", "c d")))
    db = tmp_path / "s.db"
    main(["--db", str(db), "train", "dpo", "--data", str(data), "--model", str(folder), "--ches-keep-lowest", "0.05",
          "--lr", "1e-4", "--output", str(tmp_path / "out"), "--eval-data", str(held_out), "--eval-prompts",
          str(prompts), "--eval-max-new-tokens", "3", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["eval"]["pairs"] == 3 and math.isfinite(summary["eval"]["delta_logp_chosen"])
    assert summary["refusal_rate_before"] in (0.0, 0.5, 1.0) and summary["refusal_rate_after"] in (0.0, 0.5, 1.0)
    assert summary["filter"]["ches_kept"] == 2 and summary["filter"]["ches_dropped"] == 38
    assert summary["filter"]["trained_pairs"] == 2 and summary["steps"] == 1
    assert (tmp_path / "out" / "config.json").exists()
    row = next(Store(str(db)).db["train_checkpoints"].rows)
    assert row["run_id"] == summary["run_id"] and row["method"] == "dpo" and row["train_template"] == "model"
    assert "delta_logp_chosen" in json.loads(row["metrics"])
    scores = list(Store(str(db)).db["ches_scores"].rows)
    assert len(scores) == 40 and {r["run_id"] for r in scores} == {summary["run_id"]}
    assert Store(str(db)).get_run(summary["run_id"])["status"] == "done"


def test_cli_train_dpo_with_lora_trains_adapters_against_the_base_and_saves_merged(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from skillweave.cli import main

    model, folder, data = tiny_folder_and_pairs(tmp_path, seed=5, n_pairs=8)
    main(["train", "dpo", "--data", str(data), "--model", str(folder), "--lora", "--lora-r", "4", "--lr", "1e-2",
          "--epochs", "3", "--batch-size", "4", "--output", str(tmp_path / "out"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6
    assert summary["logs"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # adapters start at zero: policy = base
    assert summary["reward_accuracy_after"] > 0.5
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # a plain folder: adapters merged, no peft needed
    assert not any("lora" in n for n, _ in saved.named_parameters())
    base = dict(model.named_parameters())
    changed = [n for n, p in saved.named_parameters() if not torch.equal(base[n], p)]
    assert changed and all(("proj" in n or "lm_head" in n) for n in changed)  # only adapted Linear weights moved
    assert torch.equal(base["model.embed_tokens.weight"], dict(saved.named_parameters())["model.embed_tokens.weight"])
