"""Continuous batching on the local model (providers/local_engine.py), on a tiny random Llama built from a config."""

from __future__ import annotations

import asyncio
import json

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine

SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "Write a short story about a cat who learns to fly.",
    "Explain rhetorical questions and metaphors in one paragraph.",
    "The quick brown fox jumps over the lazy dog; numbers 0123456789 and punctuation!?",
    "Skill composition: combine k skills in a single coherent text about gardening.",
]


def build_tiny_model(folder):
    """A 2-layer Llama (GQA, tied embeddings) with a byte-level BPE tokenizer, saved as a transformers folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = SMOL_TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         initializer_range=0.2, rope_theta=10000.0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    local_engine._load_engine.cache_clear()
    return folder


def _prompts(engine, texts):
    return [engine.tokenizer.encode(engine.tokenizer.chat_prompt([{"role": "user", "content": t}])) for t in texts]


def _one_at_a_time(engine, prompts, max_tokens):
    """Each prompt generated alone, in order: its outputs. `max_tokens`: one limit for all, or a list, one each."""
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    outputs = []
    for ids, n in zip(prompts, limits, strict=True):
        request = GenRequest(ids, max_tokens=n)
        engine.generate([request])
        outputs.append(request.outputs)
    return outputs


def test_tokenizer_and_chat_template_match_transformers(tiny_model):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_model)
    engine = load_engine(str(tiny_model))
    assert engine is not None
    for messages in ([{"role": "user", "content": CORPUS[0]}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": CORPUS[2]},
                      {"role": "assistant", "content": "ok"}, {"role": "user", "content": CORPUS[1]}]):
        prompt = engine.tokenizer.chat_prompt(messages)
        assert prompt == reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = engine.tokenizer.encode(prompt)
        assert ids == reference(prompt, add_special_tokens=False)["input_ids"]
        assert engine.tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_greedy_tokens_match_transformers_generate(tiny_model, monkeypatch):
    """The plain-torch Llama (float32 weights) gives the same greedy tokens as transformers' generate."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = load_engine(str(tiny_model))
    prompts = _prompts(engine, CORPUS)
    requests = [GenRequest(ids, max_tokens=16) for ids in prompts]
    engine.generate(requests)
    for ids, request in zip(prompts, requests, strict=True):
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=16, do_sample=False, pad_token_id=2, eos_token_id=2)
        expected = out[0, len(ids):].tolist()
        if 2 in expected:
            expected = expected[: expected.index(2)]
        assert request.outputs == [expected]
    assert any(len(r.outputs[0]) > 3 for r in requests)  # the comparison covered real decoding steps


def continuous_batching_equals_one_at_a_time(engine) -> None:
    """Six requests of known lengths through two rows equal each generated alone, and take no more decode steps
    than the longest row needs (also run on the int8 engine: tests/test_local_int8.py)."""
    eos, rows = engine.eos_ids, engine.max_rows
    engine.eos_ids = set()  # lengths set by max_tokens only, so the schedule is known
    try:
        texts = [CORPUS[0], CORPUS[1][:20], CORPUS[2], CORPUS[3][:9], "hi", CORPUS[1]]
        lengths = [30, 4, 5, 6, 3, 7]
        prompts = _prompts(engine, texts)
        alone = _one_at_a_time(engine, prompts, lengths)
        engine.max_rows = 2
        steps = engine.steps
        batched = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, lengths, strict=True)]
        engine.generate(batched)
        assert [r.outputs for r in batched] == alone
        # Two rows: the 30-token row stays while the five short requests (25 tokens) pass through the other
        # row. Decode steps = tokens after each row's first (picked at prefill): static batches of two would
        # need 29 + 5 + 6 = 40 steps; continuous batching needs the longest row's 29 and at most one more.
        assert engine.steps - steps <= 30
    finally:
        engine.eos_ids, engine.max_rows = eos, rows


def test_continuous_batching_is_identical_to_one_at_a_time_and_never_waits_for_the_longest_row(tiny_model):
    continuous_batching_equals_one_at_a_time(load_engine(str(tiny_model)))


def test_n_rows_share_one_prefill_and_sampling_follows_the_seed(tiny_model):
    engine = load_engine(str(tiny_model))
    ids = _prompts(engine, [CORPUS[0]])[0]
    greedy = GenRequest(ids, n=3, max_tokens=8)
    engine.generate([greedy])
    assert greedy.outputs[0] == greedy.outputs[1] == greedy.outputs[2]
    first = GenRequest(ids, n=2, max_tokens=8, temperature=1.5, seed=7)
    second = GenRequest(ids, n=2, max_tokens=8, temperature=1.5, seed=7)
    engine.generate([first])
    engine.generate([second])
    assert first.outputs == second.outputs


def test_local_provider_runs_concurrent_requests_through_the_engine(tiny_model):
    from skillweave.providers.core import ChatRequest, LocalProvider

    provider = LocalProvider(str(tiny_model))
    engine = load_engine(str(tiny_model))
    requests = [ChatRequest(messages=[{"role": "user", "content": t}], temperature=0, max_tokens=10, n=1 + i % 2)
                for i, t in enumerate(CORPUS)]

    async def main():
        return await asyncio.gather(*(provider.chat(r) for r in requests))

    results = asyncio.run(main())
    for request, (result, attempts) in zip(requests, results, strict=True):
        ids = _prompts(engine, [request.messages[0]["content"]])[0]
        alone = GenRequest(ids, n=request.n, max_tokens=10)
        engine.generate([alone])
        assert attempts == 1
        assert result.texts == [engine.tokenizer.decode(o).strip() for o in alone.outputs]
        assert result.input_tokens == len(ids) * request.n
        assert result.output_tokens == sum(len(o) for o in alone.outputs)


def test_local_provider_fails_a_too_long_prompt_alone(tiny_model):
    from skillweave.errors import ModelCallError
    from skillweave.providers.core import ChatRequest, LocalProvider

    provider = LocalProvider(str(tiny_model))

    async def main():
        return await asyncio.gather(
            provider.chat(ChatRequest(messages=[{"role": "user", "content": "word " * 600}], max_tokens=4)),
            provider.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=4)),
            return_exceptions=True)

    too_long, fine = asyncio.run(main())
    assert isinstance(too_long, ModelCallError) and "positions" in str(too_long)
    assert fine[0].texts and fine[1] == 1


def test_unsupported_architecture_falls_back_to_transformers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert load_engine(str(tmp_path)) is None


def test_thread_count_follows_the_load_while_running(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("SKILLWEAVE_TORCH_THREADS", raising=False)
    monkeypatch.setattr(local_engine.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    try:
        monkeypatch.setattr(local_engine, "_others_busy_cores", lambda state: 3.0)
        assert local_engine.adaptive_threads(force=True) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(local_engine, "_others_busy_cores", lambda state: 0.2)
        assert local_engine.adaptive_threads() == 1  # re-checked at most every THREAD_CHECK_SECONDS
        assert local_engine.adaptive_threads(force=True) == 4 and torch.get_num_threads() == 4
        monkeypatch.setenv("SKILLWEAVE_TORCH_THREADS", "3")
        assert local_engine.adaptive_threads(force=True) == 3
    finally:
        torch.set_num_threads(before)


def test_local_provider_works_across_event_loops(tiny_model):
    from skillweave.providers.core import ChatRequest, LocalProvider

    provider = LocalProvider(str(tiny_model))
    request = ChatRequest(messages=[{"role": "user", "content": CORPUS[3]}], temperature=0, max_tokens=6)
    first = asyncio.run(provider.chat(request))[0].texts

    async def abandoned():  # a loop that ends while its request is still generating
        task = asyncio.ensure_future(provider.chat(ChatRequest(
            messages=[{"role": "user", "content": CORPUS[0]}], temperature=0, max_tokens=200)))
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(abandoned())
    assert asyncio.run(provider.chat(request))[0].texts == first
    assert not load_engine(str(tiny_model)).rows


def test_bfloat16_weights_keep_batched_equal_to_alone(tiny_model, monkeypatch):
    import torch

    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "bfloat16")
    local_engine._load_engine.cache_clear()
    try:
        engine = load_engine(str(tiny_model))
        assert engine.model.blocks[0]["qkv"].dtype == torch.bfloat16
        prompts = _prompts(engine, CORPUS)
        alone = _one_at_a_time(engine, prompts, 12)
        batched = [GenRequest(ids, max_tokens=12) for ids in prompts]
        engine.generate(batched)
        assert [r.outputs for r in batched] == alone
        monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float64")
        from skillweave.errors import ConfigError

        with pytest.raises(ConfigError, match="expected float32, float16, bfloat16 or int8"):
            local_engine.local_dtype()
    finally:
        local_engine._load_engine.cache_clear()


@pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")
def test_float16_packed_weights_are_the_default_close_to_float32_and_batched_equals_alone(tiny_model, monkeypatch):
    import torch

    monkeypatch.delenv("SKILLWEAVE_LOCAL_DTYPE", raising=False)
    assert local_engine.local_dtype_name() == "float16"
    fast = load_engine(str(tiny_model))
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    exact = load_engine(str(tiny_model))
    assert fast is not exact  # one engine per weight type
    fast.model.wait_packed()  # packing runs in the background after the load returns
    assert isinstance(fast.model.blocks[0]["qkv"], torch.ScriptObject) and fast.model.blocks[0]["qkv_b"] is None
    assert isinstance(fast.model.lm_head, torch.ScriptObject)
    prompts = _prompts(fast, CORPUS)
    with torch.no_grad():  # the last position's logits, prompt by prompt: fp16 rounding of the weights only
        for ids in prompts:
            outs = [engine.model.forward(torch.tensor([ids]), torch.arange(len(ids))[None],
                                         lambda layer, k, v, keep=keep: keep.append((k, v)),
                                         lambda layer, q, keep=keep: torch.nn.functional.scaled_dot_product_attention(
                                             q, *keep[layer], is_causal=True, enable_gqa=True))
                    for engine, keep in ((fast, []), (exact, []))]
            assert not torch.equal(outs[0], outs[1])
            assert (outs[0] - outs[1]).abs().max() < 1e-2 * outs[1].abs().max()
    alone = _one_at_a_time(fast, prompts, 12)
    batched = [GenRequest(ids, max_tokens=12) for ids in prompts]
    fast.generate(batched)
    assert [r.outputs for r in batched] == alone


def test_float32_is_the_default_without_fbgemm_and_float16_then_fails_clearly(monkeypatch):
    from skillweave.errors import ConfigError

    monkeypatch.setattr(local_engine, "fp16_kernels", lambda: False)
    monkeypatch.delenv("SKILLWEAVE_LOCAL_DTYPE", raising=False)
    assert local_engine.local_dtype_name() == "float32"
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float16")
    with pytest.raises(ConfigError, match="needs torch's fbgemm"):
        local_engine.local_dtype_name()


def follow_up_turn(engine) -> tuple[GenRequest, GenRequest]:
    """A first turn, then a follow-up that repeats its prompt and reply and adds a turn, each generated alone on an
    engine that shares prefixes; checks that the follow-up prefilled only its new turn (and the reply's last token,
    whose keys are computed when it is fed)."""
    engine.prefixes.clear()
    first = GenRequest(_prompts(engine, [CORPUS[0]])[0], max_tokens=12)
    engine.generate([first])
    assert len(first.outputs[0]) >= 4
    tail = engine.tokenizer.encode("<|im_end|>\n<|im_start|>user\n" + CORPUS[1] + "<|im_end|>\n<|im_start|>assistant\n")
    before = engine.prefilled
    follow = GenRequest(first.prompt_ids + first.outputs[0] + tail, max_tokens=12)
    engine.generate([follow])
    assert engine.prefilled - before == len(tail) + 1
    return first, follow


@pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")
def test_a_follow_up_turn_reuses_the_conversations_keys_and_gives_the_same_tokens(tiny_model, monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float16")
    engine = load_engine(str(tiny_model))
    assert engine.share_prefixes
    first, follow = follow_up_turn(engine)
    first_ids, follow_ids = first.prompt_ids, follow.prompt_ids
    again = GenRequest(first_ids[:-3] + first_ids[-3:], max_tokens=12)  # the same prompt: all but its last token
    before = engine.prefilled
    engine.generate([again])
    assert engine.prefilled - before == 1 and again.outputs == first.outputs
    engine.share_prefixes = False  # the same request computed from scratch
    try:
        engine.prefixes.clear()
        fresh = GenRequest(follow_ids, max_tokens=12)
        before = engine.prefilled
        engine.generate([fresh])
        assert engine.prefilled - before == len(follow_ids)
        assert fresh.outputs == follow.outputs
    finally:
        engine.share_prefixes = True
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", "float32")
    assert not load_engine(str(tiny_model)).share_prefixes  # float32 stays a whole-prompt prefill


@pytest.mark.slow
def test_float16_rounding_of_the_released_weights_is_far_below_their_quantisation_step():
    """The numbers docs/models.md gives for keeping the GGUF's Q4_1/Q8_0 weights in float16."""
    np = pytest.importorskip("numpy")
    gguf = pytest.importorskip("gguf")
    from skillweave.errors import ConfigError
    from skillweave.providers.local_model import GGUF_FILE, GGUF_PACKAGE, _package_dir

    try:
        reader = gguf.GGUFReader(str(_package_dir(GGUF_PACKAGE, "") / GGUF_FILE))
    except ConfigError:
        pytest.skip("the embedded model wheel is not installed")
    worst = {"Q4_1": 0.0, "Q8_0": 0.0}
    types = set()
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        types.add(kind)
        if kind not in worst:
            continue
        raw = np.asarray(tensor.data).reshape(-1).view(np.uint8)
        blocks = raw.reshape(-1, 20 if kind == "Q4_1" else 34)  # float16 scale (and offset), then 32 values
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        if kind == "Q4_1":
            offset = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
            packed = blocks[:, 4:]
            w = np.concatenate([packed & 15, packed >> 4], 1).astype(np.float32) * d + offset
        else:
            w = blocks[:, 2:].view(np.int8).astype(np.float32) * d
        error = np.abs(w.astype(np.float16).astype(np.float32) - w)
        worst[kind] = max(worst[kind], float((error / np.maximum(d, 1e-30)).max()))
    assert types == {"F32", "Q4_1", "Q8_0"}
    assert worst["Q4_1"] < 0.01 and worst["Q8_0"] < 0.07


@pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")
def test_float16_packing_runs_in_the_background_and_forward_waits_for_it(tiny_model, monkeypatch):
    """The constructor returns while the weights are still being packed; a forward pass started then waits for
    the packing and gives the same logits, and the same packed weights, as a finished model."""
    import threading

    import torch
    from safetensors.torch import load_file

    from skillweave.providers.local_engine import LlamaLite

    config = json.loads((tiny_model / "config.json").read_text())
    weights = load_file(str(tiny_model / "model.safetensors"))
    reference = LlamaLite(config, weights, dtype=torch.float16)
    reference.wait_packed()

    real_pack = torch.ops.quantized.linear_prepack_fp16
    gate, packed_calls = threading.Event(), []

    def gated_pack(weight, bias):  # packing waits for the gate
        assert gate.wait(30)
        packed_calls.append(weight.shape)
        return real_pack(weight, bias)

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack_fp16", gated_pack)
    built = []
    thread = threading.Thread(target=lambda: built.append(LlamaLite(config, weights, dtype=torch.float16)))
    thread.start()
    thread.join(10)
    returned_while_gated = bool(built)
    if not returned_while_gated:  # let the old behaviour finish before failing
        gate.set()
        thread.join(30)
    assert returned_while_gated, "the constructor waited for packing"
    model, out = built[0], []
    ids = torch.tensor([[5, 17, 42, 9, 3]])

    def run():
        with torch.no_grad():
            out.append(model.forward(ids, torch.arange(5)[None], lambda layer, k, v, keep=[]: None,
                                     lambda layer, q: q))

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(0.5)
    assert not out and not packed_calls  # waiting for the packing
    gate.set()
    runner.join(30)
    with torch.no_grad():
        expected = reference.forward(ids, torch.arange(5)[None], lambda layer, k, v: None, lambda layer, q: q)
    assert torch.equal(out[0], expected)
    model.wait_packed()
    assert len(packed_calls) == 4 * config["num_hidden_layers"] + 1
    for a, b in zip(model.blocks, reference.blocks, strict=True):
        for name in ("qkv", "o", "gate_up", "down"):
            assert torch.equal(torch.ops.quantized.linear_unpack_fp16(a[name])[0],
                               torch.ops.quantized.linear_unpack_fp16(b[name])[0])
