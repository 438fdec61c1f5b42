"""The embedded model's start: loading when the `local` provider is built, a first token that does not wait for
the output layer's packing, and a thread count that follows the load during one generation (tiny random Llama
built from a config, as in tests/test_local_engine.py)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _one_at_a_time, _prompts

fbgemm = pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")


@fbgemm
def test_first_token_comes_from_the_float32_output_layer_without_waiting_for_its_packing(tiny_model, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from skillweave.providers.local_engine import LlamaLite

    config = json.loads((tiny_model / "config.json").read_text())
    weights = load_file(str(tiny_model / "model.safetensors"))
    reference = LlamaLite(config, weights, dtype=torch.float16)
    reference.wait_packed()
    exact = LlamaLite(config, weights)  # float32

    real_pack = torch.ops.quantized.linear_prepack_fp16
    gate = threading.Event()

    def gated_pack(weight, bias):  # only the output layer (vocab rows) waits for the gate
        if weight.shape[0] == config["vocab_size"]:
            assert gate.wait(30)
        return real_pack(weight, bias)

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack_fp16", gated_pack)
    model = LlamaLite(config, weights, dtype=torch.float16)
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    keep: list = []

    def forward(m, first_token, out=None):
        keep.clear()
        with torch.no_grad():
            logits = m.forward(ids, torch.arange(5)[None], lambda layer, k, v: keep.append((k, v)),
                               lambda layer, q: torch.nn.functional.scaled_dot_product_attention(
                                   q, *keep[layer], is_causal=True, enable_gqa=True), first_token=first_token)
        if out is not None:
            out.append(logits)
        return logits

    try:
        first = forward(model, True)  # returns while the output layer is still gated
        assert model._pending is not None and not model._pending[0].done()
        decode: list = []
        runner = threading.Thread(target=forward, args=(model, False, decode))
        runner.start()
        runner.join(0.5)
        assert not decode  # a decode step uses the packed output layer, so it waits
    finally:
        gate.set()
    runner.join(30)
    assert torch.equal(first, forward(reference, True))  # same bits as a model packed in full
    assert torch.equal(decode[0], forward(reference, False))
    assert not torch.equal(first, decode[0])  # float32 against float16 output layer
    # the float32 output layer over float16 layers: the first token's logits sit between the two
    assert (first - forward(exact, True)).abs().max() < 1e-2 * first.abs().max()


@fbgemm
def test_one_token_replies_while_the_output_layer_is_packed_and_batched_still_equals_alone(tiny_model, monkeypatch):
    import torch

    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float16")
    local_engine._load_engine.cache_clear()
    real_pack = torch.ops.quantized.linear_prepack_fp16
    gate = threading.Event()
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]

    def gated_pack(weight, bias):
        if weight.shape[0] == vocab:
            assert gate.wait(30)
        return real_pack(weight, bias)

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack_fp16", gated_pack)
    try:
        engine = load_engine(str(tiny_model))
        prompts = _prompts(engine, CORPUS)
        first = [GenRequest(ids, max_tokens=1) for ids in prompts]
        engine.generate(first)  # no decode step: done before the output layer is packed
        assert not engine.model._pending[0].done()
    finally:
        gate.set()
    alone = _one_at_a_time(engine, prompts, 10)
    batched = [GenRequest(ids, max_tokens=10) for ids in prompts]
    engine.generate(batched)
    assert [r.outputs for r in batched] == alone
    assert [r.outputs[0][:1] for r in first] == [a[0][:1] for a in alone]
    local_engine._load_engine.cache_clear()


def test_local_provider_starts_loading_when_built_and_its_first_request_reuses_that_load(tiny_model, monkeypatch):
    from skillweave.providers.core import ChatRequest, LocalProvider

    monkeypatch.delenv("SKILLWEAVE_LOCAL_ENGINE", raising=False)
    local_engine._load_engine.cache_clear()
    provider = LocalProvider(str(tiny_model))
    assert provider._loading is not None
    provider._loading.join(60)
    loaded = local_engine._load_engine.cache_info()
    assert loaded.currsize == 1 and loaded.misses == 1  # loaded before any request
    result, _ = asyncio.run(provider.chat(ChatRequest(messages=[{"role": "user", "content": CORPUS[0]}],
                                                      max_tokens=4, temperature=0)))
    assert result.output_tokens > 0
    assert local_engine._load_engine.cache_info().misses == 1  # the request took the same engine
    local_engine._load_engine.cache_clear()


def test_nothing_is_preloaded_without_prepared_weights_and_a_failed_preload_fails_the_first_request(
        tiny_model, tmp_path, monkeypatch):
    from skillweave.providers.core import ChatRequest, LocalProvider

    (tmp_path / "config.json").write_text((tiny_model / "config.json").read_text())  # no weights
    assert local_engine.start_loading(str(tmp_path)) is None
    monkeypatch.setenv("SKILLWEAVE_CACHE", str(tmp_path / "empty-cache"))
    assert local_engine.start_loading("local") is None  # the embedded model not prepared: no dequantising here
    monkeypatch.setenv("SKILLWEAVE_LOCAL_ENGINE", "transformers")
    assert local_engine.start_loading(str(tiny_model)) is None
    monkeypatch.delenv("SKILLWEAVE_LOCAL_ENGINE")

    # the load fails in the background thread (a name that is not a type fails earlier: tests/test_local_int8.py)
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float16")
    monkeypatch.setattr(local_engine, "fp16_kernels", lambda: False)
    local_engine._load_engine.cache_clear()
    escaped = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args))
    provider = LocalProvider(str(tiny_model))
    provider._loading.join(60)
    assert not escaped  # nothing escaped the thread
    with pytest.raises(Exception, match="SKILLWEAVE_LOCAL_DTYPE float16 needs"):
        asyncio.run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=2)))
    local_engine._load_engine.cache_clear()


def test_thread_count_changes_during_one_generation_as_the_load_changes(tiny_model, monkeypatch):
    """One `generate` call: other processes busy for the first steps (one thread), then idle (every core)."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("SKILLWEAVE_TORCH_THREADS", raising=False)
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    monkeypatch.setattr(local_engine.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    monkeypatch.setattr(local_engine, "THREAD_CHECK_SECONDS", 0.0)  # re-check at every step
    checks = []

    def others(state):  # 3 of 4 cores busy for the first 5 checks, then nearly idle
        checks.append(None)
        return 3.0 if len(checks) <= 5 else 0.1

    monkeypatch.setattr(local_engine, "_others_busy_cores", others)
    local_engine._load_engine.cache_clear()
    try:
        engine = load_engine(str(tiny_model))
        real_step, seen = engine.step, []

        def step():
            seen.append(torch.get_num_threads())
            real_step()

        engine.step = step
        eos, engine.eos_ids = engine.eos_ids, set()  # every row runs to its limit
        engine.generate([GenRequest(ids, max_tokens=12) for ids in _prompts(engine, CORPUS)])
        engine.eos_ids = eos
    finally:
        torch.set_num_threads(before)
        local_engine._load_engine.cache_clear()
    assert seen[0] == 1 and seen[-1] == 4 and seen.index(4) >= 3  # busy first, then every core, in one run
    assert 1 not in seen[seen.index(4):]
