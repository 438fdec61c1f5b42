"""The embedded model's KV cache layout (providers/local_engine.py, `Engine`): a row's key and value for position p
sit at column p of its slot, each row writes at its own position, and a step attends over the columns before the
longest row's end only, so a verify step that keeps different numbers of drafted tokens in different rows leaves no
gaps. A tiny random Llama built from a config, as in tests/test_local_engine.py."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest
from tests import test_local_spec
from tests.test_local_engine import CORPUS, _one_at_a_time, _prompts
from tests.test_local_spec import REPEATING, _generate, uneven_kept_runs

engine_of = test_local_spec.engine_of  # the same fixture (tiny_model: tests/conftest.py)


def _prefill_keys(engine, ids):
    """Per layer, the keys [kv heads, len(ids), head dim] a prefill of `ids` alone computes (in the cache's type)."""
    import torch

    keys, values = [], []

    def kv_write(layer, k, v):
        keys.append(k[0].to(engine.kv_dtype))
        values.append(v[0].to(engine.kv_dtype))

    def attend(layer, q):
        k, v = keys[layer][None].to(q.dtype), values[layer][None].to(q.dtype)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=engine.model.kv_heads != engine.model.heads)

    with torch.no_grad():
        engine.model.forward(torch.tensor([ids]), torch.arange(len(ids))[None], kv_write, attend, first_token=True)
    return keys


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_verify_step_with_uneven_kept_runs_leaves_no_column_a_row_does_not_own(engine_of, monkeypatch, dtype):
    """Drafts partly wrong by a different number of tokens in each row: every verify step attends over exactly the
    columns before the longest row's position + the tokens it feeds, and afterwards each row's keys sit at its
    positions (column p holds the key a prefill of the row's tokens gives position p); the tokens are plain
    decoding's. (Where all rows wrote at one shared column, the rows that kept fewer tokens were left with gaps
    inside their span, and every later step attended over them.)"""
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 1.0)  # the gate held open: every draft is verified
    monkeypatch.setattr(local_engine, "LOOKUP_RATE", 0.0)
    engine = engine_of(dtype)
    prompts, limits, plain, _, real_draft = uneven_kept_runs(engine)
    real_verify, real_attention, real_native = engine._verify, engine._attention, engine._native_attend
    widths, spans, checked, uneven = [], [], [0], [0]

    def attention(q, keys, values, mask=None):
        widths.append(keys.shape[-2])
        return real_attention(q, keys, values, mask)

    def native(kernel, layer, q, rows, s, e, *out):  # the native kernel: (first fed position, count) of each row
        spans.extend(tuple(r) for r in rows[:, [2, 1]].tolist())
        return real_native(kernel, layer, q, rows, s, e, *out)

    def verify(drafts):
        before = {id(row): row.position for row in engine.rows}
        end = max(row.position + 1 + len(d) for row, d in zip(engine.rows, drafts, strict=True))
        own = sorted((row.position, 1 + len(d)) for row, d in zip(engine.rows, drafts, strict=True))
        widths.clear()
        spans.clear()
        real_verify(drafts)
        if engine._native() is None:
            assert widths and set(widths) == {end}  # every layer: [0, end), nothing more
        else:  # every layer: each row's own columns [0, position + j + 1) for its fed token j, nothing padded
            assert not widths and sorted(spans) == sorted(own * engine.model.layers)
        uneven[0] += len({row.position - before[id(row)] for row in engine.rows}) > 1
        assert engine.hi == max((row.position for row in engine.rows), default=0)
        for b, row in enumerate(engine.rows):  # (`generated` ends with the token the next step feeds)
            ids = (row.request.prompt_ids + row.generated)[: row.position]
            reference = _prefill_keys(engine, ids)
            for layer, k in enumerate(engine.k):
                torch_close(k[b, :, : row.position], reference[layer])
            checked[0] += 1

    engine._attention, engine._native_attend = attention, native
    engine._verify = verify
    try:
        spec, _, accepted = _generate(engine, prompts, limits, lookup=4)
    finally:
        engine._draft, engine._verify, engine._attention = real_draft, real_verify, real_attention
        engine._native_attend = real_native
    assert spec == plain
    assert accepted > 0 and checked[0] > 10 and uneven[0] > 0


def torch_close(actual, expected):
    import torch

    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_rows_of_very_different_lengths_joining_a_running_batch_give_their_tokens_alone(engine_of, dtype):
    """Prompts from a few tokens to a few hundred, more requests than rows (rows join a running batch): each row's
    tokens are those it gets alone, with the engine's default prompt lookup for the weights, and every one-token
    step attends over [0, the longest row's position + 1)."""
    import torch

    engine = engine_of(dtype)
    engine.max_rows = 3
    texts = CORPUS + [" ".join(CORPUS * 4), CORPUS[0] * 3, "Hi.", REPEATING[0]]
    prompts = _prompts(engine, texts)
    lengths = sorted(len(p) for p in prompts)
    assert lengths[-1] > 5 * lengths[0]
    limits = [16 + 5 * i for i in range(len(prompts))]
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    real_step, real_native, widths = engine.step, engine._native_attend, []

    def step():
        expected = max(row.position for row in engine.rows) + 1
        own = sorted((row.position, 1) for row in engine.rows)
        assert engine.hi + 1 == expected
        seen, spans = [], []

        def sdpa(q, k, v, **kwargs):
            seen.append(k.shape[-2])
            return real_sdpa(q, k, v, **kwargs)

        def native(kernel, layer, q, rows, s, e, *out):  # the native kernel: each row's own columns
            spans.extend(tuple(r) for r in rows[:, [2, 1]].tolist())
            return real_native(kernel, layer, q, rows, s, e, *out)

        torch.nn.functional.scaled_dot_product_attention = sdpa
        engine._native_attend = native
        try:
            real_step()
        finally:
            torch.nn.functional.scaled_dot_product_attention = real_sdpa
            engine._native_attend = real_native
        if spans:  # one query per row over [0, position + 1)
            assert not seen and sorted(spans) == sorted(own * engine.model.layers)
            seen = [max(p + n for p, n in spans)]
        widths.extend((width, expected) for width in seen)

    engine.step = step
    try:
        requests = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, limits, strict=True)]
        engine.generate(requests)
    finally:
        engine.step = real_step
    batched = [r.outputs for r in requests]
    assert batched == _one_at_a_time(engine, prompts, limits)
    assert widths and all(width == expected for width, expected in widths)  # one-token steps
