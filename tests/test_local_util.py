"""The embedded model's engine keeps its cores for the model: one thread for its turns, fewer small operations per
layer with the same bits (providers/local_engine.py), on a tiny random Llama built from a config."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _one_at_a_time, _prompts


def _textbook_forward(model, ids):
    """Every position's logits of a prompt, written out the way transformers' Llama writes it: rotate_half as
    cat(-x2, x1), sin and cos as computed, out-of-place residual adds and activations."""
    import torch

    F = torch.nn.functional
    B, T = ids.shape
    H, KV, D = model.heads, model.kv_heads, model.head_dim
    freqs = torch.arange(T)[None, :, None].float() * model.inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[:, :, None], emb.sin()[:, :, None]

    def rotate(x):
        rotated = torch.cat([-x[..., D // 2:], x[..., : D // 2]], dim=-1)
        return x * cos + rotated * sin

    x = F.embedding(ids, model.embed)
    for blk in model.blocks:
        h = model._rms(x, blk["ln1"])
        qkv = model._linear(h, blk["qkv"], blk["qkv_b"])
        qk = rotate(qkv[..., : (H + KV) * D].view(B, T, H + KV, D))
        q, k = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2)
        v = qkv[..., (H + KV) * D:].view(B, T, KV, D).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)
        x = x + model._linear(a.transpose(1, 2).reshape(B, T, H * D), blk["o"], blk["o_b"])
        h = model._rms(x, blk["ln2"])
        gate, up = model._linear(h, blk["gate_up"], blk["gate_up_b"]).chunk(2, dim=-1)
        x = x + model._linear(F.silu(gate) * up, blk["down"], blk["down_b"])
    return model._linear(model._rms(x, model.norm), model.lm_head)


def _forward(model, ids):
    import torch

    keys = []

    def kv_write(layer, k, v):
        keys.append((k, v))

    def attend(layer, q):
        k, v = keys[layer]
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=model.kv_heads != model.heads)

    return model.forward(ids, torch.arange(ids.shape[1])[None], kv_write, attend, every_position=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_forward_gives_the_textbook_llama_bits_in_fewer_operations(tiny_model, monkeypatch, dtype):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    if dtype == "float16" and not local_engine.fp16_kernels():
        pytest.skip("no fbgemm on this machine")
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
    model = load_engine(str(tiny_model)).model
    model.wait_packed()
    ids = torch.tensor([_prompts(load_engine(str(tiny_model)), [CORPUS[1]])[0]])
    with torch.no_grad():
        got, want = _forward(model, ids), _textbook_forward(model, ids)
    assert torch.equal(got, want)  # bit for bit, every position

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count() as ours:
        _forward(model, ids)
    with torch.no_grad(), Count() as textbook:
        _textbook_forward(model, ids)
    # the rotary as a roll, a product and a sum: 3 dispatches fewer per layer (a slice, neg, cat), less the 2 that
    # negate half of sin once per forward
    assert textbook.ops - ours.ops >= 3 * model.layers - 2, (textbook.ops, ours.ops)


def test_engine_turns_run_on_their_own_thread_even_when_the_default_executor_is_busy(tiny_model, monkeypatch):
    """The scheduler hands the engine's turns to one dedicated thread: a caller whose asyncio default executor is
    full (store writes, other `to_thread` work) does not hold the model back, and every turn runs on the same OS
    thread (one torch/OpenMP thread team)."""
    from skillweave.providers.core import ChatRequest, LocalProvider

    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    provider = LocalProvider(str(tiny_model))
    engine = load_engine(str(tiny_model))
    names = set()
    real_run = engine.run

    def run(admit, **kwargs):
        names.add(threading.current_thread().name)
        return real_run(admit, **kwargs)

    monkeypatch.setattr(engine, "run", run)
    release = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        await provider._engine()  # the load itself uses the default executor, before it is taken
        blocker = loop.run_in_executor(None, release.wait, 5.0)  # the default executor's only worker, busy
        start = time.perf_counter()
        results = await asyncio.gather(*(provider.chat(ChatRequest(
            messages=[{"role": "user", "content": t}], temperature=0, max_tokens=6)) for t in CORPUS))
        took = time.perf_counter() - start
        release.set()
        await blocker
        return results, took

    results, took = asyncio.run(main())
    assert all(r[0].texts for r in results)
    assert took < 4.0, took  # not queued behind the blocked default executor (which frees itself after 5 s)
    assert len(names) == 1 and next(iter(names)).startswith("skillweave-engine"), names


def test_the_scheduler_replaces_finished_rows_at_once_and_matches_one_at_a_time(tiny_model, monkeypatch):
    """Through the provider's scheduler: six requests of known lengths in two rows give each request's tokens
    generated alone, and take no more decode steps than the longest row needs (a finished row's place is taken
    at the next turn, before any further step)."""
    from skillweave.providers.core import ChatRequest, LocalProvider

    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    provider = LocalProvider(str(tiny_model))
    engine = load_engine(str(tiny_model))
    texts = [CORPUS[0], CORPUS[1][:20], CORPUS[2], CORPUS[3][:9], "hi", CORPUS[1]]
    lengths = [30, 4, 5, 6, 3, 7]
    monkeypatch.setattr(engine, "eos_ids", set())  # lengths set by max_tokens only, so the schedule is known
    alone = _one_at_a_time(engine, _prompts(engine, texts), lengths)
    monkeypatch.setattr(engine, "max_rows", 2)
    steps = engine.steps

    async def main():
        return await asyncio.gather(*(provider.chat(ChatRequest(
            messages=[{"role": "user", "content": t}], temperature=0, max_tokens=n))
            for t, n in zip(texts, lengths, strict=True)))

    results = asyncio.run(main())
    assert [r[0].output_tokens for r in results] == lengths
    assert [r[0].texts for r in results] == [[engine.tokenizer.decode(o[0]).strip()] for o in alone]
    assert engine.steps - steps <= 30  # static batches of two would need 29 + 5 + 6 = 40


def test_thread_count_is_rechecked_between_decode_steps_of_one_turn(tiny_model, monkeypatch):
    """`Engine.run` asks `adaptive_threads` before its prefills and before every decode step, so a long turn
    follows the load while it runs (the check itself re-reads /proc/stat at most every THREAD_CHECK_SECONDS)."""
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    engine = load_engine(str(tiny_model))
    calls = []
    real = local_engine.adaptive_threads
    monkeypatch.setattr(local_engine, "adaptive_threads", lambda force=False: calls.append(1) or real(force))
    request = GenRequest(_prompts(engine, [CORPUS[0]])[0], max_tokens=12)
    steps = engine.steps
    monkeypatch.setattr(engine, "eos_ids", set())
    engine.run([request], budget_s=60)
    assert engine.steps - steps == 11 and len(calls) == 1 + 11


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_prefills_beside_decode_steps_keep_every_rows_tokens(tiny_model, monkeypatch, dtype):
    """With PREFILL_ALONGSIDE and two threads, a turn that admits requests while rows decode prefills them on a
    second thread, and the rows already in the batch keep decoding meanwhile; every request's tokens are those
    it gets alone (float16: with prefix sharing, follow-up prompts that repeat earlier ones)."""
    if dtype == "float16" and not local_engine.fp16_kernels():
        pytest.skip("no fbgemm on this machine")
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
    monkeypatch.setenv("SKILLWEAVE_TORCH_THREADS", "2")
    local_engine.adaptive_threads(force=True)  # not the choice an earlier test left for THREAD_CHECK_SECONDS
    engine = load_engine(str(tiny_model))
    monkeypatch.setattr(engine, "eos_ids", set())
    texts = [CORPUS[0], CORPUS[1][:20], CORPUS[2], CORPUS[3][:9], "hi", CORPUS[1], CORPUS[0] + " Again.", CORPUS[2]]
    lengths = [30, 4, 5, 6, 3, 7, 9, 12]
    prompts = _prompts(engine, texts)
    alone = _one_at_a_time(engine, prompts, lengths)
    monkeypatch.setattr(local_engine, "PREFILL_ALONGSIDE", True, raising=False)
    monkeypatch.setattr(engine, "max_rows", 3)
    beside = []  # decode steps run on the engine's thread while a prefill ran on the other
    real_add, real_step, busy = local_engine.Engine.add, local_engine.Engine.step, threading.Event()

    def slow_add(self, request):  # a prefill long enough that steps surely run beside it
        if threading.current_thread().name.startswith("skillweave-prefill"):
            busy.set()
            time.sleep(0.05)
            try:
                return real_add(self, request)
            finally:
                busy.clear()
        return real_add(self, request)

    def step(self):
        if busy.is_set():
            beside.append(len(self.rows))
        return real_step(self)

    monkeypatch.setattr(local_engine.Engine, "add", slow_add)
    monkeypatch.setattr(local_engine.Engine, "step", step)
    batched = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, lengths, strict=True)]
    engine.generate(batched)
    assert [r.outputs for r in batched] == alone
    assert beside and all(rows > 0 for rows in beside)
    assert not engine.rows
