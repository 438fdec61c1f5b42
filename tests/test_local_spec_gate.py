"""Prompt lookup on by default: the gate that decides per row whether drafting pays, and exact speculative
sampling for sampled rows (providers/local_engine.py: `lookup_draft_length`, `lookup_learn`, `Engine._draft`,
`Engine._accept_sampled`). A tiny random Llama built from a config, as in tests/test_local_spec.py."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, lookup_draft_length, lookup_learn
from tests import test_local_spec
from tests.test_local_engine import CORPUS, _prompts
from tests.test_local_spec import REPEATING, _generate

engine_of = test_local_spec.engine_of  # the same fixture (tiny_model: tests/conftest.py)


# ---- the gate's arithmetic


def test_the_draft_length_follows_the_rows_estimate():
    assert lookup_draft_length(0.99, 4) == 4  # a row that repeats itself drafts all it may
    assert lookup_draft_length(0.99, 2) == 2
    assert lookup_draft_length(0.3, 4) == 0  # below the cost of a position: no draft
    # each drafted token must be worth its position: kept**j >= the position's cost
    kept, cost = 0.96, local_engine.lookup_position_cost(0)
    length = lookup_draft_length(kept, 8)
    assert kept ** length >= cost > kept ** (length + 1)
    # a single token barely above its cost does not pay the verify step's own overhead
    assert lookup_draft_length(cost + 0.01, 4) == 0
    assert lookup_draft_length(1.0, 0) == 0


def test_long_rows_draft_at_a_lower_estimate_than_short_ones():
    """A one-token step reads all of a row's keys and values, so drafting pays sooner in a long conversation."""
    assert local_engine.lookup_position_cost(800) < local_engine.lookup_position_cost(400) \
        < local_engine.lookup_position_cost(100) < 1
    assert lookup_draft_length(0.65, 4, columns=100) == 0
    assert lookup_draft_length(0.65, 4, columns=800) >= 2


def test_the_estimate_moves_with_each_outcome():
    prior = local_engine.LOOKUP_PRIOR
    assert lookup_learn(prior, 3, False) > prior
    assert lookup_learn(prior, 0, True) < prior
    assert lookup_learn(prior, 0, False) == prior
    # kept, kept, rejected: the same as three single outcomes
    rate = local_engine.LOOKUP_RATE
    one = prior
    for outcome in (1, 1, 0):
        one += rate * (outcome - one)
    assert lookup_learn(prior, 2, True) == pytest.approx(one)


# ---- the default


def test_prompt_lookup_is_on_by_default_and_zero_switches_it_off(monkeypatch, engine_of):
    monkeypatch.delenv("SKILLWEAVE_LOCAL_LOOKUP", raising=False)
    assert local_engine.lookup_setting() == 4
    assert engine_of("float16").lookup == 4
    # float32 weights, the reference whose tokens are transformers', draft only when asked to
    assert engine_of("float32").lookup == 0
    monkeypatch.setenv("SKILLWEAVE_LOCAL_LOOKUP", "4")
    assert engine_of("float32").lookup == 4
    monkeypatch.setenv("SKILLWEAVE_LOCAL_LOOKUP", "0")
    assert local_engine.lookup_setting() == 0
    assert engine_of("float16").lookup == 0


# ---- the gate in the engine


@pytest.fixture
def sampled_drafts(monkeypatch):
    """Sampled rows draft (off by default, LOOKUP_SAMPLED)."""
    monkeypatch.setattr(local_engine, "LOOKUP_SAMPLED", True)


@pytest.fixture
def fixed_costs(monkeypatch):
    """A drafted position costs 0.42 of a one-token step at any length (the tiny model's rows are short, where the
    embedded model's costs would allow almost no drafts)."""
    monkeypatch.setattr(local_engine, "LOOKUP_COSTS", (2.0, 0.0, 4.8, 0.0))


def _script_guesses(engine, scripts):
    """Replace `_guess` (the n-gram lookup) with `scripts[prompt](row, room)`, for drafts whose quality is known."""
    real = engine._guess
    engine._guess = lambda row, room: scripts[tuple(row.request.prompt_ids)](row, room)
    return real


def _recording_drafts(engine, lengths):
    """Wrap `_draft` to append (prompt ids, tokens already generated, draft length) per row and step."""
    real = engine._draft

    def draft(row):
        d = real(row)
        lengths.append((row.request.prompt_ids, len(row.generated), len(d)))
        return d

    engine._draft = draft
    return real


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_row_whose_drafts_are_rejected_stops_drafting_and_a_row_that_repeats_keeps_drafting(
        engine_of, monkeypatch, fixed_costs, dtype):
    engine = engine_of(dtype)
    engine.eos_ids = set()
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 0.9)  # both rows start drafting
    prompts = _prompts(engine, CORPUS[:2])
    limits = [60, 60]
    plain, _, _ = _generate(engine, prompts, limits, lookup=0)
    truth = {tuple(p): out[0] for p, out in zip(prompts, plain, strict=True)}
    vocab = engine.model.embed.shape[0]

    def right(row, room):  # the true continuation: a row that repeats what it wrote before
        done = len(row.generated)
        return truth[tuple(row.request.prompt_ids)][done: done + room]

    def wrong(row, room):  # never the next token
        return [(t + 1) % vocab for t in right(row, room)]

    real = _script_guesses(engine, {tuple(prompts[0]): right, tuple(prompts[1]): wrong})
    lengths = []
    real_draft = _recording_drafts(engine, lengths)
    try:
        spec, _, accepted = _generate(engine, prompts, limits, lookup=4)
    finally:
        engine._guess, engine._draft = real, real_draft
    assert spec == plain
    good = [(done, n) for ids, done, n in lengths if ids == prompts[0]]
    bad = [n for ids, done, n in lengths if ids == prompts[1]]
    # the wrong row drafted once or twice at the start, then each withheld draft's first token failed again
    assert 1 <= sum(1 for n in bad if n) <= 2 and not any(bad[3:])
    # the right row drafted all it could at every step to its end
    assert good and all(n == min(4, 60 - done - 1) for done, n in good)
    assert accepted == sum(n for _, n in good)  # all of them kept


def test_a_row_that_starts_repeating_drafts_again(engine_of, monkeypatch, fixed_costs):
    """Withheld drafts are still checked: once the row's own text matches them, the gate opens again."""
    engine = engine_of("float32")
    engine.eos_ids = set()
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 0.9)
    prompts = _prompts(engine, CORPUS[:1])
    plain, _, _ = _generate(engine, prompts, [60], lookup=0)
    truth = plain[0][0]
    vocab = engine.model.embed.shape[0]

    def guess(row, room):  # wrong for the first 20 tokens, then the true continuation
        done = len(row.generated)
        d = truth[done: done + room]
        return [(t + 1) % vocab for t in d] if done < 20 else d

    real = _script_guesses(engine, {tuple(prompts[0]): guess})
    lengths = []
    real_draft = _recording_drafts(engine, lengths)
    try:
        spec, _, _ = _generate(engine, prompts, [60], lookup=4)
    finally:
        engine._guess, engine._draft = real, real_draft
    assert spec == plain
    assert lengths[0][2] == 4  # open at first
    assert not any(n for _, done, n in lengths if 5 <= done < 20)  # closed while its drafts were wrong
    assert sum(n for _, done, n in lengths if done >= 20) >= 16  # and open again once they were right


# ---- exact speculative sampling


def _fixed_logits(torch, vocab=6, positions=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((positions, vocab), generator=g) * 1.5


def test_a_drafted_token_is_kept_exactly_when_the_sample_at_its_uniform_draw_is_that_token(engine_of, monkeypatch):
    """Each position is sampled by its inverse CDF at one uniform draw u: drafted token t is kept exactly when
    cdf(t - 1) <= u < cdf(t), which has probability p(t); otherwise the row takes the sampled token and stops."""
    import torch

    engine = engine_of("float32")
    logits = _fixed_logits(torch)
    temperature = 0.8
    p = torch.softmax(logits / temperature, dim=-1)
    cdf = torch.cumsum(p[0], 0)
    t = 1 + int(p[0, 1:5].argmin())  # a token with others on both sides
    below, top, width = float(cdf[t - 1]), float(cdf[t]), float(p[0, t])
    for u, kept in ((below + 0.01 * width, True), (top - 0.01 * width, True), (below - 0.01, False),
                    (top + 0.01, False)):
        monkeypatch.setattr(engine, "_uniform", lambda generator, u=u: u)
        picks = engine._accept_sampled(logits, [t, 2], temperature, None)
        if kept:
            assert picks[0] == t and len(picks) >= 2
        else:
            assert len(picks) == 1 and picks[0] != t
            assert picks[0] == int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])]), right=True)[0])


def test_speculative_sampling_gives_each_token_the_distribution_of_plain_sampling(engine_of):
    """Empirical distributions over many draws with a seeded generator against the exact ones: the first token
    ~ p0; given the first drafted token kept, the second ~ p1; given both kept, the third ~ p2."""
    import torch

    engine = engine_of("float32")
    logits = _fixed_logits(torch, seed=3)
    temperature = 0.7
    p = torch.softmax(logits / temperature, dim=-1)
    draft = [int(p[0].argmax()), int(p[1].argsort()[-2])]  # a likely and a less likely drafted token
    g = torch.Generator().manual_seed(123)
    n = 20000
    counts = [torch.zeros(6) for _ in range(3)]
    for _ in range(n):
        picks = engine._accept_sampled(logits, draft, temperature, g)
        for j, token in enumerate(picks):
            counts[j][token] += 1
            if token != draft[min(j, 1)] or j == 2:
                break
    assert counts[0].sum() == n
    assert torch.allclose(counts[0] / n, p[0], atol=0.012)
    assert counts[1].sum() == counts[0][draft[0]]
    assert torch.allclose(counts[1] / counts[1].sum(), p[1], atol=0.015)
    assert torch.allclose(counts[2] / counts[2].sum(), p[2], atol=0.05)
    # the rule never keeps a token it rejected: after a rejection the row got one token, never the drafted one
    assert counts[1].sum() == pytest.approx(n * float(p[0, draft[0]]), rel=0.03)


def _oracle_guess(engine, prompts, truth_of):
    """`_guess` drafts `truth_of(prompt)`'s tokens from the row's length on (a fixed script per prompt)."""
    scripts = {}
    for ids in prompts:
        script = truth_of(ids)
        scripts[tuple(ids)] = lambda row, room, script=script: script[len(row.generated):][:room]
    return _script_guesses(engine, scripts)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_seeded_sampled_row_with_drafts_gives_the_same_text_in_any_batch(engine_of, monkeypatch, fixed_costs,
                                                                           sampled_drafts, dtype):
    engine = engine_of(dtype)
    engine.eos_ids = set()
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 0.95)
    prompts = _prompts(engine, REPEATING + CORPUS[:2])
    # the drafts: each prompt's greedy continuation, which a row sampled at temperature 0.5 often agrees with
    greedy, _, _ = _generate(engine, prompts, [40] * 4, lookup=0)
    real = _oracle_guess(engine, prompts, lambda ids: greedy[prompts.index(ids)][0])
    verified = []
    real_verify = engine._verify

    def verify(drafts):
        verified.extend(len(d) for r, d in zip(engine.rows, drafts, strict=True) if r.request.seed == 5)
        real_verify(drafts)

    engine._verify = verify

    def sampled():
        return GenRequest(prompts[0], max_tokens=40, temperature=0.5, seed=5)

    def other(i, temperature=0.0):
        return GenRequest(prompts[i], max_tokens=25 + 3 * i, temperature=temperature, seed=i)

    try:
        runs = []
        for rows, batch in ((1, [sampled()]), (4, [other(1), sampled(), other(2, 0.9), other(3)]),
                            (2, [other(3, 0.7), other(1), sampled(), other(2)])):
            engine.lookup, engine.max_rows = 4, rows
            engine.generate(batch)
            runs.append(next(r for r in batch if r.seed == 5).outputs)
    finally:
        engine._guess, engine._verify = real, real_verify
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0][0]) == 40
    assert sum(verified) > 0  # the sampled row did draft
    # and its tokens are those it samples without prompt lookup: one uniform draw per token either way
    engine.lookup, engine.max_rows = 0, 1
    plain = sampled()
    engine.generate([plain])
    assert plain.outputs == runs[0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_stop_token_or_max_tokens_inside_an_accepted_draft_ends_a_sampled_row(engine_of, monkeypatch, fixed_costs,
                                                                                 sampled_drafts, dtype):
    """Drafts past the stop token and past max_tokens, every drafted token kept (`_accept_sampled` mocked):
    the row ends at the stop token (not written) or at max_tokens, as plain sampling would end it."""
    engine = engine_of(dtype)
    prompts = _prompts(engine, CORPUS[:3])
    script = [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43]
    stop = 35
    engine.eos_ids = {stop}
    monkeypatch.setattr(local_engine, "LOOKUP_PRIOR", 0.95)
    # every drafted token kept (the rule itself is tested above), then one more token, 99
    monkeypatch.setattr(engine, "_accept_sampled", lambda logits, draft, temperature, generator: list(draft) + [99])
    # drafted from the row's second token on: script[len(generated) - 1:], ignoring the room left (the verify
    # step has to cut them)
    real = _script_guesses(engine, {tuple(ids): (lambda row, room: script[len(row.generated) - 1:][:8])
                                    for ids in prompts})
    try:
        engine.lookup, engine.max_rows = 8, 3
        requests = [GenRequest(prompts[0], max_tokens=40, temperature=0.8, seed=1),
                    GenRequest(prompts[1], max_tokens=4, temperature=0.8, seed=2),
                    GenRequest(prompts[2], max_tokens=40, temperature=0.8, seed=3)]
        engine.generate(requests)
    finally:
        engine._guess = real
    for r in requests:
        first = r.outputs[0][0]  # from the prefill, sampled
        want = [first] + script[: script.index(stop)] if r.max_tokens == 40 else [first] + script[:3]
        assert r.outputs[0] == want
        assert stop not in r.outputs[0]


def test_sampled_rows_get_no_draft_by_default(engine_of, fixed_costs):
    engine = engine_of("float32")
    engine.eos_ids = set()
    prompts = _prompts(engine, REPEATING[:1])
    real = _oracle_guess(engine, prompts, lambda ids: list(range(10, 60)))
    try:
        engine.lookup, engine.max_rows = 4, 2
        drafted = engine.drafted
        request = GenRequest(prompts[0], max_tokens=20, temperature=0.7, seed=3)
        engine.generate([request])
    finally:
        engine._guess = real
    assert engine.drafted == drafted and len(request.outputs[0]) == 20
