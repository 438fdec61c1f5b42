"""int8 engines' one-token steps attend in two groups of rows, each over its own narrower window, when the rows'
lengths differ enough (providers/local_engine.py, `Engine._split_window`, SPLIT_MIN_SAVING). A tiny random Llama
built from a config, as in tests/test_local_engine.py."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _one_at_a_time, _prompts

pytestmark = pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")


@pytest.fixture
def engine_of(tiny_model, monkeypatch):
    """A fresh engine per weight type, on one torch thread (a step splits only where its attention runs on one
    thread, `Engine._splitting`), whatever the machine's load, with SPLIT_WINDOWS on (it ships off)."""
    import torch

    monkeypatch.setattr(local_engine, "SPLIT_WINDOWS", True)

    threads = torch.get_num_threads()
    monkeypatch.setattr(local_engine, "adaptive_threads", lambda force=False: (torch.set_num_threads(1), 1)[1])

    def make(dtype):
        monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
        monkeypatch.setenv("SKILLWEAVE_LOCAL_KV", "float32")
        monkeypatch.setenv("SKILLWEAVE_LOCAL_LOOKUP", "0")  # one-token steps only
        local_engine._load_engine.cache_clear()
        engine = load_engine(str(tiny_model))
        engine.prefixes.clear()
        return engine

    yield make
    local_engine._load_engine.cache_clear()
    torch.set_num_threads(threads)


def test_the_split_is_the_cheapest_contiguous_one_and_only_when_it_saves_enough(engine_of, monkeypatch):
    import torch

    engine = engine_of("int8")
    engine.valid = torch.zeros((4, 100), dtype=torch.bool)
    for b, first in enumerate((10, 20, 70, 60)):  # rows 0-1 long, rows 2-3 short
        engine.valid[b, first:] = True
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 0)
    # whole window: 4 x 90 = 360 pairs; split at 2: 2 x 90 + 2 x 40 = 260 (at 1: 90 + 3 x 80 = 330; at 3: 3 x 90 + 30)
    assert engine._split_window(4, 10, 100) == (2, (10, 60))
    # rows 1-3 only (a verify step's second lane): 80 + 2 x 40 = 160 against 3 x 80
    assert engine._split_window(4, 10, 100, 1) == (2, (20, 60))
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 101)  # saves 100: not enough
    assert engine._split_window(4, 10, 100) == (0, ())
    assert engine._split_window(1, 10, 100) == (0, ())
    engine.valid[:, :] = False
    engine.valid[:, 10:] = True  # rows of one length: nothing to save
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 0)
    assert engine._split_window(4, 10, 100) == (0, ())


def test_split_steps_give_each_rows_tokens_alone_and_close_logits(engine_of, monkeypatch):
    """Prompts of very different lengths, more requests than rows: with splitting forced (SPLIT_MIN_SAVING 0) the
    steps split, and every request's tokens equal those it gets alone; a split step's logits equal the unsplit
    step's up to float rounding (the same valid keys, fewer masked columns)."""
    import torch

    engine = engine_of("int8")
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 0)
    eos, rows = engine.eos_ids, engine.max_rows
    engine.eos_ids = set()
    try:
        prompts = _prompts(engine, [" ".join(CORPUS), "Hi.", CORPUS[0], CORPUS[3][:9], " ".join(CORPUS[:2]), "Yes?"])
        limits = [14, 9, 12, 7, 16, 10]
        alone = _one_at_a_time(engine, prompts, limits)
        engine.max_rows = 3
        before = engine.splits
        batched = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, limits, strict=True)]
        engine.prefixes.clear()
        engine.generate(batched)
        assert engine.splits > before  # the path ran
        assert [r.outputs for r in batched] == alone

        # one step's logits, split and not, on the same rows
        engine.max_rows = 8
        engine.prefixes.clear()
        for ids in prompts[:3]:
            engine.add(GenRequest(ids, max_tokens=10 ** 6))
        seen = []
        real = engine.model.forward
        engine.model.forward = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
        state = [(r.position, r.last, list(r.generated)) for r in engine.rows]
        hi = engine.hi
        try:
            for split in (True, False):
                for r, (position, last, generated) in zip(engine.rows, state, strict=True):
                    r.position, r.last, r.generated = position, last, list(generated)
                engine.hi = hi
                engine.valid[:, hi:] = False
                engine.split_windows = split
                count = engine.splits
                engine.step()
                assert (engine.splits > count) == split
        finally:
            del engine.model.forward
            engine.reset()
        assert torch.allclose(seen[0], seen[1], rtol=1e-4, atol=1e-4 * float(seen[1].abs().max()))
    finally:
        engine.eos_ids, engine.max_rows = eos, rows


def test_float16_and_float32_engines_never_split(engine_of, monkeypatch):
    for dtype in ("float16", "float32"):
        assert not engine_of(dtype).split_windows
    assert engine_of("int8").split_windows
    monkeypatch.setattr(local_engine, "SPLIT_WINDOWS", False)  # as shipped: no engine splits
    assert not engine_of("int8").split_windows


@pytest.mark.parametrize("lanes", [False, True])
def test_split_verify_steps_with_rejected_drafts_give_plain_decodings_tokens(engine_of, monkeypatch, lanes):
    """Prompt lookup's verify steps split too (float32 cache; in lanes, each lane's rows): drafts partly wrong (rows
    keep different numbers of tokens, leaving gaps in their columns) still give the tokens of plain decoding, with
    split steps."""
    import torch

    from tests.test_local_spec import REPEATING, _generate, _oracle, partly_wrong

    engine = engine_of("int8")
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 0)
    monkeypatch.setattr(local_engine, "LANES", lanes)
    monkeypatch.setattr(local_engine, "LANES_MIN_FED", 1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if lanes else 1)  # lanes need two torch threads (`_lane_split`)
    monkeypatch.setattr(local_engine, "adaptive_threads", lambda force=False: torch.get_num_threads())
    eos, rows, lookup = engine.eos_ids, engine.max_rows, engine.lookup
    engine.eos_ids = set()
    try:
        prompts = _prompts(engine, [" ".join(CORPUS), "Hi."] + REPEATING + [CORPUS[0], "Yes?"])
        limits = [30, 12, 25, 9, 40, 17]
        plain, plain_steps, _ = _generate(engine, prompts, limits, lookup=0)
        real = _oracle(engine, prompts, plain, partly_wrong(engine))
        verify, count = engine._verify, [0]

        def counted(drafts):
            before = engine.splits
            verify(drafts)
            count[0] += engine.splits > before

        engine._verify = counted
        in_lanes, used = engine._in_lanes, []
        engine._in_lanes = lambda forward, rows, split: (used.append(split), in_lanes(forward, rows, split))[1]
        try:
            engine.prefixes.clear()
            spec, spec_steps, accepted = _generate(engine, prompts, limits, lookup=4)
        finally:
            engine._draft = real
            del engine._verify, engine._in_lanes
        assert spec == plain
        assert accepted > 0 and spec_steps < plain_steps and count[0] > 0  # split verify steps ran
        assert any(used) == lanes  # and in lanes when asked
    finally:
        engine.eos_ids, engine.max_rows, engine.lookup = eos, rows, lookup
        torch.set_num_threads(threads)


def test_one_token_steps_on_two_threads_do_not_split(engine_of, monkeypatch):
    """With two torch threads a second attention call per layer is one more parallel region to wait for, so a
    one-token step splits only on one thread."""
    import torch

    engine = engine_of("int8")
    monkeypatch.setattr(local_engine, "SPLIT_MIN_SAVING", 0)
    torch.set_num_threads(2)
    monkeypatch.setattr(local_engine, "adaptive_threads", lambda force=False: torch.get_num_threads())
    eos = engine.eos_ids
    engine.eos_ids = set()
    try:
        for ids in _prompts(engine, [" ".join(CORPUS), "Hi.", CORPUS[0]]):
            engine.add(GenRequest(ids, max_tokens=10 ** 6))
        before = engine.splits
        engine.step()
        assert engine.splits == before
        torch.set_num_threads(1)
        engine.step()
        assert engine.splits == before + 1
    finally:
        engine.reset()
        engine.eos_ids = eos
