"""The embedded model's first token with float16 weights: a prompt's prefill runs layer by layer behind the
packing, and the output layer packs after the first prefill. Neither may change a result: what a layer computes
is the same whenever its packing finishes (tiny random Llama built from a config, as in
tests/test_local_engine.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, LlamaLite, load_engine
from tests.test_local_engine import CORPUS, _prompts

fbgemm = pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")


def _gate_last_layer(monkeypatch, layers: int) -> threading.Event:
    """The last layer's fusing and packing wait for the returned event (at most 30 s)."""
    gate, real_block = threading.Event(), LlamaLite._block

    def gated(self, w, i, *args, **kwargs):
        if i == layers - 1:
            assert gate.wait(30)
        return real_block(self, w, i, *args, **kwargs)

    monkeypatch.setattr(LlamaLite, "_block", gated)
    return gate


def _prefill(model, ids, written: list):
    import torch

    keep: list = []

    def kv_write(layer, k, v):
        keep.append((k, v))
        written.append(layer)

    with torch.no_grad():
        return model.forward(ids, torch.arange(ids.shape[1])[None], kv_write,
                             lambda layer, q: torch.nn.functional.scaled_dot_product_attention(
                                 q, *keep[layer], is_causal=True, enable_gqa=True), first_token=True)


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _packed_reference(tiny_model):
    """The tiny model's config, its weights and a float16 model of them with all packing done."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((tiny_model / "config.json").read_text())
    weights = load_file(str(tiny_model / "model.safetensors"))
    reference = LlamaLite(config, weights, dtype=torch.float16)
    reference.wait_packed()
    return config, weights, reference


@fbgemm
def test_a_prefill_runs_the_packed_layers_while_the_later_ones_are_still_packing(tiny_model, monkeypatch):
    import torch

    config, weights, reference = _packed_reference(tiny_model)
    layers = config["num_hidden_layers"]
    gate = _gate_last_layer(monkeypatch, layers)
    model = LlamaLite(config, weights, dtype=torch.float16)
    ids = torch.tensor([[5, 17, 42, 9, 3, 11, 7]])
    written, out = [], []
    runner = threading.Thread(target=lambda: out.append(_prefill(model, ids, written)))
    runner.start()
    try:
        # layer 0 is computed while the last layer is not even fused yet
        assert _wait_for(lambda: len(written) == layers - 1), "the prefill waited for every layer's packing"
        time.sleep(0.2)
        assert written == list(range(layers - 1)) and not out
        assert model.blocks[layers - 1] is None
    finally:
        gate.set()
    runner.join(30)
    assert written == list(range(layers))
    assert torch.equal(out[0], _prefill(reference, ids, []))  # the same bits as a model packed before the prefill


@fbgemm
def test_the_first_reply_is_the_same_whether_packing_finishes_before_or_during_its_prefill(tiny_model, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float16")
    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    local_engine._load_engine.cache_clear()
    try:
        engine = load_engine(str(tiny_model))
        engine.model.wait_packed()  # packing forced to finish first
        prompts = _prompts(engine, CORPUS[:3])
        expected = []
        for ids in prompts:
            request = GenRequest(ids, max_tokens=12)
            engine.generate([request])
            expected.append(request.outputs)
        for delay in (0.0, 0.3):  # the last layer packed at once, or 0.3 s into the first prefill
            local_engine._load_engine.cache_clear()
            with monkeypatch.context() as patch:
                gate = _gate_last_layer(patch, layers)
                engine = load_engine(str(tiny_model))
                first = GenRequest(prompts[0], max_tokens=12)
                runner = threading.Thread(target=engine.generate, args=([first],))
                runner.start()
                time.sleep(delay)
                gate.set()
                runner.join(30)
            rest = [GenRequest(ids, max_tokens=12) for ids in prompts[1:]]
            engine.generate(rest)
            assert [first.outputs] + [r.outputs for r in rest] == expected
    finally:
        local_engine._load_engine.cache_clear()


@fbgemm
def test_the_output_layer_packs_after_the_first_prefill_and_a_decode_step_waits_for_it(tiny_model, monkeypatch):
    import torch

    config, weights, reference = _packed_reference(tiny_model)
    real_pack, events, written = torch.ops.quantized.linear_prepack_fp16, [], []

    def pack(weight, bias):
        if weight.shape[0] == config["vocab_size"]:
            events.append(f"head packed after {len(written)} layers of prefill")
        return real_pack(weight, bias)

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack_fp16", pack)
    monkeypatch.setattr(local_engine, "HEAD_WAIT_SECONDS", 30.0, raising=False)
    model = LlamaLite(config, weights, dtype=torch.float16)
    for future in model._pending[1]:
        future.result()
    time.sleep(0.3)
    assert events == []  # every layer packed, the output layer not started: no prompt yet
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    first = _prefill(model, ids, written)
    assert _wait_for(lambda: events)
    assert events == [f"head packed after {config['num_hidden_layers']} layers of prefill"]
    assert torch.equal(first, _prefill(reference, ids, []))
    with torch.no_grad():  # a decode step (the packed output layer)
        decode = [m.forward(ids, torch.arange(5)[None], lambda *a: None, lambda layer, q: q)
                  for m in (model, reference)]
    assert torch.equal(decode[0], decode[1])

    # no prompt comes: the output layer packs by itself after HEAD_WAIT_SECONDS; wait_packed starts it at once
    monkeypatch.setattr(local_engine, "HEAD_WAIT_SECONDS", 0.2)
    events.clear()
    written.clear()
    idle = LlamaLite(config, weights, dtype=torch.float16)
    assert _wait_for(lambda: events, 10)
    idle.wait_packed()
    monkeypatch.setattr(local_engine, "HEAD_WAIT_SECONDS", 30.0)
    events.clear()
    started = time.monotonic()
    LlamaLite(config, weights, dtype=torch.float16).wait_packed()
    assert events == ["head packed after 0 layers of prefill"] and time.monotonic() - started < 10


@fbgemm
def test_a_process_that_never_prompts_exits_without_waiting_for_the_output_layer(tiny_model):
    """No thread waits for the output layer's moment to pack: a process that builds the float16 model and exits
    before any prompt does not sit out HEAD_WAIT_SECONDS (here 120 s) at exit."""
    import subprocess
    import sys

    code = ("import json, torch; from safetensors.torch import load_file; "
            "from skillweave.providers import local_engine as le; le.HEAD_WAIT_SECONDS = 120.0; "
            f"path = {str(tiny_model)!r}; "
            "config = json.load(open(path + '/config.json')); "
            "model = le.LlamaLite(config, load_file(path + '/model.safetensors'), dtype=torch.float16); "
            "[f.result() for f in model._pending[1]]; "
            "assert not model._pending[0].done(); print('layers packed')")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "layers packed" in done.stdout
    assert time.monotonic() - started < 100  # the old code waited out the 120 s (and the timeout above fired)
