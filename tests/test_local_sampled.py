"""Sampled rows and prompt lookup (providers/local_engine.py: `lookup_sampled_gain`, `Engine._sampled_drafts`):
a sampled row's draft is verified only when it pays for the unused query positions it adds to the step, and a
seeded row's tokens do not depend on that decision. A tiny random Llama built from a config, as in
tests/test_local_spec.py."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, lookup_pad_cost, lookup_sampled_gain
from tests import test_local_spec
from tests.test_local_engine import CORPUS, _prompts
from tests.test_local_spec import REPEATING, _generate
from tests.test_local_spec_gate import _oracle_guess

engine_of = test_local_spec.engine_of  # the same fixture (tiny_model: tests/conftest.py)


# ---- the arithmetic


def test_a_lone_sampled_draft_pays_for_the_other_rows_unused_positions():
    """Eight rows at 600 columns, kept estimate 0.8: one row's draft of 3 alone adds 21 unused query positions
    and does not pay; eight such drafts add none and do; beside a greedy draft as long, one fills three unused positions."""
    kept, position, columns = 0.8, 600, 600
    cost = local_engine.lookup_position_cost(position)
    worth = sum(kept ** j - cost for j in (1, 2, 3))
    assert worth > 0  # each drafted token is worth its position ...
    alone = lookup_sampled_gain([(kept, 3, position)], 8, 0, columns)
    assert alone == pytest.approx(worth - 21 * lookup_pad_cost(columns))
    assert alone < 0  # ... but not the 21 unused positions of the other seven rows
    assert lookup_sampled_gain([(kept, 3, position)] * 8, 8, 0, columns) == pytest.approx(8 * worth)
    assert lookup_sampled_gain([(kept, 3, position)], 8, 3, columns) == pytest.approx(worth + 3 * lookup_pad_cost(columns))
    # a row alone in the batch pays no unused position
    assert lookup_sampled_gain([(kept, 3, position)], 1, 0, columns) == pytest.approx(worth)


def test_an_unused_position_costs_more_in_a_wider_window():
    assert 0 < lookup_pad_cost(300) < lookup_pad_cost(855) < 1


# ---- the engine


@pytest.fixture
def sampled_setup(monkeypatch):
    """Sampled rows draft, a drafted position costs 0.42 of a one-token step at any length, and rows start at a
    high kept estimate, so that a tiny model's short rows draft at all."""
    monkeypatch.setattr(local_engine, "LOOKUP_SAMPLED", True)
    monkeypatch.setattr(local_engine, "LOOKUP_COSTS", (2.0, 0.0, 4.8, 0.0))
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 0.95)


def _verified_lengths(engine, seed):
    """Wrap `_verify` to record the draft lengths verified for the row(s) with request seed `seed`."""
    verified, real = [], engine._verify

    def verify(drafts):
        verified.extend(len(d) for r, d in zip(engine.rows, drafts, strict=True) if r.request.seed == seed)
        real(drafts)

    engine._verify = verify
    return verified, real


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_sampled_draft_that_does_not_pay_for_the_batch_is_withheld_and_the_tokens_stay(
        engine_of, monkeypatch, sampled_setup, dtype):
    """Alone, the sampled row's drafts are verified; beside greedy rows that never draft, with unused positions
    made expensive, they are withheld (the step stays a one-token step); beside greedy rows that draft as much,
    they are verified again. Its tokens are the same in all three and those of plain sampling."""
    engine = engine_of(dtype)
    engine.eos_ids = set()
    prompts = _prompts(engine, REPEATING + CORPUS[:2])
    greedy, _, _ = _generate(engine, prompts, [40] * 4, lookup=0)
    truth = {tuple(ids): out[0] for ids, out in zip(prompts, greedy, strict=True)}
    # drafts: the greedy continuation (a row sampled at 0.5 often agrees with it); the others draft only in the
    # third batch
    drafting = {"others": False}
    real_guess = _oracle_guess(engine, prompts, lambda ids: truth[tuple(ids)])
    scripted = engine._guess

    def guess(row, room):
        if row.request.seed == 5 or drafting["others"]:
            return scripted(row, room)
        return []

    engine._guess = guess
    monkeypatch.setattr(local_engine, "LOOKUP_PAD_COSTS", (50.0, 0.0))  # an unused position: 10 one-token steps
    verified, real_verify = _verified_lengths(engine, 5)

    def sampled():
        return GenRequest(prompts[0], max_tokens=40, temperature=0.5, seed=5)

    def other(i):
        return GenRequest(prompts[i], max_tokens=60, temperature=0.0)

    try:
        runs, counts = [], []
        for rows, batch, others_draft in ((1, [sampled()], False), (4, [other(1), sampled(), other(2), other(3)], False),
                                          (4, [other(1), sampled(), other(2), other(3)], True)):
            drafting["others"] = others_draft
            before = len(verified)
            engine.lookup, engine.max_rows = 4, rows
            engine.generate(batch)
            runs.append(next(r for r in batch if r.seed == 5).outputs)
            counts.append(sum(verified[before:]))
    finally:
        engine._guess, engine._verify = real_guess, real_verify
    assert counts[0] > 0  # alone: nothing unused, its drafts were verified
    assert counts[1] == 0  # beside three rows without drafts: withheld
    assert counts[2] > 0  # beside rows that draft too: verified
    assert runs[0] == runs[1] == runs[2]
    engine.lookup, engine.max_rows = 0, 1
    plain = sampled()
    engine.generate([plain])
    assert plain.outputs == runs[0]


def test_a_withheld_sampled_draft_is_still_checked(engine_of, monkeypatch, sampled_setup):
    """The first token of a draft withheld for the batch's sake is checked against the token the step gives, as the
    per-row gate checks its own withheld drafts: a row whose drafts are always wrong loses its kept estimate
    without a single verify step."""
    engine = engine_of("float32")
    engine.eos_ids = set()
    prompts = _prompts(engine, CORPUS[:2])
    vocab = engine.model.embed.shape[0]
    plain, _, _ = _generate(engine, prompts, [30, 30], lookup=0)
    wrong_of = {tuple(ids): [(t + 1) % vocab for t in out[0]] for ids, out in zip(prompts, plain, strict=True)}
    real = _oracle_guess(engine, prompts, lambda ids: wrong_of[tuple(ids)])
    scripted = engine._guess
    engine._guess = lambda row, room: scripted(row, room) if row.request.seed == 1 else []  # the greedy row: none
    monkeypatch.setattr(local_engine, "LOOKUP_PAD_COSTS", (50.0, 0.0))
    verified, real_verify = _verified_lengths(engine, 1)
    estimates, real_draft = [], engine._draft

    def draft(row):
        d = real_draft(row)
        if row.request.seed == 1:
            estimates.append(row.kept)
        return d

    engine._draft = draft
    try:
        engine.lookup, engine.max_rows = 4, 2
        requests = [GenRequest(prompts[0], max_tokens=30, temperature=0.9, seed=1),
                    GenRequest(prompts[1], max_tokens=30)]
        engine.generate(requests)
    finally:
        engine._guess, engine._verify, engine._draft = real, real_verify, real_draft
    assert sum(verified) == 0  # every draft withheld
    assert estimates[0] == pytest.approx(0.95) and estimates[-1] < 0.5  # and every one found wrong
