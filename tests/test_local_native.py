"""The embedded model's native attention kernel (providers/attention_kernel.c, loaded by providers/native.py): it
equals torch's attention on ragged rows, the engine gives the same tokens with it as with torch's attention, and
without a compiler, with a failing one or with SKILLWEAVE_LOCAL_KERNEL=torch the engine uses torch's attention; a
corrupt or partial build in the cache is rebuilt, never loaded. Builds go to a temporary folder
(tests/conftest.py); a tiny random Llama built from a config, as in tests/test_local_engine.py."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil

import pytest

from skillweave.errors import ConfigError
from skillweave.providers import local_engine, native
from skillweave.providers.local_engine import GenRequest
from tests import test_local_spec
from tests.test_local_engine import _prompts
from tests.test_local_spec import _generate, uneven_kept_runs

engine_of = test_local_spec.engine_of  # the same fixture (tiny_model: tests/conftest.py)
compiler = pytest.mark.skipif(shutil.which((os.environ.get("CC") or "cc").split()[0]) is None,
                              reason="no C compiler on this machine: the engine uses torch's attention")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty kernel folder of its own, nothing loaded in this process for it."""
    monkeypatch.setattr(native, "KERNEL_DIR", tmp_path / "kernels")
    native.forget()
    yield tmp_path / "kernels"
    native.forget()


def _reference(q, k, v, rows):
    """torch's attention row by row: row b's queries q[first: first + count] over its columns [0, position + count),
    query j masked past position + j + 1."""
    import torch

    outputs = []
    for b, (first, count, position) in enumerate(rows.tolist()):
        end = position + count
        mask = torch.arange(end)[None, :] < position + torch.arange(count)[:, None] + 1
        out = torch.nn.functional.scaled_dot_product_attention(
            q[first: first + count].transpose(0, 1)[None], k[b: b + 1, :, :end], v[b: b + 1, :, :end],
            attn_mask=mask, enable_gqa=True)
        outputs.append(out[0].transpose(0, 1))
    return torch.cat(outputs)


@compiler
@pytest.mark.parametrize("heads,kv_heads,dim", [(9, 3, 64), (4, 2, 16), (8, 1, 32), (4, 4, 8)])
def test_the_kernel_equals_torch_attention_on_ragged_rows(fresh, heads, kv_heads, dim):
    """Rows feeding 1 to 6 positions at positions from 0 to 700 (so blocks of 64 columns end inside a row, and a
    row's span is not a multiple of 8), strided slices of wider caches and queries (as the engine passes them):
    within 2e-6 of torch's attention; every row's result, and every query's, is bit for bit what it is alone."""
    import torch

    kernel = native.attention_kernel()
    assert kernel is not None
    torch.manual_seed(0)
    counts, positions = [1, 5, 3, 1, 2, 6], [700, 13, 0, 250, 77, 64]
    first = [sum(counts[:b]) for b in range(len(counts))]
    rows = torch.tensor(list(zip(first, counts, positions, strict=True)), dtype=torch.int64)
    n, cap = sum(counts), 800
    cache_k, cache_v = torch.randn(9, kv_heads, cap, dim), torch.randn(9, kv_heads, cap, dim + 8)
    k = cache_k[2:8, :, :710]  # slots 2..7 and the first 710 columns of a wider cache
    v = cache_v[2:8, :, :, :dim]  # columns dim + 8 floats apart
    q = torch.randn(n, heads + kv_heads, dim)[:, :heads]  # the query heads of a q/k projection: strided
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    out = torch.empty(n, heads, dim)
    kernel.attention(rows, q, k, v, out, dim ** -0.5)
    assert (out - _reference(q, k, v, rows)).abs().max() < 2e-6
    for b, (start, count, position) in enumerate(rows.tolist()):  # each row alone, and its first query alone
        alone = torch.empty(count, heads, dim)
        kernel.attention(torch.tensor([[0, count, position]]), q[start: start + count], k[b: b + 1], v[b: b + 1],
                         alone, dim ** -0.5)
        assert torch.equal(alone, out[start: start + count])
        one = torch.empty(1, heads, dim)
        kernel.attention(torch.tensor([[0, 1, position]]), q[start: start + 1], k[b: b + 1], v[b: b + 1], one,
                         dim ** -0.5)
        assert torch.equal(one, out[start: start + 1])


@compiler
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_the_engine_gives_the_same_tokens_with_the_kernel_as_with_torch_attention(engine_of, monkeypatch, fresh,
                                                                                   dtype):
    """Greedy rows with partly wrong drafts (verify steps whose rows feed and keep different numbers of tokens)
    and plain decoding (one-token steps), more requests than rows: the same tokens through the kernel as through
    torch's attention (SKILLWEAVE_LOCAL_KERNEL=torch), and the kernel did the attention of both kinds of step."""
    if dtype == "int8":  # int8 engines build their int8 form from the tiny model's weights
        monkeypatch.setattr(local_engine, "_int8_cache_file", lambda path: None)
    engine = engine_of(dtype)
    assert engine._native() is not None
    calls = []
    real = engine._native_attend

    def counted(kernel, layer, q, rows, s, e, *out):
        calls.append(int(rows[:, 1].max()))
        return real(kernel, layer, q, rows, s, e, *out)

    engine._native_attend = counted
    prompts, limits, plain, _, real_draft = uneven_kept_runs(engine)
    spec, _, accepted = _generate(engine, prompts, limits, lookup=4)
    engine._draft = real_draft
    assert accepted > 0 and 1 in calls and max(calls) > 1  # one-token steps and verify steps

    monkeypatch.setenv("SKILLWEAVE_LOCAL_KERNEL", "torch")
    torch_engine = engine_of(dtype)
    assert torch_engine is not engine and torch_engine._native() is None
    torch_prompts, torch_limits, torch_plain, _, torch_draft = uneven_kept_runs(torch_engine)
    torch_spec, _, _ = _generate(torch_engine, torch_prompts, torch_limits, lookup=4)
    torch_engine._draft = torch_draft
    assert torch_prompts == prompts
    assert plain == torch_plain and spec == torch_spec == plain


def test_float32_weights_keep_torch_attention(engine_of, fresh):
    """The float32 engine is the reference whose tokens are transformers': it never uses the kernel."""
    engine = engine_of("float32")
    assert not engine.native and engine._native() is None


def _generates(engine):
    engine.eos_ids = set()
    requests = [GenRequest(ids, max_tokens=12) for ids in _prompts(engine, test_local_spec.REPEATING)]
    engine.generate(requests)
    return [r.outputs for r in requests]


def test_without_a_compiler_the_engine_uses_torch_attention(engine_of, monkeypatch, fresh, caplog):
    """CC names no program: no error, one debug line, and the engine generates with torch's attention."""
    monkeypatch.setenv("CC", str(fresh / "no-such-compiler"))
    with caplog.at_level(logging.DEBUG, logger="skillweave.providers.native"):
        engine = engine_of("float16")
        assert engine._native() is None
    assert [r.getMessage() for r in caplog.records if "native attention unavailable" in r.getMessage()]
    assert all(len(out[0]) == 12 for out in _generates(engine))
    assert not fresh.exists() or not list(fresh.glob("*.so"))


def test_a_failing_build_falls_back_to_torch_attention(engine_of, monkeypatch, fresh, tmp_path):
    """A compiler that answers --version but fails to compile: torch's attention, nothing left in the cache."""
    fake = tmp_path / "cc"
    fake.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo fake-cc 1.0; exit 0; fi\n'
                    'echo "error: cannot compile" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    engine = engine_of("float16")
    assert engine._native() is None
    assert all(len(out[0]) == 12 for out in _generates(engine))
    assert not list(fresh.iterdir())  # no temporary file, no library


def test_the_torch_setting_skips_the_kernel_and_a_bad_one_is_an_error(engine_of, monkeypatch, fresh):
    monkeypatch.setenv("SKILLWEAVE_LOCAL_KERNEL", "torch")
    assert native.attention_kernel() is None
    engine = engine_of("float16")
    assert engine._native() is None and not fresh.exists()  # nothing compiled
    monkeypatch.setenv("SKILLWEAVE_LOCAL_KERNEL", "fast")
    with pytest.raises(ConfigError, match="SKILLWEAVE_LOCAL_KERNEL 'fast': expected native or torch"):
        local_engine.check_dtype_setting()  # what the CLI and the local provider check before a run


@compiler
@pytest.mark.parametrize("damage", ["truncated", "garbage", "no checksum"])
def test_a_corrupt_or_partial_cached_build_is_rebuilt_not_loaded(fresh, monkeypatch, damage):
    """A build cut short, overwritten, or whose checksum was never written: the next process compiles it again
    and loads only a file whose bytes match its checksum."""
    kernel = native.attention_kernel()
    assert kernel is not None
    library = kernel.path
    good = library.read_bytes()
    checksum = library.with_suffix(".sha256")
    damaged = library.with_name("damaged")  # a new file renamed over it: this process has the old one mapped
    if damage == "truncated":
        damaged.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        damaged.write_bytes(b"\x7fELF" + bytes(len(good)))
    if damage == "no checksum":
        checksum.unlink()
    else:
        os.replace(damaged, library)
    native.forget()
    loaded = []
    real_cdll = native.ctypes.CDLL

    def cdll(path, *args, **kwargs):
        loaded.append(hashlib.sha256(open(path, "rb").read()).hexdigest())
        return real_cdll(path, *args, **kwargs)

    monkeypatch.setattr(native.ctypes, "CDLL", cdll)
    again = native.attention_kernel()
    assert again is not None and again.path == library
    assert loaded and loaded == [checksum.read_text().strip()] * len(loaded)
    assert hashlib.sha256(library.read_bytes()).hexdigest() == checksum.read_text().strip()
    assert not [p for p in fresh.iterdir() if p.suffix == ".tmp"]


@compiler
def test_one_token_steps_in_two_halves_give_the_tokens_of_one_call(engine_of, monkeypatch, fresh):
    """With two torch threads, a one-token step's attention runs its rows in two halves, the second on the lane
    thread (KERNEL_ONE_TOKEN_LANES): the same tokens as one call over all rows, and both halves ran."""
    import torch

    engine = engine_of("float16")
    engine.eos_ids = set()
    prompts = _prompts(engine, test_local_spec.REPEATING + ["Hi.", " ".join(test_local_spec.REPEATING * 3)])
    limits = [20, 9, 30, 14]
    halves, real = [], engine._native_attend

    def counted(kernel, layer, q, rows, s, e, *out):
        halves.append((s, e))
        return real(kernel, layer, q, rows, s, e, *out)

    engine._native_attend = counted
    monkeypatch.setenv("SKILLWEAVE_TORCH_THREADS", "2")
    local_engine.adaptive_threads(force=True)
    try:
        outputs = {}
        for lanes in (False, True):
            monkeypatch.setattr(local_engine, "KERNEL_ONE_TOKEN_LANES", lanes)
            halves.clear()
            outputs[lanes] = _generate(engine, prompts, limits, lookup=0, rows=4)[0]
            split = [s for s, e in halves if s > 0]
            assert bool(split) == lanes
    finally:
        monkeypatch.delenv("SKILLWEAVE_TORCH_THREADS")
        local_engine.adaptive_threads(force=True)
    assert outputs[True] == outputs[False] and torch.get_num_threads() >= 1


@compiler
def test_prefills_through_the_kernel_give_the_tokens_of_torch_prefills(engine_of, monkeypatch, fresh):
    """With PREFILL_KERNEL (off by default) a prefill attends with the kernel: the same tokens as torch's causal
    attention, with prefix sharing (a follow-up prompt that repeats an earlier one prefills only its new tokens) as
    without."""
    engine = engine_of("float16")
    engine.eos_ids = set()
    first = _prompts(engine, [test_local_spec.REPEATING[0]])[0]
    follow = first + _prompts(engine, ["and then?"])[0]
    outputs = {}
    for kernel in (False, True):
        monkeypatch.setattr(local_engine, "PREFILL_KERNEL", kernel)
        for share in (False, True):
            engine.share_prefixes = share
            engine.prefixes.clear()
            prefilled = engine.prefilled
            requests = [GenRequest(first, max_tokens=10), GenRequest(follow, max_tokens=10)]
            for request in requests:  # one after the other: the second can reuse the first's keys
                engine.generate([request])
            outputs[kernel, share] = [r.outputs for r in requests]
            assert (engine.prefilled - prefilled < len(first) + len(follow)) == share
    assert outputs[True, False] == outputs[True, True] == outputs[False, False] == outputs[False, True]
