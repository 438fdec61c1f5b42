"""The batched LESS gradient step's two ways of reading a LoRA layer: merged (one Linear with W + s·BA) and hooked.

Both must give the batch-1 loop's per-example gradients (L1 tolerance, 1e-5 relative); merging is used only for
plain fp32 peft LoRA Linear layers within a byte budget, and the model comes back unchanged on exit.
"""

from __future__ import annotations

import random

import pytest
import torch

from skillweave.trainers import less_features as lf

WORDS = [str(i) for i in range(10)] + list("abcdefghij") + ["+", "="]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**lora):
    from peft import LoraConfig, get_peft_model

    from skillweave.trainers.models import tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=1)
    settings = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    model = get_peft_model(model, LoraConfig(**{**settings, **lora}))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; values make every gradient (and the merged update) non-trivial
                p.normal_(std=0.2)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def lora_model():
    return _model()


def _examples(tokenizer, n: int, seed: int = 0):
    rng = random.Random(seed)
    rows = [{"prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))),
             "completion": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))} for _ in range(n)]
    return [lf.encode_example(tokenizer, lf.to_messages(r), 64) for r in rows]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm(dim=1) / b.norm(dim=1)).max().item()


def _kinds(grads: lf.BatchedGradients) -> set[str]:
    return {type(c).__name__ for c in grads.captures}


def test_merged_and_hooked_layers_both_give_the_loop_gradients(lora_model):
    model, tokenizer = lora_model
    examples = _examples(tokenizer, 12)
    loop = lf.loop_gradients(model, examples)
    with lf.BatchedGradients(model) as grads:
        assert _kinds(grads) == {"_MergedLora"}  # fp32 peft LoRA Linear layers: all merged
        merged = grads(examples, tokenizer.pad_token_id)
    with lf.BatchedGradients(model, merge_bytes=0) as grads:
        assert _kinds(grads) == {"_LinearCapture"}  # merging off: every LoRA weight hooked
        hooked = grads(examples, tokenizer.pad_token_id)
    assert merged.shape == hooked.shape == loop.shape
    assert _relative(merged, loop) < 1e-5 and _relative(hooked, loop) < 1e-5
    assert (loop[0] - loop[1]).norm() > 1e-3  # per example, not one repeated row


def test_the_model_comes_back_unchanged(lora_model):
    model, tokenizer = lora_model
    ids = torch.tensor([_examples(tokenizer, 1, seed=5)[0]["input_ids"]])
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        before = model(input_ids=ids).logits
    with lf.BatchedGradients(model) as grads:
        grads(_examples(tokenizer, 4), tokenizer.pad_token_id)
        assert all(not c.inputs and not c.outputs for c in grads.captures)  # nothing kept between batches
    assert not any("forward" in m.__dict__ for m in model.modules())  # the layers' own forward is back
    assert not any(m._forward_hooks for m in model.modules())
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())  # base weights never touched
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_a_weight_changed_inside_the_context_is_merged_again(lora_model):
    model, tokenizer = lora_model
    examples = _examples(tokenizer, 6, seed=2)
    name, lora_b = next((n, p) for n, p in model.named_parameters() if "lora_B" in n)
    saved = lora_b.detach().clone()
    try:
        with lf.BatchedGradients(model) as grads:
            first = grads(examples, tokenizer.pad_token_id)
            with torch.no_grad():
                lora_b.mul_(3.0)  # an in-place update, as an optimizer step makes
            second = grads(examples, tokenizer.pad_token_id)
        loop = lf.loop_gradients(model, examples)
        assert _relative(second, loop) < 1e-5
        assert _relative(first, loop) > 1e-3  # the change matters: a stale merged copy would fail above
    finally:
        with torch.no_grad():
            lora_b.copy_(saved)


def test_merging_stays_within_its_byte_budget(lora_model):
    model, _ = lora_model
    params = lf.trainable_parameters(model)
    layers = {id(m) for m, _, _ in lf._mergeable_lora(model, params, lf.MERGED_LORA_BYTES).values()}
    size = sum(m.base_layer.weight.numel() * 4 for m in model.modules() if id(m) in layers)
    assert len(layers) == 8  # q, k, v, o in both layers
    assert lf._mergeable_lora(model, params, size)  # exactly fits
    assert lf._mergeable_lora(model, params, size - 1) == {}  # one byte short: hooks for all
    with lf.BatchedGradients(model, merge_bytes=size - 1) as grads:
        assert _kinds(grads) == {"_LinearCapture"}


@pytest.mark.parametrize("case", ["bf16", "dora", "dropout-training"])
def test_layers_that_cannot_be_merged_exactly_keep_the_hooks(case):
    model, tokenizer = _model(use_dora=True) if case == "dora" else _model()
    if case == "bf16":
        model = model.to(torch.bfloat16)  # merging would round s·BA into bf16 weights
    if case == "dropout-training":
        model.train()  # LoRA dropout active: the LoRA branch sees another input than the base layer
    assert lf._mergeable_lora(model, lf.trainable_parameters(model), lf.MERGED_LORA_BYTES) == {}
    if case == "bf16":
        with lf.BatchedGradients(model) as grads:
            assert _kinds(grads) == {"_LinearCapture"}
            rows = grads(_examples(tokenizer, 3), tokenizer.pad_token_id)
        assert rows.dtype == torch.float32 and torch.isfinite(rows).all()


def test_rows_sum_every_call_and_accept_unbatched_inputs():
    """A hooked layer called twice, on (B, i) inputs: its gradient is the sum over calls of gyᵀ x per example."""

    class Capture:
        def __init__(self, inputs):
            self.inputs = inputs

    torch.manual_seed(0)
    xs, gys = [torch.randn(3, 5), torch.randn(3, 5)], [torch.randn(3, 4), torch.randn(3, 4)]
    seq_x, seq_gy = torch.randn(3, 7, 6), torch.randn(3, 7, 2)
    twice, once = Capture(xs), Capture([seq_x])
    rows = lf._per_example_rows([(twice, None), (once, None)], {id(twice): gys, id(once): [seq_gy]})
    expected = torch.cat([sum(torch.einsum("no,ni->noi", g, x) for g, x in zip(gys, xs, strict=True)).reshape(3, -1),
                          torch.einsum("nto,nti->noi", seq_gy, seq_x).reshape(3, -1)], dim=1)
    assert rows.shape == (3, 4 * 5 + 2 * 6)
    assert torch.allclose(rows, expected, atol=1e-6)

