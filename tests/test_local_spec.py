"""Prompt lookup on the embedded model's engine (providers/local_engine.py, `Engine._draft` / `Engine._verify`):
drafted tokens verified in one forward pass give the tokens of plain decoding. A tiny random Llama built from a
config, as in tests/test_local_engine.py."""

from __future__ import annotations

import pytest

from skillweave.errors import ConfigError
from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _prompts

DTYPES = ["float32", "float16"]
REPEATING = ["the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the cat sat on the",
             "Skill composition: Skill composition: Skill composition: Skill composition: Skill"]


@pytest.fixture(autouse=True)
def gate_open(monkeypatch):
    """These tests check what verifying drafts gives, so the gate (tests/test_local_spec_gate.py) is held open:
    every n-gram match is drafted in full."""
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 1.0)
    monkeypatch.setattr(local_engine, "LOOKUP_RATE", 0.0)


@pytest.fixture
def engine_of(tiny_model, monkeypatch):
    def make(dtype):
        if dtype != "float32" and not local_engine.fp16_kernels():
            pytest.skip("torch has no fbgemm kernels on this CPU")
        monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
        local_engine._load_engine.cache_clear()
        engine = load_engine(str(tiny_model))
        saved = engine.eos_ids, engine.max_rows, engine.lookup
        engines.append((engine, saved))
        return engine

    engines = []
    yield make
    for engine, (eos, rows, lookup) in engines:
        engine.eos_ids, engine.max_rows, engine.lookup = eos, rows, lookup
    local_engine._load_engine.cache_clear()


def _generate(engine, prompts, limits, lookup, rows=3):
    """All prompts through `rows` rows (so requests join a running batch), with `lookup` draft tokens or none."""
    engine.lookup, engine.max_rows = lookup, rows
    steps, accepted = engine.steps, engine.accepted
    requests = [GenRequest(ids, max_tokens=n) for ids, n in zip(prompts, limits, strict=True)]
    engine.generate(requests)
    return [r.outputs for r in requests], engine.steps - steps, engine.accepted - accepted


def uneven_kept_runs(engine):
    """Six prompts (some repeating themselves) decoded plainly with no stop tokens, then `_draft` replaced by
    `_oracle` with `partly_wrong` drafts, so verify steps keep different numbers of tokens in different rows:
    (prompts, limits, plain outputs, plain steps, the real `_draft`)."""
    engine.eos_ids = set()
    prompts = _prompts(engine, CORPUS + REPEATING)
    limits = [30, 12, 25, 9, 40, 17]
    plain, plain_steps, _ = _generate(engine, prompts, limits, lookup=0)
    return prompts, limits, plain, plain_steps, _oracle(engine, prompts, plain, partly_wrong(engine))


def partly_wrong(engine):
    """A `corrupt` for `_oracle`: a draft's first `keep` tokens right and the others wrong, `keep` differing from row
    to row and step to step (so rows keep different numbers of tokens, leaving gaps)."""
    vocab = engine.model.embed.shape[0]

    def corrupt(row, d):
        keep = (len(row.request.prompt_ids) + len(row.generated)) % 4
        return d[:keep] + [(t + 1) % vocab for t in d[keep:]]

    return corrupt


def _oracle(engine, prompts, plain, corrupt=None, ignore_room=False):
    """Replace `_draft` with one that drafts the row's true continuation (from `plain`), `lookup` tokens long;
    `corrupt(row, draft)` may change some tokens, so that part of a draft is rejected. `ignore_room`: draft
    past the row's max_tokens too (the step must still stop where plain decoding stops)."""
    truth = {tuple(ids): out[0] for ids, out in zip(prompts, plain, strict=True)}
    real = engine._draft

    def draft(row):
        if not ignore_room:
            room = real(row)  # keeps the n-gram bookkeeping and its limits; only its length is used
            limit = len(room) if room else min(engine.lookup, row.request.max_tokens - len(row.generated) - 1)
        else:
            limit = engine.lookup
        done = len(row.generated)
        d = list(truth[tuple(row.request.prompt_ids)][done: done + max(0, limit)])
        if not ignore_room:
            d = d[: max(0, row.request.max_tokens - done - 1)]
        return corrupt(row, d) if corrupt else d

    engine._draft = draft
    return real


@pytest.mark.parametrize("dtype", DTYPES)
def test_prompt_lookup_gives_the_tokens_of_plain_decoding(engine_of, dtype):
    """The real n-gram drafts, on prompts built to repeat and on ordinary ones, with more requests than rows."""
    engine = engine_of(dtype)
    engine.eos_ids = set()  # lengths set by max_tokens, so the outputs are long enough to repeat themselves
    prompts = _prompts(engine, REPEATING + CORPUS)
    limits = [60, 45, 20, 33, 50, 7]
    plain, plain_steps, _ = _generate(engine, prompts, limits, lookup=0)
    drafted = engine.drafted
    spec, _, accepted = _generate(engine, prompts, limits, lookup=4)
    assert spec == plain
    # drafts were made and some were kept (a random model repeats little: the step counts are left to the
    # tests below, whose drafts are known to be right)
    assert engine.drafted > drafted and accepted > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_rejected_drafts_leave_the_cache_as_if_never_written(engine_of, dtype):
    """Drafts partly wrong, by a different number of tokens in each row (the rows keep different numbers of
    tokens): decoding goes on after each rejection exactly as plain decoding does, and the batch's window ends at
    the longest row's position (tests/test_local_layout.py checks the columns themselves)."""
    engine = engine_of(dtype)
    prompts, limits, plain, plain_steps, real = uneven_kept_runs(engine)
    owned = []
    real_verify = engine._verify

    def verify(drafts):
        real_verify(drafts)
        for row in engine.rows:
            owned.append(row.position <= engine.hi)
        owned.append(engine.hi == max((row.position for row in engine.rows), default=0))

    engine._verify = verify
    try:
        spec, spec_steps, accepted = _generate(engine, prompts, limits, lookup=4)
    finally:
        engine._draft, engine._verify = real, real_verify
    assert spec == plain
    assert owned and all(owned)
    assert accepted > 0 and spec_steps < plain_steps


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_stop_token_or_max_tokens_inside_an_accepted_draft_ends_the_row_where_plain_decoding_does(engine_of, dtype):
    engine = engine_of(dtype)
    engine.eos_ids = set()
    prompts = _prompts(engine, CORPUS)
    limits = [40, 40, 40, 40]
    long_plain, _, _ = _generate(engine, prompts, limits, lookup=0)
    # a token from the middle of the first output becomes a stop token: plain decoding ends there
    stop = long_plain[0][0][9]
    engine.eos_ids = {stop}
    short_limits = [40, 13, 6, 40]
    plain, _, _ = _generate(engine, prompts, short_limits, lookup=0)
    assert len(plain[0][0]) < 40 and len(plain[2][0]) <= 6
    # drafts are the true continuation without the stop rule and past max_tokens: the step must cut them
    real = _oracle(engine, prompts, long_plain, ignore_room=True)
    try:
        spec, _, accepted = _generate(engine, prompts, short_limits, lookup=8)
    finally:
        engine._draft = real
    assert spec == plain
    assert accepted > 0


@pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU")
def test_a_follow_up_turn_after_drafts_reuses_the_conversation_and_gives_the_same_tokens(engine_of):
    """A finished row that had drafts rejected is kept for prefix sharing with its own keys only."""
    engine = engine_of("float16")
    engine.prefixes.clear()
    engine.eos_ids = set()
    ids = _prompts(engine, [REPEATING[0]])[0]
    other = _prompts(engine, [CORPUS[1]])[0]
    plain, _, _ = _generate(engine, [ids, other], [30, 30], lookup=0)
    vocab = engine.model.embed.shape[0]
    real = _oracle(engine, [ids, other], plain, lambda row, d: d[:1] + [(t + 1) % vocab for t in d[1:]]
                   if row.request.prompt_ids == ids else d)
    try:
        engine.prefixes.clear()
        first, _, _ = _generate(engine, [ids, other], [30, 30], lookup=4)
    finally:
        engine._draft = real
    assert first == plain
    tail = engine.tokenizer.encode("<|im_end|>\n<|im_start|>user\n" + CORPUS[2] + "<|im_end|>\n<|im_start|>assistant\n")
    follow_ids = ids + first[0][0] + tail
    before = engine.prefilled
    follow, _, _ = _generate(engine, [follow_ids], [15], lookup=0)
    assert engine.prefilled - before == len(tail) + 1  # the conversation's keys were reused
    engine.prefixes.clear()
    fresh, _, _ = _generate(engine, [follow_ids], [15], lookup=0)
    assert follow == fresh


@pytest.mark.parametrize("dtype", DTYPES)
def test_greedy_rows_beside_a_sampled_row_give_the_tokens_of_plain_decoding(engine_of, dtype):
    """(Sampled rows draft too, and keep drafted tokens by speculative sampling: tests/test_local_spec_gate.py.)"""
    engine = engine_of(dtype)
    engine.eos_ids = set()
    prompts = _prompts(engine, REPEATING + [CORPUS[0]])
    outputs = {}
    for lookup in (0, 4):
        engine.lookup, engine.max_rows = lookup, 3
        requests = [GenRequest(prompts[0], max_tokens=40), GenRequest(prompts[1], max_tokens=40),
                    GenRequest(prompts[2], max_tokens=25, temperature=0.9, seed=11)]
        engine.generate(requests)
        outputs[lookup] = [r.outputs for r in requests]
    assert outputs[0][:2] == outputs[4][:2]
    assert len(outputs[4][2][0]) == 25


def test_the_lookup_setting_is_checked(monkeypatch):
    monkeypatch.setenv("SKILLWEAVE_LOCAL_LOOKUP", "4")
    assert local_engine.lookup_setting() == 4
    monkeypatch.delenv("SKILLWEAVE_LOCAL_LOOKUP")
    assert local_engine.lookup_setting() == local_engine.LOOKUP_DEFAULT
    for bad in ("four", "-1", "17"):
        monkeypatch.setenv("SKILLWEAVE_LOCAL_LOOKUP", bad)
        with pytest.raises(ConfigError, match="SKILLWEAVE_LOCAL_LOOKUP"):
            local_engine.check_dtype_setting()  # what the CLI and the local provider check before a run


@pytest.mark.parametrize("dtype", DTYPES + ["int8"])
@pytest.mark.parametrize("lookup", [0, 4])
def test_two_lanes_give_the_tokens_of_one_pass(engine_of, monkeypatch, dtype, lookup):
    """With two torch threads a verify step (drafts) runs its rows in two lanes on two threads; the tokens are
    those of one pass over all rows (requests joining a running batch). One-token steps never use lanes."""
    import torch

    engine = engine_of(dtype)
    engine.eos_ids = set()
    prompts = _prompts(engine, REPEATING + CORPUS)
    limits = [40, 25, 18, 33, 29, 9]
    monkeypatch.setenv("SKILLWEAVE_TORCH_THREADS", "2")
    monkeypatch.setattr(local_engine, "LANES_MIN_FED", 0.0)  # lanes for every verify step, however few its drafts
    local_engine.adaptive_threads(force=True)
    outputs, lanes = {}, []
    real = engine._in_lanes

    def in_lanes(forward, rows, split):
        lanes.append(split)
        return real(forward, rows, split)

    engine._in_lanes = in_lanes
    try:
        for on in (False, True):
            monkeypatch.setattr(local_engine, "LANES", on)
            lanes.clear()
            outputs[on], _, _ = _generate(engine, prompts, limits, lookup=lookup, rows=4)
            assert any(lanes) == (on and lookup > 0)
    finally:
        engine._in_lanes = real
        monkeypatch.delenv("SKILLWEAVE_TORCH_THREADS")
        local_engine.adaptive_threads(force=True)
    assert outputs[True] == outputs[False]
    assert torch.get_num_threads() >= 1
