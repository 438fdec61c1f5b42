"""The embedded model's KV cache type (providers/local_engine.py, `kv_dtype_name`, `Engine._attention`): float16,
int8 and bfloat16 engines store keys/values in bfloat16 by default (SKILLWEAVE_LOCAL_KV=float32 gives the float32
cache back); float32 engines keep theirs. A tiny random Llama built from a config, as in tests/test_local_engine.py."""

from __future__ import annotations

import pytest

from skillweave.errors import ConfigError
from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import (
    CORPUS,
    _one_at_a_time,
    _prompts,
    continuous_batching_equals_one_at_a_time,
    follow_up_turn,
)
from tests.test_local_spec import REPEATING, _generate, _oracle, partly_wrong

fbgemm = pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")
bf16_kernels = pytest.mark.skipif(
    not __import__("torch").ops.mkldnn._is_mkldnn_bf16_supported(), reason="no oneDNN bfloat16 kernels on this CPU")


@pytest.fixture
def engine_of(tiny_model, monkeypatch):
    """engine_of(weights, kv=None): a fresh engine for that weight type and $SKILLWEAVE_LOCAL_KV (None: unset)."""
    engines = []

    def make(dtype, kv=None):
        monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
        if kv is None:
            monkeypatch.delenv("SKILLWEAVE_LOCAL_KV", raising=False)
        else:
            monkeypatch.setenv("SKILLWEAVE_LOCAL_KV", kv)
        local_engine._load_engine.cache_clear()
        engine = load_engine(str(tiny_model))
        engines.append((engine, (engine.eos_ids, engine.max_rows, engine.lookup)))
        return engine

    yield make
    for engine, (eos, rows, lookup) in engines:
        engine.eos_ids, engine.max_rows, engine.lookup = eos, rows, lookup
    local_engine._load_engine.cache_clear()


@fbgemm
@bf16_kernels
@pytest.mark.parametrize(("dtype", "kv", "expected"), [
    ("float16", None, "default"), ("int8", None, "default"), ("bfloat16", None, "default"),
    ("float16", "float32", "float32"), ("int8", "float32", "float32"), ("float16", "bfloat16", "bfloat16"),
    ("int8", "bfloat16", "bfloat16"), ("bfloat16", "bfloat16", "bfloat16"),
    ("float32", None, "float32"), ("float32", "bfloat16", "float32")])
def test_the_caches_type_follows_the_weights_and_the_setting(engine_of, dtype, kv, expected):
    import torch

    if expected == "default":
        expected = "bfloat16" if local_engine.KV_BFLOAT16_DEFAULT else "float32"

    engine = engine_of(dtype, kv)
    engine.prefixes.clear()
    request = GenRequest(_prompts(engine, [CORPUS[0]])[0], max_tokens=4)
    engine.generate([request])
    want = getattr(torch, expected)
    assert engine.kv_dtype == want
    assert all(k.dtype == want for k in engine.k) and all(v.dtype == want for v in engine.v)
    if engine.share_prefixes:  # prefix sharing keeps what the cache holds: half the bytes per position in bfloat16
        assert engine.prefixes and all(k.dtype == want for _, keys, _ in engine.prefixes for k in keys)
    if expected == "bfloat16":
        assert engine.k[0].element_size() == 2


@fbgemm
@bf16_kernels
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_continuous_batching_equals_one_at_a_time_with_the_bfloat16_cache(engine_of, dtype):
    engine = engine_of(dtype, "bfloat16")
    engine.prefixes.clear()
    assert str(engine.kv_dtype) == "torch.bfloat16"
    continuous_batching_equals_one_at_a_time(engine)
    # and prompts of very different lengths, more requests than rows: a row's tokens do not depend on its batch
    engine.max_rows = 3
    prompts = _prompts(engine, CORPUS + [" ".join(CORPUS), "Hi."])
    limits = [20 + 3 * i for i in range(len(prompts))]
    engine.prefixes.clear()
    alone = _one_at_a_time(engine, prompts, limits)
    engine.prefixes.clear()
    batched = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, limits, strict=True)]
    engine.generate(batched)
    assert [r.outputs for r in batched] == alone


@bf16_kernels
def test_the_bfloat16_attention_is_close_to_float32_and_the_float32_path_is_the_exact_math():
    """`Engine._attention` over a bfloat16 cache stays within bfloat16's rounding of torch's float32 attention; over a
    float32 cache it is float32 attention (close to torch's to float32 rounding), whatever the padding."""
    import types

    import torch

    gen = torch.Generator().manual_seed(3)
    B, H, KV, T, L, D = 3, 6, 2, 2, 40, 16
    engine = types.SimpleNamespace(torch=torch, model=types.SimpleNamespace(kv_heads=KV))
    q, k, v = (torch.randn(B, H, T, D, generator=gen), torch.randn(B, KV, L, D, generator=gen),
               torch.randn(B, KV, L, D, generator=gen))
    mask = torch.zeros(B, 1, T, L)
    mask[0, :, :, :25] = mask[1, :, :, :3] = float("-inf")  # left padding of different widths
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    f32 = local_engine.Engine._attention(engine, q, k, v, mask)
    b16 = local_engine.Engine._attention(engine, q, k.bfloat16(), v.bfloat16(), mask)
    assert f32.dtype == b16.dtype == torch.float32 and f32.shape == b16.shape == exact.shape
    assert (f32 - exact).abs().max() < 1e-5
    error = (b16 - exact).abs().max() / exact.abs().max()
    assert 1e-4 < error < 3e-2, error  # rounded (not silently float32), and only by bfloat16's 8 bits
    # one row alone gives that row's result in the batch (the padding of the others does not matter)
    alone = local_engine.Engine._attention(engine, q[1:2], k[1:2, :, 3:].bfloat16(), v[1:2, :, 3:].bfloat16(), None)
    assert (alone - b16[1:2]).abs().max() < 1e-2 * exact.abs().max()


@fbgemm
@bf16_kernels
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_rejected_drafts_with_the_bfloat16_cache_give_plain_decodings_tokens(engine_of, dtype):
    """Prompt lookup's verify step writes and reads the bfloat16 cache: drafts partly wrong (a different number of
    tokens kept per row, leaving gaps) still give the tokens of plain decoding with the same cache."""
    engine = engine_of(dtype, "bfloat16")
    assert str(engine.kv_dtype) == "torch.bfloat16"
    engine.eos_ids = set()
    engine.prefixes.clear()
    prompts = _prompts(engine, CORPUS + REPEATING)
    limits = [30, 12, 25, 9, 40, 17]
    plain, plain_steps, _ = _generate(engine, prompts, limits, lookup=0)
    real = _oracle(engine, prompts, plain, partly_wrong(engine))
    try:
        engine.prefixes.clear()
        spec, spec_steps, accepted = _generate(engine, prompts, limits, lookup=4)
    finally:
        engine._draft = real
    assert spec == plain
    assert accepted > 0 and spec_steps < plain_steps


@fbgemm
@bf16_kernels
def test_prefix_sharing_with_the_bfloat16_cache_equals_a_whole_prompt_prefill(engine_of):
    """A follow-up turn prefills only its new tokens over the conversation's bfloat16 keys/values and gives the tokens
    of the same prompt prefilled whole; the saved keys/values are what the cache held."""
    import torch

    engine = engine_of("float16", "bfloat16")
    assert engine.share_prefixes and engine.kv_dtype == torch.bfloat16
    _, follow = follow_up_turn(engine)
    assert engine.prefixes and all(k.dtype == torch.bfloat16 for _, keys, _ in engine.prefixes for k in keys)
    follow_ids = follow.prompt_ids
    engine.share_prefixes = False
    try:
        engine.prefixes.clear()
        fresh = GenRequest(follow_ids, max_tokens=12)
        engine.generate([fresh])
    finally:
        engine.share_prefixes = True
    assert fresh.outputs == follow.outputs


def test_the_float32_engine_keeps_its_cache_and_transformers_tokens(engine_of, tiny_model):
    """SKILLWEAVE_LOCAL_KV applies to the other weight types only: float32 weights keep a float32 cache and torch's
    attention, and their greedy tokens stay transformers' own."""
    import torch
    from transformers import AutoModelForCausalLM

    engine = engine_of("float32", "bfloat16")
    assert engine.kv_dtype == torch.float32 and not engine.share_prefixes
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompts = _prompts(engine, CORPUS)
    requests = [GenRequest(ids, max_tokens=12) for ids in prompts]
    engine.generate(requests)
    assert engine.k[0].dtype == torch.float32
    for ids, request in zip(prompts, requests, strict=True):
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=12, do_sample=False, pad_token_id=2, eos_token_id=2)
        expected = out[0, len(ids):].tolist()
        assert request.outputs == [expected[: expected.index(2)] if 2 in expected else expected]


def test_the_kv_setting_is_checked(monkeypatch):
    monkeypatch.delenv("SKILLWEAVE_LOCAL_KV", raising=False)
    assert local_engine.kv_setting() is None
    assert local_engine.kv_dtype_name("float32") == "float32"
    for good in ("bfloat16", "float32"):
        monkeypatch.setenv("SKILLWEAVE_LOCAL_KV", good)
        assert local_engine.kv_dtype_name("float16") == good
    for bad in ("float16", "bf16", "int8"):
        monkeypatch.setenv("SKILLWEAVE_LOCAL_KV", bad)
        with pytest.raises(ConfigError, match=f"SKILLWEAVE_LOCAL_KV '{bad}': expected bfloat16 or float32"):
            local_engine.check_dtype_setting()  # what the CLI and the local provider check before a run


@fbgemm
@bf16_kernels
def test_widened_windows_give_the_tokens_of_exact_windows(engine_of, monkeypatch):
    """A bfloat16 step attends over its window widened to a multiple of KV_WINDOW_STEP columns (the extra columns
    masked): the tokens are those of the exact window, with and without prompt lookup's verify steps."""
    engine = engine_of("float16", "bfloat16")
    engine.eos_ids = set()
    prompts = _prompts(engine, CORPUS + REPEATING)
    limits = [30, 12, 25, 9, 40, 17]
    widths, real = [], engine._attention

    def attention(q, keys, values, mask=None):
        widths.append(keys.shape[-2])
        return real(q, keys, values, mask)

    engine._attention = attention
    outputs = {}
    for step in (1, 64):
        monkeypatch.setattr(local_engine, "KV_WINDOW_STEP", step)
        for lookup in (0, 4):
            widths.clear()
            engine.prefixes.clear()
            outputs[step, lookup] = _generate(engine, prompts, limits, lookup=lookup)[0]
            if step == 64:  # every window widened (the cache has room to the right here)
                assert widths and all(w % 64 == 0 for w in widths)
            else:
                assert any(w % 64 for w in widths)
    assert outputs[1, 0] == outputs[64, 0] == outputs[1, 4] == outputs[64, 4]
