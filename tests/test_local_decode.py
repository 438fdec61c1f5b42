"""Decode steps of the embedded model's engine: attention row by row over each row's own columns (tiny random
Llama built from a config, as in tests/test_local_engine.py)."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _one_at_a_time, _prompts


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_row_by_row_attention_gives_the_padded_steps_tokens_and_each_row_owns_its_span(tiny_model, monkeypatch, dtype):
    if dtype == "float16" and not local_engine.fp16_kernels():
        pytest.skip("torch has no fbgemm kernels on this CPU")
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
    local_engine._load_engine.cache_clear()
    engine = load_engine(str(tiny_model))
    # prompts of very different lengths, and more requests than rows, so rows join a running batch
    texts = CORPUS + [" ".join(CORPUS), CORPUS[0] * 3, "Hi."]
    prompts = _prompts(engine, texts)
    real_step, spans_checked, paths = engine.step, [], []

    def step():  # before each step: every row's keys are exactly the columns [hi - position, hi)
        lo, hi = engine.lo, engine.hi
        for b, row in enumerate(engine.rows):
            owned = engine.valid[b, lo: hi].nonzero().flatten() + lo
            assert owned.tolist() == list(range(hi - row.position, hi))
            spans_checked.append(b)
        B = len(engine.rows)
        paths.append(B > 1 and sum(r.position + 1 for r in engine.rows)
                     <= local_engine.BY_ROW_FILL * B * (hi + 1 - lo))
        real_step()

    engine.step = step
    outputs = {}
    for fill in (0.0, 1.0):  # never / always row by row (with more than one row)
        monkeypatch.setattr(local_engine, "BY_ROW_FILL", fill)
        paths.clear()
        requests = [GenRequest(ids, max_tokens=16 + 5 * i) for i, ids in enumerate(prompts)]
        engine.generate(requests)
        outputs[fill] = [r.outputs for r in requests]
        assert any(paths) == (fill == 1.0)
    alone = _one_at_a_time(engine, prompts, [16 + 5 * i for i in range(len(prompts))])
    assert outputs[0.0] == outputs[1.0] == alone
    assert spans_checked
    local_engine._load_engine.cache_clear()
