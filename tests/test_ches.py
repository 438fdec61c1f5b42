"""CHES: formula (C1), batching = per-example loop, EOS convention, post-norm states, UFM theorem (C2), CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skillweave.trainers import ches
from skillweave.trainers.data import PreferencePair
from skillweave.trainers.models import tiny_model_and_tokenizer
from skillweave.trainers.templates import template_words

WORDS = [*template_words(), *"a b c d e f g h i j k l".split()]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(WORDS, seed=1)


def toy_pairs() -> list[PreferencePair]:
    return [
        PreferencePair("a b c", "d e f", "d e g h", "p0"),
        PreferencePair("a", "b", "c c c c c", "p1"),
        PreferencePair("h g f e d", "a b c d e f g", "a", "p2"),
        PreferencePair("i j", "k", "l", "p3"),
        PreferencePair("k", "same words", "same words", "p4"),  # identical after tokenization: dropped
    ]


def test_ches_formula_matches_manual_values_and_is_zero_for_identical_responses():
    gen = torch.Generator().manual_seed(0)
    s_plus, s_minus = torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.randn(5, 7, generator=gen,
                                                                                         dtype=torch.float64)
    n_plus, n_minus = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([5, 3, 1, 2, 9])
    value, normalized = ches.ches_from_sums(s_plus, s_minus, n_plus, n_minus)
    for i in range(5):
        a, b = s_plus[i].numpy(), s_minus[i].numpy()
        assert value[i].item() == pytest.approx(float(a @ b - a @ a), rel=1e-12)
        manual = float((a / n_plus[i].item()) @ (b / n_minus[i].item()) - (a / n_plus[i].item()) @ (a / n_plus[i].item()))
        assert normalized[i].item() == pytest.approx(manual, rel=1e-12)
    same_value, same_norm = ches.ches_from_sums(s_plus, s_plus.clone(), n_plus, n_plus.clone())
    assert torch.allclose(same_value, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(same_norm, torch.zeros(5, dtype=torch.float64), atol=1e-12)


def test_batched_padded_states_equal_per_example_loop(tiny):
    model, tokenizer = tiny
    chosen, rejected, kept = ches.encode_pairs(tokenizer, toy_pairs())
    assert kept == [0, 1, 2, 3]  # the pair with identical responses is dropped, not scored as 0
    sequences = chosen + rejected
    batched, lengths, _ = ches.hidden_sums(model, sequences, batch_size=3, pad_id=tokenizer.pad_token_id)
    looped, loop_lengths = ches.hidden_sums_loop(model, sequences)
    assert torch.equal(lengths, loop_lengths)
    assert (batched - looped).norm() / looped.norm() < 1e-5
    assert torch.allclose(batched, looped, atol=1e-4)


def test_eos_convention_pinned(tiny):
    """|y| counts the response tokens plus the terminating EOS; S(y) sums states at [P-1 .. L-2]."""
    model, tokenizer = tiny
    chosen, _, _ = ches.encode_pairs(tokenizer, [PreferencePair("a b", "c d e", "f", "x")])
    ids, prompt_len = chosen[0]
    assert ids[-1] == tokenizer.eos_token_id
    assert len(ids) - prompt_len == 3 + 1
    sums, lengths, last = ches.hidden_sums(model, chosen, batch_size=1)
    assert lengths.tolist() == [4]
    with torch.no_grad():
        states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    assert torch.allclose(sums[0], states[prompt_len - 1: len(ids) - 1].sum(0), atol=1e-5)
    assert not torch.allclose(sums[0], states[prompt_len: len(ids)].sum(0), atol=1e-3)  # off-by-one would differ
    assert torch.allclose(last[0], states[len(ids) - 2], atol=1e-5)  # the state that predicts EOS


def test_states_are_after_final_norm_and_feed_the_unembedding(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer("a b c d", add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        states = ches._final_states(model, ids, mask)
        out = model(input_ids=ids, output_hidden_states=True)
    assert torch.allclose(states, out.hidden_states[-1], atol=1e-5)
    assert torch.allclose(model.lm_head(states), out.logits, atol=1e-4)


def test_score_pairs_records_and_keep_lowest(tiny):
    model, tokenizer = tiny
    records = ches.score_pairs(model, tokenizer, toy_pairs(), batch_size=2)
    assert [r["item_id"] for r in records] == ["p0", "p1", "p2", "p3"]
    assert all(r["neg_ned"] <= 0 for r in records)
    # k vs l: one substitution in one response token; the appended EOS is not part of the response
    assert records[3]["neg_ned"] == pytest.approx(-1.0)
    kept = ches.keep_lowest(records, 0.5)
    assert [r["ches_norm"] for r in kept] == sorted(r["ches_norm"] for r in records)[:2]
    synthetic = [{"ches_norm": float(i % 7), "index": i} for i in range(382)]
    assert len(ches.keep_lowest(synthetic, 0.05)) == 19  # 5% of 382 SORRY-Bench train pairs, as in the reference
    assert len(ches.keep_lowest(synthetic[:3], 0.05)) == 1
    with pytest.raises(Exception, match="keep-lowest fraction 1.5"):
        ches.keep_lowest(records, 1.5)


def test_ufm_single_token_theorem_c2():
    """Unconstrained features: one small DPO step moves ln pi(z), z not in {y+, y-}, affinely in <W_z, W+ - W->."""
    torch.manual_seed(0)
    vocab, dim, plus, minus = 40, 16, 3, 7
    h = torch.randn(dim, dtype=torch.float64, requires_grad=True)
    W = torch.randn(vocab, dim, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        ref = torch.log_softmax(W @ h, -1)
    logp = torch.log_softmax(W @ h, -1)
    margin = (logp[plus] - ref[plus]) - (logp[minus] - ref[minus])
    loss = -torch.nn.functional.logsigmoid(0.1 * margin)
    loss.backward()
    with torch.no_grad():
        new = torch.log_softmax((W - 1e-3 * W.grad) @ (h - 1e-3 * h.grad), -1)
        others = [z for z in range(vocab) if z not in (plus, minus)]
        delta = (new - ref)[others].numpy()
        alignment = (W[others] @ (W[plus] - W[minus])).numpy()
    assert np.corrcoef(delta, alignment)[0, 1] > 0.999


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from skillweave.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _save_tiny(tmp_path, tiny):
    model, tokenizer = tiny
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_ches_score_stores_scores_and_writes_lowest(tmp_path, tiny, capsys):
    folder = _save_tiny(tmp_path, tiny)
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({**p.to_dict(), "extra": i}) for i, p in enumerate(toy_pairs())))
    db, out = tmp_path / "s.db", tmp_path / "kept.jsonl"
    code, stdout, stderr = run_cli(["--db", str(db), "ches", "score", "--data", str(data), "--model", str(folder),
                                    "--keep-lowest", "0.5", "--output", str(out), "--json"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["pairs"], summary["scored"], summary["dropped"], summary["kept"]) == (5, 4, 1, 2)
    from skillweave.store import Store

    rows = list(Store(str(db)).db["ches_scores"].rows)
    assert sorted(r["pair_id"] for r in rows) == ["p0", "p1", "p2", "p3"]
    assert {r["model_path"] for r in rows} == {str(folder)}
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    lowest = sorted(summary["scores"], key=lambda r: r["ches_norm"])[:2]
    assert [k["item_id"] for k in kept] == [r["item_id"] for r in lowest]
    assert all("extra" in k for k in kept)  # the original row is kept whole


def test_cli_ches_bad_fraction_is_one_line_usage_error(tmp_path, tiny, capsys):
    folder = _save_tiny(tmp_path, tiny)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(toy_pairs()[0].to_dict()))
    code, _, stderr = run_cli(["--db", str(tmp_path / "s.db"), "ches", "score", "--data", str(data), "--model",
                               str(folder), "--keep-lowest", "1.5"], capsys)
    assert code == 2
    assert stderr.strip().count("\n") == 0 and "1.5" in stderr and "Traceback" not in stderr


def test_cli_ches_score_reads_store_pairs(tmp_path, tiny, capsys):
    from skillweave.store import Store

    folder = _save_tiny(tmp_path, tiny)
    db = tmp_path / "s.db"
    store = Store(str(db))
    run_id = store.create_run("judge-pairs", {})
    for i, (a, b, preferred) in enumerate([("a b", "c", 1), ("d e f", "g", 0), ("h", "h", "tie")]):
        store.ensure_item(run_id, "preference", i, payload={"prompt": "i j", "responses": [a, b], "preferred": preferred})
    store.close()
    code, stdout, stderr = run_cli(["--db", str(db), "ches", "score", "--store-run", run_id, "--model", str(folder),
                                    "--json"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["pairs"], summary["scored"], summary["dropped"]) == (3, 2, 1)  # the identical pair is dropped
    first = Store(str(db)).get_item(Store.item_id(run_id, "preference", 0))
    assert summary["scores"][0]["item_id"] == first["id"]


def test_every_trainer_command_has_help_and_json(capsys):
    for args in (["train", "sft"], ["train", "dpo"], ["train", "templates"], ["ches", "score"]):
        code, stdout, _ = run_cli([*args, "--help"], capsys)
        assert code == 0
        lines = [line for line in stdout.splitlines() if line.strip()]
        assert len(lines[1]) > 20 and "--json" in stdout, args
    code, stdout, _ = run_cli(["train", "templates", "--json"], capsys)
    assert code == 0 and [t["name"] for t in json.loads(stdout)][:2] == ["text:vanilla", "text:alpaca"]
