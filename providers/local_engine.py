"""Continuous batching for the embedded model (and any local Llama-family folder).

`transformers.generate` on a batch waits for its longest row, and loading transformers' model classes costs
about two seconds of imports alone. This module runs a Llama-architecture causal LM (SmolLM2 is one) in plain
torch from its `model.safetensors`, with the tokenizer from `tokenizer.json` (the `tokenizers` library) and
the folder's own chat template (Jinja2, rendered the way transformers renders it):

- every in-flight request gets one or more rows (`n`) in one decode batch; a row that finishes leaves at once
  and a waiting request takes its place after its prompt is prefilled, so no row waits for another;
- the KV cache is one buffer per layer, `[rows, kv heads, positions, head dim]`, in which a row's key and value
  for position p sit at column p of its slot: each row writes at its own position, so a row's keys are exactly the
  columns before its position (no gaps, even after a verify step that kept different numbers of drafted tokens in
  different rows), and a step attends over the columns before the longest row's end with a mask built from the
  rows' lengths; padding (the columns past a shorter row's end) never changes a row's result;
- greedy decoding gives the same tokens as running each prompt alone (tests/test_local_engine.py checks that,
  and checks the float32 tokens against transformers' own `generate` on a small random Llama built from a
  config);
- the matmul weights are float16 packed for fbgemm where torch has it (half the bytes read per decode step,
  float32 activations and accumulation; `local_dtype_name`), and then prompts that start like an earlier
  prompt or finished conversation prefill only their new tokens (`Engine.share_prefixes`);
- `SKILLWEAVE_LOCAL_DTYPE=int8` (opt-in) holds the matmul weights as int8 per output channel for fbgemm's
  `linear_dynamic`, with each row of activations quantised on its own (`LlamaLite._linear_int8`, so batched still
  equals alone) and activation outliers smoothed into the weights (`LlamaLite._smooth`); the embedded model's
  int8 form is cached next to its weights (`read_int8_cache`);
- prompt lookup (on by default but for float32 weights, K = 4; `SKILLWEAVE_LOCAL_LOOKUP=K`, 0 off) drafts up to K tokens per greedy row
  from an earlier n-gram of its prompt and reply while a per-row gate finds it pays (`lookup_draft_length`), and
  verifies them in one forward pass (`Engine._draft`, `Engine._verify`; sampled rows, with LOOKUP_SAMPLED, by
  exact speculative sampling, `Engine._accept_sampled`);
- float16/int8/bfloat16 engines' one-token and verify steps over the float32 cache attend with a small C kernel
  compiled at first use (providers/native.py, `Engine._native_attend`): each row's fed positions over its own
  columns only, nothing padded; torch's attention where it does not build or with `SKILLWEAVE_LOCAL_KERNEL=torch`;
- `SKILLWEAVE_LOCAL_KV=bfloat16` (opt-in) stores the keys/values of float16/int8/bfloat16 engines in bfloat16 (half
  the bytes a decode step reads for them) and multiplies them in bfloat16 (`kv_dtype_name`, `Engine._attention`);
- the torch thread count follows the load while it runs (`adaptive_threads`); with two or more threads a
  prompt-lookup verify step runs its rows in two lanes on two threads (`Engine._in_lanes`);
- the scheduler runs the engine's turns on one dedicated thread (`engine_thread`), whatever the event loop;
  with PREFILL_ALONGSIDE (off) and two or more threads, a turn's prefills run on a second thread while the batch
  keeps decoding (`Engine._prefill_alongside`).

A folder this module does not support (another architecture, rope scaling, sharded weights, no chat template)
returns None from `load_engine`; the provider then uses transformers' `generate` as before.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import mmap
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

THREAD_CHECK_SECONDS = 2.0


def local_torch_threads(cores: int) -> int:
    """Intra-op threads for local generation: $SKILLWEAVE_TORCH_THREADS if set; else every core while the
    machine is idle (1-minute load average below half the cores) and one thread when it is busy.

    Measured on 2 cores (SmolLM2-135M, batch 6): idle, 2 threads decode at 81 tokens/s against 44 with one; with
    one other busy process, 2 threads drop to 21 (OpenMP threads spin against it) while one thread keeps 53.
    """
    if os.environ.get("SKILLWEAVE_TORCH_THREADS"):
        return max(1, int(os.environ["SKILLWEAVE_TORCH_THREADS"]))
    try:
        busy = os.getloadavg()[0] >= cores / 2
    except OSError:  # no load average on this platform
        busy = False
    return 1 if busy else cores


# ---- tokenizer ------------------------------------------------------------------------------------------
class ChatTokenizer:
    """`tokenizer.json` through the `tokenizers` library, plus the folder's chat template."""

    def __init__(self, path: Path):
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        if config.get("clean_up_tokenization_spaces"):
            raise _Unsupported("clean_up_tokenization_spaces")
        template_file = path / "chat_template.jinja"
        template = template_file.read_text() if template_file.exists() else config.get("chat_template")
        if not isinstance(template, str):
            raise _Unsupported("no single chat template")
        self.special = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value is not None:
                self.special[key] = str(value)

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: (
            json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys))
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
        self.template = env.from_string(template)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.template.render(messages=messages, add_generation_prompt=True, **self.special)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class _Unsupported(Exception):
    pass


# The output layer (28 M weights for SmolLM2, a third of a second of packing) is packed after the first prefill,
# so that it does not take a core from it; if no prompt comes, it starts this long after the layers' packing.
HEAD_WAIT_SECONDS = 1.0

# int8 weights (SKILLWEAVE_LOCAL_DTYPE=int8): the largest |w| of a channel maps to `int8_weight_max()` (127, or 63
# where fbgemm's kernel would overflow 16-bit sums of products); activations keep all 8 bits (0..255).
INT8_REDUCE_RANGE = False
INT8_HEAD = True  # decode steps use the int8 output layer too (measured: docs/benchmarks.md)
INT8_SMOOTH: float | None = 0.5  # SmoothQuant's strength (`LlamaLite._smooth`); None: no smoothing
# The text whose activations set the smoothing: a short chat in the model's own template.
INT8_CALIBRATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short paragraph about cave diving that shows a metaphor and a rhetorical "
                                "question, then explain which sentence shows which skill."},
    {"role": "assistant", "content": "Below the surface, the cave is a cathedral of stone: silent, cold and "
                                     "patient. Who would not feel small there? The first sentence is the metaphor; "
                                     "the second asks a question that needs no answer."},
    {"role": "user", "content": "Grade the text from 0 to 10 and give one reason."},
]


@dataclass
class _Int8Linear:
    packed: object  # fbgemm packed int8 weight (torch.ops.quantized.linear_prepack)
    bias: object = None  # float32, added after the product


@lru_cache(maxsize=1)
def int8_weight_max() -> int:
    """The int8 weights' range, checked once per process on this CPU: 127 where fbgemm's `linear_dynamic` adds
    products of uint8 activations and int8 weights without overflow in the worst case (every activation at the top
    of its range against weights of +-127: an AVX2 kernel that adds such products in pairs in 16 bits, vpmaddubsw,
    would saturate at 32,767); 63 otherwise, which keeps a pair below 2^15 (2 * 255 * 63 = 32,130). Measured on
    SmolLM2 (docs/benchmarks.md, short workload): 127 wrote 1,979 output tokens where float32 wrote 2,068 and 63
    wrote 1,638, and one greedy text of 24 was float32's with 127, none with 63."""
    import torch

    _quantized_warning_seen()
    width = 64
    ints = torch.full((2, width), 127, dtype=torch.int8)
    ints[1] = -127
    qweight = torch._make_per_channel_quantized_tensor(ints, torch.ones(2, dtype=torch.double),
                                                       torch.zeros(2, dtype=torch.long), 0)
    x = torch.cat([torch.ones(1, width), -torch.ones(1, width)])  # quantised to 255 and 0
    got = torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(qweight, None), INT8_REDUCE_RANGE)
    return 127 if torch.allclose(got, x @ ints.float().T, rtol=0.02) else 63


@lru_cache(maxsize=1)
def _quantized_warning_seen() -> None:
    """torch 2.13 warns (once per process, from C++) that its quantized tensor constructors are deprecated; the
    engine uses one to hand int8 weights and their per-channel scales to fbgemm's packer. That one warning is
    raised here, on the calling thread, and not shown; the packing threads then raise none."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.quantize_per_channel(torch.ones(1, 1), torch.ones(1, dtype=torch.double),
                                   torch.zeros(1, dtype=torch.long), 0, torch.qint8)


# ---- model ----------------------------------------------------------------------------------------------
class LlamaLite:
    """A Llama-architecture decoder in plain torch (fp32), weights from one safetensors file."""

    def __init__(self, config: dict, weights: dict, dtype=None, int8_cache: dict | None = None,
                 keep_int8: bool = False, calibration: list[int] | None = None):
        """`int8_cache`: with int8 weights, the int8 matrices and their scales as `int8_parts` held them for an
        earlier load (`read_int8_cache`); they are packed as they are instead of being quantised again.
        `keep_int8`: keep this load's int8 matrices and scales in `int8_parts` (for `write_int8_cache`).
        `calibration`: with int8 weights (and no cache), token ids whose activations set the smoothing (`_smooth`)."""
        import torch

        self.torch = torch
        c = config
        if c.get("model_type") != "llama" or c.get("hidden_act", "silu") != "silu":
            raise _Unsupported(f"model_type {c.get('model_type')}")
        rope = c.get("rope_parameters") or {}
        if (rope.get("rope_type") or "default") != "default" or c.get("rope_scaling"):
            raise _Unsupported("rope scaling")
        theta = float(rope.get("rope_theta") or c.get("rope_theta") or 10000.0)
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.max_positions = int(c.get("max_position_embeddings", 2048))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))
        w = {k: v.float() for k, v in weights.items()}
        self.embed = w["model.embed_tokens.weight"]
        tied = c.get("tie_word_embeddings", False)
        self.lm_head = self.embed if tied or "lm_head.weight" not in w else w["lm_head.weight"]
        self.head32 = self.lm_head  # float32: the first token of every reply comes from it (`forward`)
        self.norm = w["model.norm.weight"]
        self._pending = None  # (output layer, [one future per layer]) while float16/int8 packing runs
        self._start_head = lambda: None  # starts the output layer's packing, once (`_pack`)
        self._ends = {}  # int8: per input width, a buffer whose row 0 is [1, -1, 0, ...] (`_linear_int8`)
        self.int8_cache = int8_cache
        self.int8_parts: dict | None = {} if keep_int8 else None  # int8 matrices and scales quantised here
        if dtype in (torch.float16, torch.int8):  # packed for fbgemm; activations and accumulation as described
            self.blocks = [None] * self.layers
            if dtype == torch.int8:
                _quantized_warning_seen()
                blocks = None
                if int8_cache is None and calibration and INT8_SMOOTH is not None:
                    blocks = self._smooth(w, calibration)
                self._pack(w, self._pack_int8, head=INT8_HEAD, fuse=int8_cache is None, blocks=blocks)
            else:
                self._pack(w, lambda weight, bias, key: torch.ops.quantized.linear_prepack_fp16(weight, bias))
            return
        self.blocks = [self._block(w, i) for i in range(self.layers)]
        if dtype is not None and dtype != torch.float32:  # matmul weights only; norms and residuals stay fp32
            for blk in self.blocks:
                for name in ("qkv", "qkv_b", "o", "o_b", "gate_up", "gate_up_b", "down", "down_b"):
                    if blk[name] is not None:
                        blk[name] = blk[name].to(dtype)
            self.lm_head = self.lm_head.to(dtype)

    def _block(self, w: dict, i: int, fuse: bool = True) -> dict:
        """Layer i's weights, the q/k/v and gate/up projections each fused into one matrix (without `fuse`, the
        matrices are left out: the int8 cache holds them)."""
        torch = self.torch
        p = f"model.layers.{i}."

        def get(name):
            return w.get(p + name)

        qkv_b = None
        if get("self_attn.q_proj.bias") is not None:
            qkv_b = torch.cat([get("self_attn.q_proj.bias"), get("self_attn.k_proj.bias"),
                               get("self_attn.v_proj.bias")])
        gate_up_b = None
        if get("mlp.gate_proj.bias") is not None:
            gate_up_b = torch.cat([get("mlp.gate_proj.bias"), get("mlp.up_proj.bias")])
        if not fuse:
            return dict(ln1=get("input_layernorm.weight"), ln2=get("post_attention_layernorm.weight"),
                        qkv=None, qkv_b=qkv_b, o=None, o_b=get("self_attn.o_proj.bias"), gate_up=None,
                        gate_up_b=gate_up_b, down=None, down_b=get("mlp.down_proj.bias"))
        return dict(
            ln1=get("input_layernorm.weight"), ln2=get("post_attention_layernorm.weight"),
            qkv=torch.cat([get("self_attn.q_proj.weight"), get("self_attn.k_proj.weight"),
                           get("self_attn.v_proj.weight")]).contiguous(), qkv_b=qkv_b,
            o=get("self_attn.o_proj.weight"), o_b=get("self_attn.o_proj.bias"),
            gate_up=torch.cat([get("mlp.gate_proj.weight"), get("mlp.up_proj.weight")]).contiguous(),
            gate_up_b=gate_up_b, down=get("mlp.down_proj.weight"), down_b=get("mlp.down_proj.bias"),
        )

    def _pack(self, w: dict, pack, head: bool = True, fuse: bool = True, blocks: list | None = None) -> None:
        """Each matmul weight (with its bias) becomes an fbgemm packed matrix (`pack(weight, bias, key)`: float16's
        `linear_prepack_fp16`, or `_pack_int8`): fewer bytes read per decode step, converted in registers.

        Packing costs 9-14 CPU ns per weight for float16 (1.2-1.9 CPU s for SmolLM2-135M), about 10 for int8
        (quantising included), so it runs in the background on every core (torch releases the GIL): the layers
        in order, each fused and packed by one job, then the output layer (unless `head` is False: it then stays
        float32). The constructor returns at once, so the tokenizer, the chat template and the caller's own
        start-up overlap the packing. A prompt's prefill (`forward` with `first_token`) runs layer i as soon as
        layer i is packed, on one core while the later layers are packed on the others, and takes its first
        token from the float32 output layer; the output layer's packing starts once that first prefill is done
        (or something waits for it, or HEAD_WAIT_SECONDS after the layers), so it takes no core from it. A
        decode step waits for everything. The packed matrices are the same whichever thread packs them and
        whenever, so outputs do not depend on the timing."""

        head_done, started = Future(), threading.Lock()

        def head_job():
            head_done.set_running_or_notify_cancel()
            try:
                if head:
                    self.lm_head = pack(self.lm_head, None, "head")
            except BaseException as exc:
                head_done.set_exception(exc)
            else:
                head_done.set_result(None)

        def start_head():
            # after the first prefill (it would slow it), once something waits for it, or HEAD_WAIT_SECONDS after
            # the layers if no prompt comes; no thread waits for that moment, so nothing delays the process's exit
            if started.acquire(blocking=False):
                try:
                    pool.submit(head_job)
                    pool.shutdown(wait=False)  # the workers end when the last job is done
                except RuntimeError:  # the interpreter is exiting (the timer's call): pack here
                    head_job()

        def layer(i):
            blk = blocks[i] if blocks is not None else self._block(w, i, fuse)
            cache = self.int8_cache
            if cache is not None and f"{i}.ln1" in cache:  # norms with the smoothing folded in (`_smooth`)
                blk["ln1"], blk["ln2"] = cache[f"{i}.ln1"], cache[f"{i}.ln2"]
            elif blocks is not None and self.int8_parts is not None:
                self.int8_parts[f"{i}.ln1"], self.int8_parts[f"{i}.ln2"] = blk["ln1"], blk["ln2"]
            for name in ("qkv", "o", "gate_up", "down"):
                blk[name], blk[name + "_b"] = pack(blk[name], blk[name + "_b"], f"{i}.{name}"), None
            self.blocks[i] = blk

        pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="skillweave-pack")
        layers = [pool.submit(layer, i) for i in range(self.layers)]
        self._start_head, self._pending = start_head, (head_done, layers)
        timer = threading.Timer(HEAD_WAIT_SECONDS, start_head)
        timer.daemon = True
        layers[-1].add_done_callback(lambda _: timer.start())

    def _smooth(self, w: dict, ids: list[int]) -> list[dict]:
        """Fused float32 blocks with activation outliers moved into the weights (SmoothQuant, Xiao et al. 2023).

        Per-row int8 activations lose precision where a few channels are far larger than the rest, as in the
        residual stream of a Llama. One float32 pass over `ids` records each input channel's largest |x| at the
        q/k/v, gate/up and down projections; each channel k gets s_k = sqrt(max|x_k| / max|W[:, k]|) (strength
        INT8_SMOOTH = 0.5), the matrix's column k is multiplied by s_k and its input divided by it, the division
        folded into what produces that input: the norm weight before q/k/v and before gate/up, and the up
        projection's row k before down. In exact arithmetic the model is unchanged; the int8 rounding is shared
        between weights and activations. The output projection is not smoothed (a division per channel cannot
        be folded into value heads shared by several query heads), nor the output layer (measured worse)."""
        torch = self.torch
        blocks = [self._block(w, i) for i in range(self.layers)]
        peaks: dict[int, object] = {}
        F = torch.nn.functional

        def record(x, weight, bias=None):
            peak = x.reshape(-1, x.shape[-1]).abs().amax(0)
            old = peaks.get(id(weight))
            peaks[id(weight)] = peak if old is None else torch.maximum(old, peak)
            return F.linear(x, weight, bias)

        saved, self.blocks, self._linear = self.blocks, blocks, record  # the instance attribute shadows the method
        keep = []
        try:
            with torch.no_grad():
                self.forward(torch.tensor([ids]), torch.arange(len(ids))[None],
                             lambda layer, k, v: keep.append((k, v)),
                             lambda layer, q: F.scaled_dot_product_attention(
                                 q, *keep[layer], is_causal=True, enable_gqa=self.kv_heads != self.heads),
                             first_token=True)
        finally:
            del self._linear
            self.blocks = saved

        def factors(weight):
            x = peaks[id(weight)].clamp(min=1e-5)
            return (x.pow(INT8_SMOOTH) / weight.abs().amax(0).clamp(min=1e-5).pow(1 - INT8_SMOOTH)).clamp(min=1e-5)

        for blk in blocks:
            s1, s2, s3 = factors(blk["qkv"]), factors(blk["gate_up"]), factors(blk["down"])
            blk["ln1"], blk["qkv"] = blk["ln1"] / s1, blk["qkv"] * s1
            blk["ln2"], gate_up = blk["ln2"] / s2, blk["gate_up"] * s2
            inter = blk["down"].shape[1]
            gate_up[inter:] /= s3[:, None]
            blk["gate_up"], blk["down"] = gate_up, blk["down"] * s3
            if blk["gate_up_b"] is not None:
                blk["gate_up_b"] = torch.cat([blk["gate_up_b"][:inter], blk["gate_up_b"][inter:] / s3])
        return blocks

    def _pack_int8(self, weight, bias, key: str = ""):
        """int8 weights, one scale per output channel (symmetric: the row's largest |w| maps to int8_weight_max()),
        packed for fbgemm's `quantized::linear_dynamic`. The bias is kept apart in float32 (`_linear_int8`).
        With an int8 cache, the matrix `key` comes from it (already quantised) and `weight` is not used."""
        torch = self.torch
        _quantized_warning_seen()  # already raised by the constructor on its own thread
        if self.int8_cache is not None:
            ints, scale = self.int8_cache[key], self.int8_cache[key + ".scale"]
        else:
            top = int8_weight_max()
            scale = (weight.abs().amax(1) / top).clamp(min=1e-12)
            ints = torch.clamp(torch.round(weight / scale[:, None]), -top, top).to(torch.int8)
            if self.int8_parts is not None:
                self.int8_parts[key], self.int8_parts[key + ".scale"] = ints, scale
        qweight = torch._make_per_channel_quantized_tensor(ints, scale.double(),
                                                           torch.zeros(ints.shape[0], dtype=torch.long), 0)
        return _Int8Linear(torch.ops.quantized.linear_prepack(qweight, None), bias)

    def wait_packed(self) -> None:
        """Wait until every weight is packed (a no-op when packing is done or was not needed); raises what a
        packing job raised."""
        pending = self._pending
        if pending is not None:
            self._start_head()
            for future in pending[1]:
                future.result()
            pending[0].result()
            self._pending = None

    def _linear(self, x, weight, bias=None):
        if isinstance(weight, _Int8Linear):
            return self._linear_int8(x, weight)
        if isinstance(weight, self.torch.ScriptObject):  # fbgemm fp16 packed (bias inside)
            return self.torch.ops.quantized.linear_dynamic_fp16(x, weight)
        if weight.dtype == x.dtype:
            return self.torch.nn.functional.linear(x, weight, bias)
        return self.torch.nn.functional.linear(x.to(weight.dtype), weight, bias).to(x.dtype)

    def _linear_int8(self, x, weight: _Int8Linear):
        """x @ W.T (+ bias) with W int8 per output channel and x quantised per row (per token) to uint8.

        fbgemm's `linear_dynamic` picks one scale for its whole input, so each row's result would depend on the
        other rows of the batch (and batched would differ from alone). Here each row is divided by its own
        largest |x|, and the row [1, -1, 0, ...] goes first, so the input always spans exactly [-1, 1]: every row
        is quantised with the same fixed scale relative to its own range, i.e. per row, and the product is
        multiplied back by the row's largest |x|. A row's result is therefore the same in any batch.
        Accumulation is int32 inside fbgemm; dequantisation and the rest stay float32."""
        torch = self.torch
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        rows = x2.shape[0]
        key = (shape[-1], threading.get_ident())  # one buffer per thread: decode lanes run on two
        buffer = self._ends.get(key)
        if buffer is None or buffer.shape[0] <= rows:  # row 0: the ends of the range; rows 1..: the input
            buffer = torch.zeros((max(rows + 1, 64), shape[-1]))
            buffer[0, 0], buffer[0, 1] = 1.0, -1.0
            self._ends[key] = buffer
        peak = x2.abs().amax(-1, keepdim=True).clamp_(min=1e-30)
        torch.div(x2, peak, out=buffer[1: rows + 1])
        y = torch.ops.quantized.linear_dynamic(buffer[: rows + 1], weight.packed, INT8_REDUCE_RANGE)[1:]
        y = y.mul_(peak) if weight.bias is None else torch.addcmul(weight.bias, y, peak)
        return y.view(*shape[:-1], y.shape[-1])

    def _rms(self, x, weight):
        # torch's rms_norm is x * rsqrt(mean(x^2) + eps) * weight in one call (the same operations, so the same
        # bits as transformers' LlamaRMSNorm in float32); older torch spells it out
        if hasattr(self.torch.nn.functional, "rms_norm"):
            return self.torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, self.eps)
        x = x * self.torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x

    def _rope(self, positions):
        """cos, sin of shape [B, T, head_dim] for integer positions [B, T]; sin's first half negated (`_rotate`)."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = self.torch.cat([freqs, freqs], dim=-1)
        sin = emb.sin()
        sin[..., : freqs.shape[-1]].neg_()
        return emb.cos(), sin

    def _rotate(self, x, cos, signed_sin):
        """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], with the same bits in fewer operations: the
        halves swapped ([x2, x1], one `roll`) times sin with its first half negated, since (-a) * b = a * (-b)
        exactly; the products and the sum are computed in place (4 operations per layer instead of 7)."""
        rotated = self.torch.roll(x, x.shape[-1] // 2, -1).mul_(signed_sin)
        return (x * cos).add_(rotated)

    def forward(self, ids, positions, kv_write, attend, first_token: bool = False, every_position: bool = False):
        """One forward pass over ids [B, T]; returns the last position's logits [B, vocab] (with
        `every_position`, every position's: [B, T, vocab], for a step that verifies drafted tokens).

        kv_write(layer, k, v) stores this step's keys/values ([B, kv heads, T, head dim]) and attend(layer, q)
        returns the attention output [B, heads, T, head dim] for queries q. With `first_token` (a prompt's
        prefill) the logits come from the float32 output layer whatever the weights' type: one row per prompt
        costs little, and the first reply need not wait for the output layer's packing; while the weights are
        still being packed, each layer waits for its own packing only (`_pack`). Decode steps wait for all of
        it and use the output layer in the weights' type. The rule depends on the call, never on the timing.
        """
        pending = self._pending
        if pending is not None and not first_token:  # weights still being packed in the background
            self.wait_packed()
            pending = None
        F = self.torch.nn.functional
        B, T = ids.shape
        x = F.embedding(ids, self.embed)
        cos, sin = self._rope(positions)
        cos, sin = cos[:, :, None], sin[:, :, None]  # [B, T, 1, D]: one rotation for the q and k heads together
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        for layer in range(self.layers):
            if pending is not None:  # a prefill: layer i waits for layer i's packing only
                pending[1][layer].result()
            blk = self.blocks[layer]
            h = self._rms(x, blk["ln1"])
            qkv = self._linear(h, blk["qkv"], blk["qkv_b"])
            qk = self._rotate(qkv[..., : (H + KV) * D].view(B, T, H + KV, D), cos, sin)
            q, k = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2)
            v = qkv[..., (H + KV) * D:].view(B, T, KV, D).transpose(1, 2)
            kv_write(layer, k, v)
            a = attend(layer, q).transpose(1, 2).reshape(B, T, H * D)
            x = x.add_(self._linear(a, blk["o"], blk["o_b"]))  # x is this forward's own tensor: added in place
            h = self._rms(x, blk["ln2"])
            gate, up = self._linear(h, blk["gate_up"], blk["gate_up_b"]).chunk(2, dim=-1)
            x = x.add_(self._linear(F.silu(gate).mul_(up), blk["down"], blk["down_b"]))
        if pending is not None:  # the first prefill is done: the output layer packs now
            self._start_head()
        last = self._rms(x if every_position else x[:, -1], self.norm)
        return self._linear(last, self.head32 if first_token else self.lm_head)


# ---- rows and the KV cache -----------------------------------------------------------------------------
PREFIX_MIN_TOKENS = 16  # shorter shared prefixes are recomputed
PREFIX_BUDGET_BYTES = 128 << 20  # keys/values kept for prefix sharing (about 2,900 positions of SmolLM2-135M)
# Prompt lookup (SKILLWEAVE_LOCAL_LOOKUP=K, default 4): the n-gram lengths tried for a row's draft, longest first.
# Simulated on the Skill-Mix chain's recorded greedy outputs (benchmarks/prompt_lookup.py), n = 2..3 with K = 4
# drafts saves about 65% of the decode steps per row.
LOOKUP_NGRAMS = (3, 2)
LOOKUP_DEFAULT = 4  # draft tokens per row and step when $SKILLWEAVE_LOCAL_LOOKUP is unset
# With two or more torch threads, a verify step (prompt lookup: several positions per row) runs its rows in two lanes
# on two threads (`Engine._lane_split`). One-token decode steps stay one pass: on the idle machine lanes gave them
# 0.91x the tokens/s at 1.27x the CPU per token (short workload; Skill-Mix chain 1.01x at 1.14x), and verify steps
# 1.17x (benchmarks/local_model.py, docs/benchmarks.md).
LANES = True
# ... and only when its rows feed at least this many positions each on average: a step with few drafts (short
# prompts, where the gate rarely drafts) ran in lanes at 0.93-0.95x the tokens/s of no prompt lookup against 0.98x
# in one pass (idle machine, benchmarks/local_model.py --workload short, "engine fp16 lookup one-lane").
LANES_MIN_FED = 2.0
# With the native kernel (`Engine._native_attend`) and two or more torch threads (`adaptive_threads`: the other
# processes leave at least half the cores idle), a one-token step's attention runs its rows in two halves, the
# second on the lane thread (the kernel itself is one thread; the step's matmuls keep torch's threads). One step's
# attention (8 rows, 200-600 columns) took 1.41-1.48x less wall time in two halves with the second core free, 0.87-0.89x
# with it busy (benchmarks/local_model.py --native); the Skill-Mix chain ran at 1.03x the tokens/s (1.07x less CPU per
# token) on a quiet machine.
KERNEL_ONE_TOKEN_LANES = True
# A native engine's prefills can attend with the kernel too (one row: its new tokens over the prompt's columns). Off:
# on the Skill-Mix chain's prompts, one thread, it took 1.43x less attention CPU than torch's causal SDPA (3.42
# against 4.89 s) but only 1.9% less prefill CPU, and the kernel runs on one thread where SDPA uses all of torch's
# (benchmarks/local_model.py --replay-profile with BENCH_PREFILL_KERNEL=1).
PREFILL_KERNEL = False
# The KV cache of float16/int8/bfloat16 engines in bfloat16 without SKILLWEAVE_LOCAL_KV (`kv_dtype_name`), where
# oneDNN has bfloat16 kernels. Off: on the idle machine (prompt lookup on) the Skill-Mix chain ran at 1.18x, 1.11x
# and 1.02x the tokens/s of the float32 cache in three runs and short prompts at 1.01x and 0.86x, short of the
# steady 1.15x that would justify texts that part from float16's (37/48 and 10/24 identical; docs/benchmarks.md).
KV_BFLOAT16_DEFAULT = False
KV_WINDOW_STEP = 64  # a bfloat16 step's window width is a multiple of this (`Engine._window`)
# With two or more torch threads, a turn that admits requests while rows are decoding prefills them on a second thread
# while this one keeps decoding (`Engine._prefill_alongside`). Off: measured only on a shared machine so far
# (docs/benchmarks.md, "Where a Skill-Mix chain run's time goes").
PREFILL_ALONGSIDE = False


# The gate: a row drafts only while drafting pays. Each row keeps an estimate of the chance that a drafted token
# is kept given the ones before it (`_Row.kept`, an exponential moving average of its own outcomes with weight
# LOOKUP_RATE, starting at LOOKUP_PRIOR; while a row does not draft, the first token of the draft it would have sent
# is checked against the token the step gives, so a row that starts repeating itself drafts again). The j-th
# drafted token is worth kept**j tokens and costs `lookup_position_cost`: a verified position's CPU over a one-token
# step's CPU per row, at the row's length (LOOKUP_COSTS). A draft is sent only while each of its tokens is worth
# its position, and the whole draft is worth LOOKUP_DRAFT_COST more (the verify step's own overhead per row). The
# values were chosen by replaying the recorded outputs of both benchmark workloads (benchmarks/prompt_lookup.py
# --gate). The decision depends on the row's own tokens only, never on the batch, so a seeded sampled row's text is
# the same in any batch.
LOOKUP_PRIOR = 0.6
LOOKUP_RATE = 0.2
LOOKUP_DRAFT_COST = 0.2
# Sampled rows (temperature > 0) draft only with LOOKUP_SAMPLED: their drafts are verified exactly
# (`_accept_sampled`), and only where they pay for the step (`Engine._sampled_drafts`), but on the Skill-Mix chain
# sampled at 0.7 their drafts supply 4-22% of the tokens (greedy rows' 56%), worth at most 4% of the row-steps:
# 1.11x less, 1.08x more and 1.13x less CPU per token than no drafts in three seeded pairs on a shared machine
# (1.07x more before the step-level check; docs/benchmarks.md), so they get none by default.
LOOKUP_SAMPLED = False
# The cost model, CPU ms on the embedded model at 8 rows, float16: a one-token step costs a row 4.8 plus 0.0067 per
# column of its own (SDPA reads its keys and values for one query; 7.4 ms at 392 columns, measured with one
# thread), a verified position 4.0 plus 0.0 per column (its matmuls cost nearly a prefill token's, and the verify
# step's attention and bookkeeping come with it). The verify figures are fitted so that replaying the recorded
# outputs of both workloads with every match drafted (benchmarks/prompt_lookup.py --gate) gives the ratios measured
# end to end without a gate: short prompts 0.84x, the Skill-Mix chain 1.19x (docs/benchmarks.md). So a drafted
# token must be kept with a chance of at least 0.73 at 100 columns, 0.54 at 400, 0.39 at 800.
LOOKUP_COSTS = (4.0, 0.0, 4.8, 0.0067)
# ... which holds where most rows of a verify step draft (greedy rows on the Skill-Mix chain). A verify step also
# gives every row as many query positions as the longest draft: a row feeding fewer positions pays for its unused
# ones in the attention (and the mask) anyway. Measured at 8 rows, float16, one thread (a shared machine):
# about 0.7 CPU ms per unused query position at 300 columns and 2.0 at 855, against 7.3 and 9.8 for a row's
# one-token step, so a lone row's draft of 4 costs the step 28 unused positions. LOOKUP_PAD_COSTS: CPU ms per unused
# position, a + b per column of the step's window; sampled rows' drafts are verified only when they pay for it
# (`Engine._sampled_drafts`).
LOOKUP_PAD_COSTS = (0.3, 0.002)


def _in_row_steps(ms: float, ms_per_column: float, columns: int) -> float:
    """A cost of `ms` + `ms_per_column` per column, in one-token steps of one row `columns` tokens long
    (LOOKUP_COSTS' last two figures)."""
    _, _, step, step_per_column = LOOKUP_COSTS
    return (ms + ms_per_column * columns) / (step + step_per_column * columns)


def lookup_position_cost(columns: int) -> float:
    """A verified position's cost in one-token steps of one row, for a row `columns` tokens long."""
    return _in_row_steps(*LOOKUP_COSTS[:2], columns)


def lookup_draft_length(kept: float, room: int, columns: int = 0) -> int:
    """How many tokens (at most `room`) a row `columns` tokens long drafts when each drafted token is kept with
    chance `kept`, given the ones before it: the longest draft whose every token is worth its position; 0 when the
    expected gain of the whole draft does not pay LOOKUP_DRAFT_COST."""
    cost = lookup_position_cost(columns)
    length, gain, chance = 0, 0.0, 1.0
    while length < room:
        chance *= kept
        if chance < cost:
            break
        length += 1
        gain += chance - cost
    return length if length and gain >= LOOKUP_DRAFT_COST else 0


def lookup_pad_cost(columns: int) -> float:
    """An unused query position of a verify step (a row feeding fewer positions than the longest), in one-token steps
    of one row, for a window `columns` wide."""
    return _in_row_steps(*LOOKUP_PAD_COSTS, columns)


def lookup_sampled_gain(drafts: list[tuple[float, int, int]], rows: int, others: int, columns: int) -> float:
    """What verifying sampled rows' drafts gains a step, in one-token steps of one row (> 0: they pay): `drafts`
    holds each drafting sampled row's (kept estimate, draft length, length in tokens); the step has `rows` rows,
    the longest of the other rows' drafts is `others` tokens (0: none, the step would be a one-token step), and
    its window is `columns` wide. Each drafted token is worth kept**j and costs its position
    (`lookup_position_cost`); every unused query position the drafts add to the step costs `lookup_pad_cost`."""
    gain, longest, drafted = 0.0, others, 0
    for kept, length, position in drafts:
        cost = lookup_position_cost(position)
        gain += sum(kept ** j - cost for j in range(1, length + 1))
        longest, drafted = max(longest, length), drafted + length
    return gain - (rows * (longest - others) - drafted) * lookup_pad_cost(columns)


def lookup_learn(kept: float, accepted: int, rejected: bool) -> float:
    """`kept` after `accepted` drafted tokens were kept and then (`rejected`) one was not."""
    kept = 1.0 - (1.0 - kept) * (1.0 - LOOKUP_RATE) ** accepted
    return kept * (1.0 - LOOKUP_RATE) if rejected else kept


def lookup_setting(default: int = LOOKUP_DEFAULT) -> int:
    """$SKILLWEAVE_LOCAL_LOOKUP: how many tokens prompt lookup may draft per row and decode step (unset: `default`;
    0: no drafts). A ConfigError for anything but an integer from 0 to 16; reads no model."""
    from skillweave.errors import ConfigError

    value = os.environ.get("SKILLWEAVE_LOCAL_LOOKUP") or str(default)
    try:
        k = int(value)
    except ValueError:
        k = -1
    if not 0 <= k <= 16:
        raise ConfigError(f"SKILLWEAVE_LOCAL_LOOKUP '{value}': expected a number of draft tokens from 0 (off) to 16")
    return k


def kv_setting() -> str | None:
    """$SKILLWEAVE_LOCAL_KV, the KV cache's type for float16, int8 and bfloat16 weights: bfloat16 or float32 (None
    when unset: `kv_dtype_name` picks). A ConfigError for anything else; reads no model and imports no torch."""
    from skillweave.errors import ConfigError

    name = os.environ.get("SKILLWEAVE_LOCAL_KV") or None
    if name is not None and name not in ("bfloat16", "float32"):
        raise ConfigError(f"SKILLWEAVE_LOCAL_KV '{name}': expected bfloat16 or float32")
    return name


def kv_dtype_name(weights: str) -> str:
    """The KV cache's type for an engine whose matmul weights are `weights`: float32 for float32 weights (whose
    tokens stay transformers'), else $SKILLWEAVE_LOCAL_KV, by default float32 (bfloat16 where KV_BFLOAT16_DEFAULT is
    on and oneDNN has bfloat16 kernels on this CPU). See `Engine` for what a bfloat16 cache changes."""
    if weights == "float32":
        return "float32"
    name = kv_setting()
    if name is None:
        import torch

        name = "bfloat16" if KV_BFLOAT16_DEFAULT and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    return name


def _lazy_zeros(torch, shape: tuple[int, ...], dtype=None):
    """A tensor of zeros (float32 unless `dtype`) in fresh anonymous memory, which the kernel maps page by page as
    it is first touched: a new KV cache (8 rows x 30 layers, 107 MB in float32 for the first request) costs its
    page faults over the steps that use its columns instead of `torch.zeros`' fill of every page up front (50-100
    ms measured, inside the first reply's time)."""
    dtype = dtype or torch.float32
    count = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(mmap.mmap(-1, size * count), dtype=dtype, count=count).view(shape)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class GenRequest:
    """One chat request: its prompt ids, how many rows (n), and what each row produced."""

    prompt_ids: list[int]
    n: int = 1
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = None
    outputs: list[list[int]] = field(default_factory=list)
    rows_left: int = 0
    dropped: bool = False
    token: object = None  # the caller's handle (the provider's future)


@dataclass
class _Row:
    request: GenRequest
    index: int
    position: int  # position of the next token to write
    last: int  # last generated token (fed at the next step)
    generated: list[int]
    generator: object = None
    ngrams: dict | None = None  # prompt lookup: n-gram -> index after its latest occurrence in prompt + generated
    indexed: int = 0  # how much of prompt + generated `ngrams` covers
    kept: float = -1.0  # the gate's estimate that a drafted token is kept (-1: none yet, LOOKUP_PRIOR)
    shadow: int = -1  # first token of the draft the gate withheld at the last step, checked against the token given


class Engine:
    """Decode batch with a KV cache laid out by position; `step` advances every row by one token.

    Layout: slot b holds row b's key and value for position p at column p, so its keys are the columns
    [0, position); `hi` is the longest row's position (0 with no rows) and a step attends over [0, hi + fed
    tokens), each row masked past its own end (`_length_mask`). Columns at or past a row's position hold nothing
    of the row's (an earlier row's keys, or drafts a verify step did not keep) and are never attended: the next
    write at that position replaces them.

    `kv_dtype` ("float32" or "bfloat16", `kv_dtype_name`): the type the cache stores keys and values in. With
    bfloat16 (half the bytes a decode step reads for them) each key/value is rounded once when it is written, and
    every attention reads the rounded values: a prefill computes in float32 over them (so prefix sharing's saved
    keys, also bfloat16, give what a whole-prompt prefill gives), while decode and verify steps multiply in
    bfloat16 (oneDNN; float32 accumulation) with a float32 softmax (`_attention`). A float32 cache is unchanged:
    the native kernel (`native`, `_native_attend`) where the engine asks for it and it builds, else torch's attention
    for one-token steps and float32 matmuls for verify steps."""

    def __init__(self, model: LlamaLite, tokenizer: ChatTokenizer, eos_ids: set[int], max_rows: int = 8,
                 share_prefixes: bool = False, kv_dtype: str = "float32", lookup_default: int = LOOKUP_DEFAULT,
                 native: bool = False):
        import torch

        self.torch = torch
        self.kv_dtype = getattr(torch, kv_dtype)
        # decode and verify steps over a float32 cache attend with the native kernel (`_native`) when asked for
        # and it builds; else torch's attention. False until the first step looks (None: it was not available).
        self.native = native and self.kv_dtype == torch.float32
        self._kernel = False
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_rows = max_rows
        self.rows: list[_Row] = []
        self.cap = 0
        self.hi = 0  # the longest row's position: a step attends over [0, hi + the positions it feeds)
        self.k = self.v = None
        self.finished: list[GenRequest] = []
        self.steps = 0  # decode steps run (tests and benchmarks)
        self.prefilled = 0  # prompt tokens run through prefill (tests and benchmarks)
        # Prompt lookup: up to `lookup` drafted tokens per row and step (as the gate allows), verified in one
        # forward pass (`_verify`); 0: off. `drafted`/`accepted` count draft tokens (tests and benchmarks).
        self.lookup = lookup_setting(lookup_default)
        self.drafted = self.accepted = 0
        self._lane_pool: ThreadPoolExecutor | None = None  # the second lane's thread (`_in_lanes`)
        self._prefill_pool: ThreadPoolExecutor | None = None  # prefills beside decode steps (`_prefill_alongside`)
        self.lock = threading.Lock()  # one generating thread at a time, whichever provider asks
        # Keys/values of recent prompts and finished rows, reused for a new prompt that starts with the same
        # tokens (a shared system prompt or template head, or a follow-up turn that repeats the conversation).
        # Off for float32 weights, whose outputs stay bit-for-bit those of a whole-prompt prefill.
        self.share_prefixes = share_prefixes
        self.prefixes: list[tuple[list[int], list, list]] = []  # (ids, keys, values), most recent first

    # -- layout
    def _allocate(self, rows: int, cap: int) -> None:
        """New buffers of `rows` slots and `cap` columns; the rows' keys/values (columns [0, hi)) move over."""
        torch, m = self.torch, self.model
        shape = (rows, m.kv_heads, cap, m.head_dim)
        k = [_lazy_zeros(torch, shape, self.kv_dtype) for _ in range(m.layers)]
        v = [_lazy_zeros(torch, shape, self.kv_dtype) for _ in range(m.layers)]
        b, hi = len(self.rows), self.hi
        if self.k is not None and hi and b:
            for layer in range(m.layers):
                k[layer][:b, :, :hi] = self.k[layer][:b, :, :hi]
                v[layer][:b, :, :hi] = self.v[layer][:b, :, :hi]
        self.k, self.v, self.cap = k, v, cap

    def _make_room(self, rows: int, columns: int) -> None:
        """Ensure `rows` slots and `columns` columns."""
        if self.k is not None and rows <= self.k[0].shape[0] and columns <= self.cap:
            return
        slots = max(rows, self.k[0].shape[0] if self.k is not None else 0, self.max_rows)
        self._allocate(slots, max(columns, self.hi) + 256)

    def _reach(self) -> None:
        """`hi` after rows moved on, joined or left: the longest row's position."""
        self.hi = max((row.position for row in self.rows), default=0)

    def _remove(self, slot: int) -> None:
        """Drop the row in `slot`; the last row moves into its place (its columns before its position)."""
        last = len(self.rows) - 1
        if slot != last:
            n = self.rows[last].position
            for layer in range(self.model.layers):
                self.k[layer][slot, :, :n] = self.k[layer][last, :, :n]
                self.v[layer][slot, :, :n] = self.v[layer][last, :, :n]
            self.rows[slot] = self.rows[last]
        self.rows.pop()

    def _window(self, end: int) -> int:
        """The columns a bfloat16 step attends over: [0, end) widened to the right to a multiple of
        KV_WINDOW_STEP columns (no row owns the extra ones, so they are masked) where the buffer has them, so that
        consecutive steps share a width and oneDNN reuses its kernels for it instead of preparing new ones for
        every width."""
        width = -(-end // KV_WINDOW_STEP) * KV_WINDOW_STEP
        return width if width <= self.cap else end

    def _length_mask(self, ends, T: int, width: int):
        """The additive mask [rows, 1, T, width] of a step's queries: query j of row b sees the columns before
        ends[b] + j (0 there, -inf elsewhere); `ends` [rows] is each row's length including the step's first fed
        token."""
        torch = self.torch
        limit = ends[:, None, None] + torch.arange(T)[None, :, None]  # [rows, T, 1]
        hidden = torch.arange(width)[None, None, :] >= limit
        return torch.zeros((len(ends), 1, T, width)).masked_fill_(hidden[:, None], float("-inf"))

    def _attention(self, q, keys, values, mask=None):
        """Attention of queries q [B, heads, T, head dim] (float32) over cached keys/values [B, kv heads, L, head
        dim], with an additive float32 mask [B, 1, T, L] (or None): each key/value head's group of query heads and
        their T positions as one matrix, two matmuls per layer in the cache's type (bfloat16: oneDNN, float32
        accumulation, scores rounded to bfloat16) with the softmax in float32. Returns float32 [B, heads, T, head
        dim]. Each row is computed on its own, so a row's result does not depend on the batch."""
        torch, m = self.torch, self.model
        B, H, T, D = q.shape
        KV, L = m.kv_heads, keys.shape[-2]
        if keys.dtype != torch.float32:  # torch's bfloat16 matmul copies a strided window slowly: copy it first
            keys, values = keys.contiguous(), values.contiguous()
        grouped = (q * D ** -0.5).to(keys.dtype).reshape(B, KV, H // KV * T, D)
        scores = torch.matmul(grouped, keys.transpose(-1, -2)).float().view(B, KV, H // KV, T, L)
        if mask is not None:
            scores = scores.add_(mask[:, :, None])
        probs = torch.softmax(scores, dim=-1).to(values.dtype).view(B, KV, H // KV * T, L)
        return torch.matmul(probs, values).view(B, H, T, D).float()

    def _native(self):
        """The native attention kernel (providers/native.py) for this engine's steps, or None: the engine was not
        asked for it (float32 weights, a bfloat16 cache), SKILLWEAVE_LOCAL_KERNEL=torch, or it does not build
        here. Looked up at the first step, once."""
        if self._kernel is False:
            from skillweave.providers.native import attention_kernel

            m = self.model
            fits = m.head_dim % 8 == 0 and m.heads % m.kv_heads == 0  # what the kernel computes
            self._kernel = attention_kernel() if self.native and fits else None
        return self._kernel

    def _native_attend(self, kernel, layer: int, q, rows, s: int, e: int, out=None):
        """Attention of the fed positions q [n, heads, head dim] (rows s .. e - 1 one after another; `rows` [e - s,
        3] int64: each row's first index in q, its count and the position of its first fed token) over the rows'
        own cached columns, with the kernel: no padding to the longest row or the longest draft. Returns [n,
        heads, head dim] (written into `out` if given, contiguous); each row is computed on its own, so its
        result does not depend on the batch."""
        out = q.new_empty(q.shape) if out is None else out
        kernel.attention(rows, q, self.k[layer][s:e], self.v[layer][s:e], out, self.model.head_dim ** -0.5)
        return out

    def _lane_thread(self) -> ThreadPoolExecutor:
        """The second lane's thread (one torch thread), started at first use."""
        if self._lane_pool is None:
            torch = self.torch
            self._lane_pool = ThreadPoolExecutor(1, thread_name_prefix="skillweave-lane",
                                                 initializer=lambda: torch.set_num_threads(1))
        return self._lane_pool

    # -- scheduling
    @property
    def free_rows(self) -> int:
        return self.max_rows - len(self.rows)

    def _choose(self, logits, temperature: float, generator) -> int:
        """Greedy (temperature 0) or sampled from softmax(logits / temperature) by its inverse CDF at one uniform
        draw from the row's generator: one draw per token, so prompt lookup's verification, which samples each
        verified position the same way (`_accept_sampled`), leaves the generator where one-token steps would."""
        torch = self.torch
        if temperature <= 0:
            return int(torch.argmax(logits))
        cdf = torch.cumsum(torch.softmax(logits / temperature, dim=-1), 0)
        u = torch.tensor([self._uniform(generator) * float(cdf[-1])])
        return min(int(torch.searchsorted(cdf, u, right=True)[0]), len(cdf) - 1)

    def _prefix(self, ids: list[int]) -> tuple[int, list, list]:
        """The longest stored prefix of `ids` (at least PREFIX_MIN_TOKENS, at most all but the last token):
        its length and its keys and values per layer ([kv heads, length, head dim])."""
        best, entry = 0, None
        if self.share_prefixes:
            for candidate in self.prefixes:
                n = _common_prefix(candidate[0], ids)
                if n > best:
                    best, entry = n, candidate
        best = min(best, len(ids) - 1)
        if best < PREFIX_MIN_TOKENS:
            return 0, [], []
        self.prefixes = [entry] + [e for e in self.prefixes if e is not entry]
        return best, [k[:, :best] for k in entry[1]], [v[:, :best] for v in entry[2]]

    def _remember(self, ids: list[int], keys: list, values: list) -> None:
        """Keep a sequence's keys/values (most recent first) within PREFIX_BUDGET_BYTES; an entry that is a
        prefix of the new one is dropped."""
        if not self.share_prefixes or len(ids) < PREFIX_MIN_TOKENS:
            return
        self.prefixes = [e for e in self.prefixes if _common_prefix(e[0], ids) < len(e[0])]
        self.prefixes.insert(0, (ids, keys, values))
        per_token = sum(k.element_size() * k[:, 0].numel() for k in keys) * 2
        budget = PREFIX_BUDGET_BYTES // max(1, per_token)
        kept, used = [], 0
        for entry in self.prefixes:
            if used + len(entry[0]) > budget and kept:
                break
            kept.append(entry)
            used += len(entry[0])
        self.prefixes = kept

    def add(self, request: GenRequest) -> None:
        """Prefill the prompt once and add `n` rows for it (each picks its first token)."""
        torch, m = self.torch, self.model
        ids = request.prompt_ids
        T = len(ids)
        if T == 0:
            raise ValueError("empty prompt")
        if T >= m.max_positions:
            raise ValueError(f"prompt of {T} tokens exceeds the model's {m.max_positions} positions")
        request.outputs = [[] for _ in range(request.n)]
        request.rows_left = request.n
        b = len(self.rows)
        self._make_room(b + request.n, T + 1)
        shared, past_k, past_v = self._prefix(ids)
        keys, values = [], []

        def kv_write(layer, k, v):  # rounded to the cache's type once; the attention below reads what is stored
            k, v = k.to(self.kv_dtype), v.to(self.kv_dtype)
            keys.append(torch.cat([past_k[layer][None], k], dim=2) if shared else k)
            values.append(torch.cat([past_v[layer][None], v], dim=2) if shared else v)

        # with a shared prefix, query i (position shared + i) sees keys 0 .. shared + i
        kernel = self._native() if PREFILL_KERNEL else None
        if kernel is not None:  # one row: T - shared queries, the first at position `shared`
            span = torch.tensor([[0, T - shared, shared]])
        causal = torch.ones(T - shared, T, dtype=torch.bool).tril(shared) if shared and kernel is None else None

        def attend(layer, q):
            if kernel is not None:
                flat = q[0].transpose(0, 1)
                out = flat.new_empty(flat.shape)
                kernel.attention(span, flat, keys[layer], values[layer], out, m.head_dim ** -0.5)
                return out.transpose(0, 1)[None]
            return torch.nn.functional.scaled_dot_product_attention(
                q, keys[layer].to(q.dtype), values[layer].to(q.dtype), attn_mask=causal, is_causal=not shared,
                enable_gqa=m.kv_heads != m.heads)

        with torch.no_grad():
            logits = m.forward(torch.tensor([ids[shared:]]), torch.arange(shared, T)[None], kv_write, attend,
                               first_token=True)[0]
        self.prefilled += T - shared
        # copies: k and v are views into the whole projection output, which would stay alive with them
        self._remember(list(ids), [k[0].contiguous() for k in keys], [v[0].contiguous() for v in values])
        for i in range(request.n):
            slot = b + i
            for layer in range(m.layers):  # position p at column p
                self.k[layer][slot, :, :T] = keys[layer][0]
                self.v[layer][slot, :, :T] = values[layer][0]
            generator = None
            if request.temperature > 0 and request.seed is not None:
                generator = torch.Generator().manual_seed(int(request.seed) + i)
            row = _Row(request, i, T, -1, [], generator)
            row.last = self._choose(logits, request.temperature, generator)
            self.rows.append(row)
        self.hi = max(self.hi, T)
        self._finish_rows(b)

    def _finish_rows(self, first: int = 0) -> list[GenRequest]:
        """Record the last token of the rows from slot `first` on; remove rows that hit EOS or their limit.
        Returns the requests that finished."""
        done = []
        for slot in range(len(self.rows) - 1, first - 1, -1):
            row = self.rows[slot]
            request = row.request
            ended = request.dropped or row.last in self.eos_ids
            if not ended:
                row.generated.append(row.last)
            if (ended or len(row.generated) >= request.max_tokens
                    or row.position >= self.model.max_positions):
                if self.share_prefixes and not request.dropped:  # the conversation so far, for a follow-up turn
                    n = row.position  # the row's keys: columns [0, position), nothing else
                    keys = [k[slot, :, :n].clone() for k in self.k]
                    values = [v[slot, :, :n].clone() for v in self.v]
                    self._remember(request.prompt_ids + row.generated[: row.position - len(request.prompt_ids)],
                                   keys, values)
                request.outputs[row.index] = row.generated
                request.rows_left -= 1
                self._remove(slot)
                if request.rows_left == 0 and not request.dropped:
                    done.append(request)
        self._reach()
        self.finished.extend(done)
        return done

    def step(self) -> None:
        """Advance every row by one token (with prompt lookup, a row by up to `lookup` + 1 tokens)."""
        torch, m = self.torch, self.model
        B = len(self.rows)
        if not B:
            return
        if self.lookup:
            drafts = [self._draft(row) for row in self.rows]
            if LOOKUP_SAMPLED and any(drafts):
                drafts = self._sampled_drafts(drafts)
            if any(drafts):
                self._verify(drafts)
                return
        end = self.hi + 1  # the longest row's keys and the one this step writes
        self._make_room(B, end)
        ids = torch.tensor([[r.last] for r in self.rows])
        at = torch.tensor([r.position for r in self.rows])  # each row writes at its own position's column
        positions = at[:, None]
        slots = torch.arange(B)
        sdpa, gqa = torch.nn.functional.scaled_dot_product_attention, m.kv_heads != m.heads
        # a float32 cache: the native kernel (`_native_attend`) or torch's attention; a bfloat16 one: grouped
        # bfloat16 matmuls (`_attention`)
        kernel, split = self._native(), 0
        fast = self.kv_dtype != torch.float32
        width = self._window(end) if fast else end
        if kernel is not None:  # row b: one query at position at[b]
            rows = torch.stack([slots, torch.ones_like(slots), at], 1)
            # with two torch threads, rows [split, B) on the lane thread (halving the columns read)
            split = self._lane_split((at + 1).tolist()) if KERNEL_ONE_TOKEN_LANES else 0
            if split:
                high = torch.stack([slots[: B - split], torch.ones_like(slots[split:]), at[split:]], 1)
        else:  # additive mask built once per step (SDPA would convert a boolean mask in each layer): [0, at + 1)
            mask = self._length_mask(at + 1, 1, width)

        def kv_write(layer, k, v):  # one indexed store per layer: row b's key at column at[b]
            self.k[layer][slots, :, at] = k[:, :, 0].to(self.kv_dtype)
            self.v[layer][slots, :, at] = v[:, :, 0].to(self.kv_dtype)

        def attend(layer, q):
            if kernel is not None and split:
                flat = q[:, :, 0]
                out = flat.new_empty(flat.shape)
                job = self._lane_thread().submit(self._native_attend, kernel, layer, flat[split:], high, split, B,
                                                 out[split:])
                self._native_attend(kernel, layer, flat[:split], rows[:split], 0, split, out[:split])
                job.result()
                return out[:, :, None]
            if kernel is not None:
                return self._native_attend(kernel, layer, q[:, :, 0], rows, 0, B)[:, :, None]
            keys, values = self.k[layer][:B, :, :width], self.v[layer][:B, :, :width]
            if fast:
                return self._attention(q, keys, values, mask)
            return sdpa(q, keys, values, attn_mask=mask, enable_gqa=gqa)

        # one pass over all rows: two lanes (`_lane_split`) cost one-token steps more CPU per token than they gained
        with torch.no_grad():
            logits = m.forward(ids, positions, kv_write, attend)
        self.steps += 1
        greedy = logits.argmax(-1).tolist()  # one call for the batch; sampled rows draw their own below
        for i, row in enumerate(self.rows):
            row.position += 1
            temperature = row.request.temperature
            row.last = greedy[i] if temperature <= 0 else self._choose(logits[i], temperature, row.generator)
        self._finish_rows()

    # -- lanes: a verify step's rows in two halves on two threads
    def _lane_split(self, sizes: list[int]) -> int:
        """Where a step's rows split into two lanes (0: one pass). With two or more torch threads (an idle
        machine, `adaptive_threads`) and LANES on, the rows split where the positions they feed are halved; each
        lane runs on its own thread with one torch thread. A row's result does not depend on its lane: every
        matmul and the attention compute each row on its own."""
        if not LANES or len(sizes) < 2 or self.torch.get_num_threads() < 2:
            return 0
        total, run = sum(sizes), 0
        for b, size in enumerate(sizes[:-1]):
            run += size
            if 2 * run >= total:
                return b + 1
        return len(sizes) - 1

    def _in_lanes(self, forward, rows: int, split: int):
        """forward(0, rows), or forward(0, split) on this thread and forward(split, rows) on the lane thread, one
        torch thread each, concatenated (small operations keep both cores busy, where torch's own threads
        would wait on each other between them)."""
        if not split:
            return forward(0, rows)
        torch = self.torch
        pool = self._lane_thread()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            other = pool.submit(forward, split, rows)
            first = forward(0, split)
            return torch.cat([first, other.result()])
        finally:
            torch.set_num_threads(threads)

    # -- prompt lookup
    def _draft(self, row: _Row) -> list[int]:
        """A row's draft: the tokens that followed the latest earlier occurrence of the last n tokens of its
        prompt + output (n in LOOKUP_NGRAMS, longest first), at most `lookup`, no more than the row may still
        write, and as many as the gate lets through (`lookup_draft_length` on the row's `kept`). Dropped rows get
        none, nor do sampled rows unless LOOKUP_SAMPLED."""
        request = row.request
        if request.dropped or (request.temperature > 0 and not LOOKUP_SAMPLED):
            return []
        if row.kept < 0:
            row.kept = LOOKUP_PRIOR
        if row.shadow >= 0:  # the gate withheld a draft at the last step: was its first token the one given?
            row.kept = lookup_learn(row.kept, int(row.shadow == row.last), row.shadow != row.last)
            row.shadow = -1
        room = min(self.lookup, request.max_tokens - len(row.generated) - 1,
                   self.model.max_positions - 1 - row.position)
        if room <= 0:
            return []
        guess = self._guess(row, room)
        if not guess:
            return []
        length = lookup_draft_length(row.kept, len(guess), row.position)
        if not length:
            row.shadow = guess[0]
        return guess[:length]

    def _sampled_drafts(self, drafts: list[list[int]]) -> list[list[int]]:
        """The step's drafts with those of sampled rows kept only where they pay for the step
        (`lookup_sampled_gain`): of the sampled rows with a draft, the ones whose drafts gain most on their own
        go first, and the best such group (possibly none) is verified; the others' drafts are withheld and their
        first tokens checked as the gate checks a withheld draft (`_Row.shadow`). A sampled row's tokens do not
        depend on this (each is its own inverse-CDF sample either way), only the step's cost does; greedy rows'
        drafts are left as their gate set them."""
        rows = self.rows
        sampled = [b for b, d in enumerate(drafts) if d and rows[b].request.temperature > 0]
        if not sampled:
            return drafts
        others = max((len(d) for b, d in enumerate(drafts) if rows[b].request.temperature <= 0), default=0)
        columns = self.hi + 1
        B = len(rows)

        def facts(b):
            return rows[b].kept, len(drafts[b]), rows[b].position

        sampled.sort(key=lambda b: -lookup_sampled_gain([facts(b)], B, others, columns))
        best, chosen = 0.0, 0
        for n in range(1, len(sampled) + 1):
            gain = lookup_sampled_gain([facts(b) for b in sampled[:n]], B, others, columns)
            if gain > best:
                best, chosen = gain, n
        if chosen == len(sampled):
            return drafts
        drafts = list(drafts)
        for b in sampled[chosen:]:
            rows[b].shadow = drafts[b][0]
            drafts[b] = []
        return drafts

    def _guess(self, row: _Row, room: int) -> list[int]:
        """Up to `room` tokens that followed the latest earlier occurrence of the last n tokens of the row's
        prompt + output (n in LOOKUP_NGRAMS, longest first); the row's n-gram index grows as it writes."""
        request = row.request
        context = request.prompt_ids + row.generated  # ends with row.last, the token this step feeds
        size = len(context)
        index = row.ngrams
        if index is None:
            index = row.ngrams = {}
        for end in range(max(row.indexed, 1), size):  # n-grams that now have a following token
            for n in LOOKUP_NGRAMS:
                if end >= n:
                    index[tuple(context[end - n: end])] = end
        row.indexed = size
        for n in LOOKUP_NGRAMS:
            if size > n:
                follow = index.get(tuple(context[size - n:]))
                if follow is not None:
                    return context[follow: follow + room]
        return []

    def _accept_sampled(self, logits, draft: list[int], temperature: float, generator) -> list[int]:
        """Speculative sampling for a sampled row with a draft (`logits`: its 1 + len(draft) positions): each
        position's token is sampled as a one-token step samples it (`_choose`, one uniform draw), and the drafted
        token is kept when the sample is that token; at the first that is not, the row takes the sample and stops
        there; after a draft kept whole, the last position's sample is one more token. So drafted token t is kept
        with probability p(t) (p the row's sampling distribution at that position, softmax of logits /
        temperature), a token not kept is distributed as p without t, renormalised (the draft being one fixed
        guess), and, the draws being used in the same order, the row's tokens are those it samples without
        prompt lookup from the same generator. Returns the tokens the row gets (the kept drafted ones first)."""
        picks = []
        for j, token in enumerate(draft):
            picks.append(self._choose(logits[j], temperature, generator))
            if picks[-1] != token:
                return picks
        picks.append(self._choose(logits[len(draft)], temperature, generator))
        return picks

    def _uniform(self, generator) -> float:
        """One uniform draw in [0, 1) from the row's generator (tests replace it)."""
        return float(self.torch.rand((), generator=generator))

    def _verify(self, drafts: list[list[int]]) -> None:
        """One forward pass over each row's last token and its draft (rows without a draft feed one token):
        a greedy row keeps the drafted tokens that equal what greedy decoding picks after the tokens before them,
        plus the pick after the last kept one, and a sampled row what `_accept_sampled` keeps, token by token as
        `step` would (a stop token or the row's limit ends it there); each row's outcome updates its gate. Row b's
        fed tokens are written at the columns of their positions, position .. position + len - 1; only the kept
        ones count (the row's position moves past them), so the columns of tokens not kept lie past the row's end,
        are never attended, and the next step's write replaces them: no row is left with gaps."""
        torch, m = self.torch, self.model
        B = len(self.rows)
        fed = [[row.last] + d for row, d in zip(self.rows, drafts, strict=True)]
        T = max(len(f) for f in fed)
        at = torch.tensor([row.position for row in self.rows])
        end = max(row.position + len(f) for row, f in zip(self.rows, fed, strict=True))
        self._make_room(B, self.hi + T)
        # The rows' fed tokens side by side as one sequence (no padding through the matmuls, whose cost grows with
        # the positions): token i belongs to row owner[i], at offset[i] after the row's last token (column and
        # position at[owner] + offset). Attention per row over [0, end): query j sees the columns before
        # at + j + 1 (a bfloat16 cache: over a window widened as `step` widens it, the extra columns masked).
        kernel = self._native()
        width = self._window(end) if self.kv_dtype != torch.float32 else end
        mask = self._length_mask(at + 1, T, width) if kernel is None else None
        H, D = m.heads, m.head_dim

        def forward(s, e):  # rows s .. e - 1 (a lane runs on one torch thread)
            owner = torch.tensor([b for b in range(s, e) for _ in fed[b]])
            offset = torch.tensor([j for b in range(s, e) for j in range(len(fed[b]))])
            ids = torch.tensor([[t for b in range(s, e) for t in fed[b]]])
            columns = at[owner] + offset
            positions = columns[None]
            if kernel is not None:  # the kernel's rows: first index, count, position of the first fed token
                counts = torch.tensor([len(fed[b]) for b in range(s, e)])
                spans = torch.stack([counts.cumsum(0) - counts, counts, at[s:e]], 1)

            def kv_write(layer, k, v):  # [1, kv heads, positions, head dim] -> each row's columns
                self.k[layer][owner, :, columns] = k[0].transpose(0, 1).to(self.kv_dtype)
                self.v[layer][owner, :, columns] = v[0].transpose(0, 1).to(self.kv_dtype)

            def attend(layer, q):
                if kernel is not None:  # each row's own fed positions over its own columns, nothing padded
                    return self._native_attend(kernel, layer, q[0].transpose(0, 1), spans, s, e).transpose(0, 1)[None]
                # queries laid out per row (unused ones zero), each key/value head's group of query heads with
                # their T positions as one matrix: two matmuls per layer, where torch's CPU attention measured
                # about 1.9x slower for several query positions (docs/benchmarks.md)
                rows = q.new_zeros((e - s, H, T, D))
                rows[owner - s, :, offset] = q[0].transpose(0, 1)
                out = self._attention(rows, self.k[layer][s:e, :, :width], self.v[layer][s:e, :, :width], mask[s:e])
                return out[owner - s, :, offset].transpose(0, 1)[None]

            with torch.no_grad():
                return m.forward(ids, positions, kv_write, attend, every_position=True)[0]

        sizes = [len(f) for f in fed]  # lanes only for steps that verify at least LANES_MIN_FED positions per row
        logits = self._in_lanes(forward, B, self._lane_split(sizes) if sum(sizes) >= LANES_MIN_FED * B else 0)
        flat = logits.argmax(-1).tolist()
        first = 0
        for row, draft in zip(self.rows, drafts, strict=True):
            pick = flat[first: first + 1 + len(draft)]
            temperature = row.request.temperature
            if temperature > 0 and draft:
                pick = self._accept_sampled(logits[first: first + 1 + len(draft)], draft, temperature,
                                            row.generator)
            elif temperature > 0:  # no draft: one token, sampled as `step` samples it
                pick = [self._choose(logits[first], temperature, row.generator)]
            first += 1 + len(draft)
            agree = 0
            while agree < len(draft) and draft[agree] == pick[agree]:
                agree += 1
            if draft:
                row.kept = lookup_learn(row.kept, agree, agree < len(draft))
            self.drafted += len(draft)
            request, used = row.request, 0
            for j in range(agree + 1):
                used += 1  # the token fed at column position + j stays in the row
                row.position += 1
                row.last = pick[j]
                if j == agree or (row.last in self.eos_ids or len(row.generated) + 1 >= request.max_tokens
                                  or row.position >= m.max_positions):
                    break  # `_finish_rows` records this pick as it does after a one-token step
                row.generated.append(row.last)
            self.accepted += used - 1
        self.steps += 1
        self._finish_rows()

    def reset(self) -> None:
        self.rows.clear()
        self.hi = 0

    def run(self, admit: list[GenRequest], *, budget_s: float, want_slots=lambda: False) -> list[GenRequest]:
        """Admit new requests, then decode until a request finishes, the budget is spent, or a waiting
        request could take a freed row. Returns the requests that finished (their rows' token ids)."""
        with self.lock:
            self.finished = []
            threads = adaptive_threads()  # prefills too run with the current choice, on whichever thread calls run
            if admit and self.rows and PREFILL_ALONGSIDE and threads >= 2:
                self._prefill_alongside(admit, threads)
            else:
                for request in admit:
                    self.add(request)
            deadline = time.perf_counter() + budget_s
            while self.rows and not self.finished and time.perf_counter() < deadline:
                adaptive_threads()
                self.step()
                if self.free_rows > 0 and want_slots():
                    break
            return self.finished

    def _prefill_alongside(self, admit: list[GenRequest], threads: int) -> None:
        """`add` the admitted requests on a second thread (one torch thread) while this thread keeps decoding the
        rows already in the batch (one torch thread), then move the new rows in (`_adopt`): both cores do work of
        their own, with no barrier between small operations, and the rows do not stall during the prefills.

        The prefills run on a copy of this engine with buffers of its own (`add` unchanged), starting from this
        engine's stored prefixes; a row's tokens do not depend on the step at which it joins the batch."""
        torch = self.torch
        side = self._side_engine()
        if self._prefill_pool is None:
            self._prefill_pool = ThreadPoolExecutor(1, thread_name_prefix="skillweave-prefill")

        def prefill():
            torch.set_num_threads(1)
            for request in admit:
                side.add(request)
            return side

        future = self._prefill_pool.submit(prefill)
        torch.set_num_threads(1)
        try:
            while self.rows and not future.done():
                self.step()
        finally:
            torch.set_num_threads(threads)
        self._adopt(future.result())

    def _side_engine(self) -> Engine:
        """A shallow copy of this engine with no rows and no buffers (so `add` on it allocates its own), sharing the
        model, tokenizer and settings, and holding a copy of the list of stored prefixes."""
        import copy

        side = copy.copy(self)
        side.rows, side.finished, side.prefixes = [], [], list(self.prefixes)
        side.known = {id(entry) for entry in self.prefixes}  # what `_adopt` need not remember again
        side.k = side.v = None
        side.cap, side.hi, side.prefilled = 0, 0, 0
        side.max_rows, side.lock = 1, threading.Lock()
        return side

    def _adopt(self, side: Engine) -> None:
        """Move the rows that `side` prefilled into this batch: their keys and values at the same columns (a row's
        position p at column p), as `add` would have placed them; what `side` finished and remembered is carried
        over."""
        new = [e for e in side.prefixes if id(e) not in side.known]  # remembered by the side's prefills
        for entry in reversed(new):  # oldest first, so the newest ends in front
            self._remember(*entry)
        self.prefilled += side.prefilled
        self.finished.extend(side.finished)
        n = len(side.rows)
        if not n:
            return
        width, b = side.hi, len(self.rows)
        self._make_room(b + n, width + 1)
        for layer in range(self.model.layers):
            self.k[layer][b: b + n, :, :width] = side.k[layer][:n, :, :width]
            self.v[layer][b: b + n, :, :width] = side.v[layer][:n, :, :width]
        self.rows.extend(side.rows)
        self._reach()

    def generate(self, requests: list[GenRequest]) -> list[GenRequest]:
        """Run requests to completion (tests and benchmarks): all admitted that fit, the rest as rows free up."""
        waiting = list(requests)
        while waiting or self.rows:
            admit = []
            free = self.free_rows
            while waiting and (waiting[0].n <= free or (not self.rows and not admit)):
                free -= waiting[0].n
                admit.append(waiting.pop(0))
            self.run(admit, budget_s=3600, want_slots=lambda: bool(waiting))
        return requests


# ---- threads --------------------------------------------------------------------------------------------
_threads_state = {"checked": 0.0, "proc": None}


def _others_busy_cores(state: dict) -> float | None:
    """Cores used by other processes since the last call: busy CPU time from /proc/stat minus our own."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / hz
    now, own = time.monotonic(), time.process_time()
    previous, state["proc"] = state["proc"], (now, busy, own)
    if previous is None or now - previous[0] < 0.2:
        return None
    return max(0.0, ((busy - previous[1]) - (own - previous[2])) / (now - previous[0]))


def adaptive_threads(force: bool = False) -> int:
    """Re-check at most every THREAD_CHECK_SECONDS while generating: $SKILLWEAVE_TORCH_THREADS if set; else every
    core while other processes leave at least half the cores idle, one thread when they do not. Our own CPU
    time is subtracted, so the model's own threads never count as load."""
    import torch


    now = time.monotonic()
    if force or "threads" not in _threads_state or now - _threads_state["checked"] >= THREAD_CHECK_SECONDS:
        _threads_state["checked"] = now
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if os.environ.get("SKILLWEAVE_TORCH_THREADS"):
            _threads_state["threads"] = local_torch_threads(cores)
        else:
            others = _others_busy_cores(_threads_state)
            _threads_state["threads"] = (local_torch_threads(cores) if others is None
                                         else 1 if others >= cores / 2 else cores)
    # OpenMP keeps the count per OS thread and generation runs on whichever worker thread asyncio picks, so the
    # decision is applied to the calling thread every time (a cheap comparison when nothing changed).
    threads = _threads_state["threads"]
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


# ---- loading --------------------------------------------------------------------------------------------
_LOAD_LOCK = threading.Lock()


def load_engine(spec: str = "local", max_rows: int = 8) -> Engine | None:
    """The engine for a model spec, loaded once per process; None if this folder needs transformers."""
    with _LOAD_LOCK:
        dtype = local_dtype_name()
        return _load_engine(spec, max_rows, dtype, kv_dtype_name(dtype))


def start_loading(spec: str = "local", max_rows: int = 8) -> threading.Thread | None:
    """Start `load_engine` in a background thread (the `local` provider calls this when it is built), so the
    imports, the weights, the tokenizer and the float16 packing overlap whatever the caller does before its
    first request, which then waits for the same load (one per process) instead of starting it.

    Only where the weights are already prepared: the first use's dequantisation (about 20 s, with a message)
    stays with the first request. An error here is not raised: the first request loads again and raises it.
    The thread is not a daemon, so a process that ends meanwhile waits for the load (a few seconds) rather
    than stopping the interpreter under it. Returns the thread, or None when nothing was started."""
    if os.environ.get("SKILLWEAVE_LOCAL_ENGINE") == "transformers" or not _prepared(spec):
        return None

    def load():
        try:
            load_engine(spec, max_rows)
        except Exception:  # the first request repeats the load and reports the error
            pass

    thread = threading.Thread(target=load, name="skillweave-local-load")
    thread.start()
    return thread


def _prepared(spec: str) -> bool:
    """Whether `spec`'s weights can be loaded without preparing them first (no dequantisation)."""
    from skillweave.providers.local_model import EMBEDDED_NAME, cache_dir

    if spec in ("local", "embedded", EMBEDDED_NAME):
        folder = cache_dir() / EMBEDDED_NAME
    else:
        folder = Path(spec).expanduser()
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


@lru_cache(maxsize=4)
def _load_engine(spec: str, max_rows: int, dtype: str, kv: str = "float32") -> Engine | None:
    from skillweave.providers.local_model import resolve_model_path

    path = resolve_model_path(spec)
    try:
        config = json.loads((path / "config.json").read_text())
        if not (path / "model.safetensors").exists() or not (path / "tokenizer.json").exists():
            raise _Unsupported("no single model.safetensors or tokenizer.json")
        if config.get("model_type") != "llama":
            raise _Unsupported("not a Llama-architecture model")
        import torch
        from safetensors.torch import load_file

        # The weights (torch releases the GIL while copying and packing them) load while the tokenizer and the
        # chat template are built.
        cache_file = _int8_cache_file(path) if dtype == "int8" else None
        int8_cache = read_int8_cache(path, cache_file, _int8_keys(config)) if cache_file else None
        if dtype == "int8" and int8_cache is None and INT8_SMOOTH is not None:  # first load: calibrate
            tokenizer = ChatTokenizer(path)
            model = LlamaLite(config, load_file(str(path / "model.safetensors")), dtype=torch.int8,
                              keep_int8=cache_file is not None,
                              calibration=tokenizer.encode(tokenizer.chat_prompt(INT8_CALIBRATION)))
        else:
            with ThreadPoolExecutor(1) as pool:
                weights = pool.submit(lambda: LlamaLite(config, load_file(str(path / "model.safetensors")),
                                                        dtype=getattr(torch, dtype), int8_cache=int8_cache,
                                                        keep_int8=cache_file is not None and int8_cache is None))
                tokenizer = ChatTokenizer(path)
                model = weights.result()
        if model.int8_parts is not None:  # written once packing is done; the next process reads it
            threading.Thread(target=write_int8_cache, args=(path, cache_file, model),
                             name="skillweave-int8-cache").start()
    except _Unsupported:
        return None
    eos: set[int] = set()
    for source in (config, _read_json(path / "generation_config.json")):
        value = source.get("eos_token_id")
        eos.update(value if isinstance(value, list) else [] if value is None else [value])
    adaptive_threads(force=True)
    # float32 weights are the reference whose tokens are transformers' bit for bit: no shared prefixes, and prompt
    # lookup (whose verify steps agree with one-token steps only up to near-ties) only when asked for
    exact = dtype == "float32"
    return Engine(model, tokenizer, eos, max_rows=max_rows, share_prefixes=not exact, kv_dtype=kv,
                  lookup_default=0 if exact else LOOKUP_DEFAULT, native=not exact)


INT8_CACHE_FORMAT = 2


def _int8_cache_file(path: Path) -> Path | None:
    """Where the int8 form of a model is kept: only for the embedded model, whose folder skillweave prepared in
    its own cache directory (a folder of the user's own is never written to)."""
    from skillweave.providers.local_model import EMBEDDED_NAME, cache_dir

    try:
        if path.resolve() != (cache_dir() / EMBEDDED_NAME).resolve():
            return None
    except OSError:
        return None
    return path / "int8-weights.safetensors"


def _int8_stamp(path: Path) -> str:
    """What the cached int8 weights were made from: the float weights' file (size, mtime) and the int8 format."""
    stat = (path / "model.safetensors").stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{int8_weight_max()}:{INT8_SMOOTH}:{INT8_CACHE_FORMAT}"


def _int8_keys(config: dict) -> set[str]:
    """The tensors an int8 cache holds: each layer's four matrices and their scales, the output layer's where
    decode steps use int8, and the smoothed norm weights."""
    layers = range(config["num_hidden_layers"])
    keys = {f"{i}.{name}" for i in layers for name in ("qkv", "o", "gate_up", "down")} | ({"head"} if INT8_HEAD else set())
    keys |= {key + ".scale" for key in keys}
    return keys | ({f"{i}.{ln}" for i in layers for ln in ("ln1", "ln2")} if INT8_SMOOTH is not None else set())


def read_int8_cache(path: Path, file: Path, keys: set[str]) -> dict | None:
    """The cached int8 matrices and scales (memory-mapped), or None when there are none for these weights (a
    missing, stale, incomplete or unreadable file: the weights are then quantised again and the file
    rewritten)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(file), "pt") as f:
            if (f.metadata() or {}).get("stamp") != _int8_stamp(path):
                return None
            if not keys <= set(f.keys()):
                return None
        return load_file(str(file))
    except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
        return None


def write_int8_cache(path: Path, file: Path, model: LlamaLite) -> None:
    """After packing, save the int8 matrices and scales the load computed (atomically; a failure to write leaves
    no file and is not an error: the next load quantises again)."""
    from safetensors.torch import save_file

    try:
        model.wait_packed()
    except Exception:  # noqa: BLE001 - the first request reports a packing error
        return
    parts, model.int8_parts = model.int8_parts, None
    if not parts:
        return
    staging = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        save_file({k: v.contiguous() for k, v in parts.items()}, str(staging), metadata={"stamp": _int8_stamp(path)})
        os.replace(staging, file)
    except OSError:
        staging.unlink(missing_ok=True)


def local_dtype_name() -> str:
    """$SKILLWEAVE_LOCAL_DTYPE, the matmul weights' type: float16 (the default where torch has fbgemm, i.e. x86-64
    with AVX2; packed for fbgemm, activations and accumulation stay float32), int8 (fbgemm too: int8 weights per
    output channel, activations quantised per row, int32 accumulation), float32 (the weights as prepared; the
    default elsewhere) or bfloat16. docs/models.md says how far the other types' outputs are from float32's;
    within each type, batched equals unbatched."""
    from skillweave.errors import ConfigError

    name = check_dtype_setting() or ("float16" if fp16_kernels() else "float32")
    if name in ("float16", "int8") and not fp16_kernels():
        raise ConfigError(f"SKILLWEAVE_LOCAL_DTYPE {name} needs torch's fbgemm kernels (x86-64 with AVX2); "
                          "use float32")
    return name


def check_dtype_setting() -> str | None:
    """$SKILLWEAVE_LOCAL_DTYPE if it names a weight type (None when unset); a ConfigError otherwise. Reads no
    model and imports no torch, so the CLI checks it before a run is created."""
    from skillweave.errors import ConfigError
    from skillweave.providers.native import kernel_setting

    lookup_setting()  # and $SKILLWEAVE_LOCAL_LOOKUP
    kv_setting()  # and $SKILLWEAVE_LOCAL_KV
    kernel_setting()  # and $SKILLWEAVE_LOCAL_KERNEL
    name = os.environ.get("SKILLWEAVE_LOCAL_DTYPE") or None
    if name is not None and name not in ("float32", "float16", "bfloat16", "int8"):
        raise ConfigError(f"SKILLWEAVE_LOCAL_DTYPE '{name}': expected float32, float16, bfloat16 or int8")
    return name


def local_dtype():
    import torch

    return getattr(torch, local_dtype_name())


def fp16_kernels() -> bool:
    """Whether this torch build and CPU have fbgemm's fp16-weight matmul (x86-64 with AVX2)."""
    import torch

    return "fbgemm" in torch.backends.quantized.supported_engines


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# ---- asyncio side: one scheduler per engine and event loop ---------------------------------------------
class Scheduler:
    """Feeds requests from any number of coroutines into one engine, continuously."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.waiting: list[GenRequest] = []
        self.worker: asyncio.Task | None = None

    async def submit(self, request: GenRequest) -> GenRequest:
        future = asyncio.get_running_loop().create_future()
        request.token = future
        self.waiting.append(request)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drive())
        try:
            return await future
        except asyncio.CancelledError:
            request.dropped = True  # its rows leave the batch at the next step
            raise

    async def _drive(self) -> None:
        engine = self.engine
        while self.waiting or engine.rows:
            admit, free = [], engine.free_rows
            while self.waiting and (self.waiting[0].n <= free or (not engine.rows and not admit)):
                request = self.waiting.pop(0)
                if request.token.done():
                    continue
                free -= request.n
                admit.append(request)
            try:
                finished = await asyncio.get_running_loop().run_in_executor(
                    engine_thread(engine), functools.partial(engine.run, admit, budget_s=0.25,
                                                             want_slots=lambda: bool(self.waiting)))
            except Exception as exc:  # a failed step fails the requests in the batch, not the process
                with engine.lock:
                    failed = admit + [r.request for r in engine.rows]
                    engine.reset()
                for request in failed:
                    _resolve(request, exc)
                continue
            for request in finished:
                _resolve(request)


def _resolve(request: GenRequest, exc: Exception | None = None) -> None:
    """Complete a request's future on its own event loop (rows of two loops may share one batch)."""
    future = request.token
    loop = future.get_loop()
    if loop.is_closed():
        return

    def complete():
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(request)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        complete()
    else:
        loop.call_soon_threadsafe(complete)


_SCHEDULERS: dict[tuple, Scheduler] = {}
_ENGINE_THREADS: dict[int, ThreadPoolExecutor] = {}


def engine_thread(engine: Engine) -> ThreadPoolExecutor:
    """The one thread that runs an engine's turns for every scheduler (any event loop). asyncio's default
    executor would hand turns to whichever of its workers is free: each such thread keeps its own torch (OpenMP)
    thread team and thread count, so a run of many turns woke and kept two or more teams (measured on the Skill-Mix
    chain: two workers took turns, 29% and 18% of a core, each with its own OpenMP worker), and the executor is
    shared with the caller's other `to_thread` work (store writes), which could hold a turn back."""
    pool = _ENGINE_THREADS.get(id(engine))
    if pool is None:
        pool = _ENGINE_THREADS.setdefault(id(engine), ThreadPoolExecutor(1, thread_name_prefix="skillweave-engine"))
    return pool


def scheduler(engine: Engine) -> Scheduler:
    loop = asyncio.get_running_loop()
    key = (id(engine), id(loop))
    if key not in _SCHEDULERS:
        for old_key, old in list(_SCHEDULERS.items()):  # rows left by a loop that has ended leave the batch
            if old.worker is None or old.worker.get_loop().is_closed():
                del _SCHEDULERS[old_key]
        with engine.lock:
            for row in engine.rows:
                if row.request.token is None or row.request.token.get_loop().is_closed():
                    row.request.dropped = True
        _SCHEDULERS[key] = Scheduler(engine)
    return _SCHEDULERS[key]
