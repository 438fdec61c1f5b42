"""LESS building blocks: per-example gradients (L1), the Adam feature (L2), the projector (L3), scoring, datastore."""

from __future__ import annotations

import math
import random

import pytest
import torch

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers import less_features as lf
from skillweave.trainers.less import (
    LessConfig,
    build_features,
    checkpoint_weights,
    less_scores,
    subtask_count,
    top_fraction,
)

WORDS = [str(i) for i in range(10)] + list("abcdefghij") + ["+", "="]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, get_peft_model

    from skillweave.trainers.models import tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=1)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["q_proj", "v_proj", "o_proj"]))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # LoRA B starts at zero; give it values so every gradient is non-trivial
            torch.nn.init.normal_(p, std=0.2)
    model.eval()
    return model, tokenizer


def _examples(tokenizer, n: int, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
        completion = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        rows.append(lf.encode_example(tokenizer, lf.to_messages({"prompt": prompt, "completion": completion}), 64))
    return rows


def test_labels_mask_everything_but_the_assistant_turns(lora_model):
    _, tokenizer = lora_model
    messages = [{"role": "system", "content": "a b"}, {"role": "user", "content": "1 2"},
                {"role": "assistant", "content": "c d"}, {"role": "user", "content": "3"},
                {"role": "assistant", "content": "e"}]
    enc = lf.encode_example(tokenizer, messages, 64)
    learned = [tokenizer.convert_ids_to_tokens(t) for t in enc["labels"] if t != lf.IGNORE]
    assert learned == ["c", "d", "</s>", "e", "</s>"]  # role tags, system and user spans are masked
    with pytest.raises(UsageError, match="max_length"):
        lf.encode_example(tokenizer, messages[:3], 4)


def test_batched_gradients_equal_the_one_example_loop(lora_model):
    """L1: 16 variable-length right-padded examples; relative error < 1e-5 per example."""
    model, tokenizer = lora_model
    examples = _examples(tokenizer, 16)
    assert len({len(e["input_ids"]) for e in examples}) > 5
    loop = lf.loop_gradients(model, examples)
    batched = lf.batched_gradients(model, examples, tokenizer.pad_token_id)
    assert loop.shape == batched.shape == (16, sum(p.numel() for _, p in lf.trainable_parameters(model)))
    rel = (batched - loop).norm(dim=1) / loop.norm(dim=1)
    assert rel.max() < 1e-5
    # Per-example, not a batch mean: rows differ and none is zero.
    assert (loop.norm(dim=1) > 0).all() and (loop[0] - loop[1]).norm() > 1e-3


def test_hooks_registered_once_serve_many_batches_and_come_off(lora_model):
    model, tokenizer = lora_model
    examples = _examples(tokenizer, 12, seed=3)
    loop = lf.loop_gradients(model, examples)
    with lf.BatchedGradients(model) as grads:
        parts = [grads(examples[i : i + 5], tokenizer.pad_token_id) for i in range(0, 12, 5)]
        assert all(not c.inputs and not c.outputs for c in grads.captures)  # nothing kept between batches
    assert ((torch.cat(parts) - loop).norm(dim=1) / loop.norm(dim=1)).max() < 1e-5
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed on exit


def test_length_batches_respect_the_example_and_token_limits():
    lengths = [5, 40, 3, 12, 12, 100, 7, 8]
    batches = lf.length_batches(lengths, max_examples=3, max_tokens=30)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 30
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)  # shortest first
    assert [5] in batches  # the 100-token example longer than the budget gets a batch of its own


def test_loss_is_the_token_mean_over_response_tokens():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 1, 2, 3], [-100, 4, -100, -100, -100]])
    losses = lf.per_example_loss(logits, labels)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(losses[0], ce(logits[0, 1:4], labels[0, 2:5]))
    assert torch.allclose(losses[1], ce(logits[1, 0:1], labels[1, 1:2]))


def test_only_lora_parameters_may_require_grad(lora_model):
    model, _ = lora_model
    embed = model.get_input_embeddings().weight
    embed.requires_grad_(True)
    try:
        with pytest.raises(ConfigError, match="only LoRA"):
            lf.trainable_parameters(model)
    finally:
        embed.requires_grad_(False)


def test_adam_feature_matches_manual_formula_and_torch_step():
    """L2: moments from real AdamW steps; both variants match hand formulas; paper = torch's next update."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(50))
    opt = torch.optim.AdamW([param], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    for _ in range(3):
        opt.zero_grad()
        (param**3).sum().backward()
        opt.step()
    state = opt.state[param]
    moments = lf.AdamMoments.from_named({"w": {"exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"],
                                               "step": state["step"]}}, ["w"])
    assert moments.step == 3
    g = torch.randn(1, 50)
    m = 0.9 * state["exp_avg"] + 0.1 * g
    v = 0.999 * state["exp_avg_sq"] + 0.001 * g**2
    code = lf.adam_features(g, moments, "code")
    assert torch.allclose(code, m / torch.sqrt(v + 1e-8), atol=1e-6, rtol=1e-6)
    paper = lf.adam_features(g, moments, "paper")
    m_hat, v_hat = m / (1 - 0.9**4), v / (1 - 0.999**4)
    assert torch.allclose(paper, m_hat / (torch.sqrt(v_hat) + 1e-8), atol=1e-6, rtol=1e-6)
    # The paper direction is exactly the update torch's Adam takes with gradient g at step 4.
    before = param.detach().clone()
    opt.zero_grad()
    param.grad = g[0].clone()
    opt.step()
    assert torch.allclose((before - param.detach()) / 1e-2, paper[0], atol=1e-5, rtol=1e-4)
    # With eps = 0 the two variants differ only by the bias-correction constant √(1−β2^t)/(1−β1^t).
    moments.eps = 0.0
    ratio = lf.adam_features(g, moments, "paper") / lf.adam_features(g, moments, "code")
    assert torch.allclose(ratio, torch.full_like(ratio, math.sqrt(1 - 0.999**4) / (1 - 0.9**4)), rtol=1e-5)


def test_projector_preserves_cosines_and_is_chunk_invariant():
    """L3: 20k-dim vectors → d=2048; cosines within 0.05; same bits at any chunk size and call."""
    torch.manual_seed(0)
    x = torch.randn(6, 20000)
    x[1] = x[0] + 0.5 * torch.randn(20000)  # a correlated pair, so not every cosine is ≈ 0
    projector = lf.RademacherProjector(20000, 2048, seed=3, chunk_rows=4096)
    y = projector.project(x)
    cos_x = lf.normalize_rows(x) @ lf.normalize_rows(x).T
    cos_y = lf.normalize_rows(y) @ lf.normalize_rows(y).T
    assert (cos_x - cos_y).abs().max() < 0.05
    assert cos_x[0, 1] > 0.8
    other = lf.RademacherProjector(20000, 2048, seed=3, chunk_rows=1500)
    assert torch.equal(projector.rows(1000, 5000), other.rows(1000, 5000))
    assert torch.equal(projector.rows(0, 3000)[2000:], projector.rows(2000, 3000))
    assert torch.allclose(other.project(x), y, rtol=1e-4, atol=1e-3)
    assert set(projector.rows(0, 100).unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(lf.RademacherProjector(20000, 2048, seed=4).rows(0, 100), projector.rows(0, 100))
    with pytest.raises(ConfigError, match="multiple of 8"):
        lf.RademacherProjector(10, 100)


def test_subtasks_must_be_contiguous_and_equal_sized():
    assert subtask_count([{"subtask": "a"}, {"subtask": "a"}, {"subtask": "b"}, {"subtask": "b"}]) == 2
    assert subtask_count([{}, {}, {}]) == 1
    with pytest.raises(UsageError, match="contiguous"):
        subtask_count([{"subtask": "a"}, {"subtask": "b"}, {"subtask": "a"}, {"subtask": "b"}])
    with pytest.raises(UsageError, match="equal-sized"):
        subtask_count([{"subtask": "a"}, {"subtask": "a"}, {"subtask": "b"}])


def test_scores_mean_within_subtask_max_across_and_weight_checkpoints():
    train = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])]
    val = [torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0], [0.0, 1.0]])] * 2
    w = checkpoint_weights([3e-5, 1e-5])
    assert w == pytest.approx([0.75, 0.25])
    s = less_scores(train, val, w, n_subtasks=2)
    r = 1 / math.sqrt(2)
    # row 0: ckpt1 subtask means (1+r)/2, 0; ckpt2 cos((1,1)/√2, ·): (r+1)/2, r
    expect0 = max(0.75 * (1 + r) / 2 + 0.25 * (r + 1) / 2, 0.75 * 0 + 0.25 * r)
    expect1 = max(0.75 * r / 2 + 0.25 * r / 2, 0.75 * 1 + 0.25 * 1)
    assert s.tolist() == pytest.approx([expect0, expect1])
    paper = less_scores(train, val, w, 2, aggregation="paper")
    # paper: cosine with the normalised subtask-mean gradient; subtask 1 mean (1, .5)
    c = (1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25))
    assert paper[0].item() == pytest.approx(max(0.75 * c[0] + 0.25 * (c[0] + c[1]) * r, 0.25 * r))
    inner = less_scores(train, val, [1.0, 0.0], 2, similarity="inner")
    assert inner[1].item() == pytest.approx(4.0)  # raw (0,2)·mean((0,3),(0,1)) beats subtask 1 (1.0)
    assert top_fraction(torch.tensor([0.1, 0.9, 0.5, 0.9]), 0.5) == [1, 3]
    assert top_fraction(torch.tensor([0.1, 0.2]), 0.01) == [1]


def test_datastore_chunks_resume_to_identical_features(lora_model, tmp_path):
    model, tokenizer = lora_model
    examples = _examples(tokenizer, 10, seed=5)
    projector = lf.RademacherProjector(sum(p.numel() for _, p in lf.trainable_parameters(model)), 64, seed=0)
    config = LessConfig(chunk_examples=4, feature_batch_size=3)
    kwargs = {"kind": "sgd", "moments": None, "projector": projector, "config": config}
    full = build_features(model, tokenizer.pad_token_id, examples, tmp_path / "a", **kwargs)
    assert sorted(p.name for p in (tmp_path / "a").glob("grads-*.pt")) == ["grads-10.pt", "grads-4.pt", "grads-8.pt"]
    # Simulate an interruption after the first chunk: the rerun computes only the missing rows.
    folder = tmp_path / "b"
    build_features(model, tokenizer.pad_token_id, examples, folder, **kwargs)
    for name in ("grads-8.pt", "grads-10.pt", "all_unormalized.pt", "all_orig.pt"):
        (folder / name).unlink()
    seen = []
    resumed = build_features(model, tokenizer.pad_token_id, examples, folder, progress=lambda d, t, _: seen.append(d),
                             **kwargs)
    assert min(seen) > 4  # the first chunk was not recomputed
    assert torch.allclose(resumed, full, rtol=1e-5, atol=1e-6)
    normalized = torch.load(folder / "all_orig.pt")
    assert normalized.dtype == torch.float16 and torch.allclose(normalized.float().norm(dim=1), torch.ones(10), atol=1e-3)
    direct = projector.project(lf.loop_gradients(model, examples))
    assert ((full - direct).norm(dim=1) / direct.norm(dim=1)).max() < 1e-3  # fp16 chunks (FP16_ROW_TOLERANCE)
    other = lf.RademacherProjector(projector.dim_in, 64, seed=9)
    with pytest.raises(ConfigError, match="other data"):
        build_features(model, tokenizer.pad_token_id, examples, folder, **{**kwargs, "projector": other})
