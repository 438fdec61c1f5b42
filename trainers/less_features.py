"""LESS gradient features: masked chat encoding, per-example LoRA gradients, Adam preconditioning, projection.

Design choices
- Examples become chat `messages`; every non-assistant span (system, user, the assistant role tag) is masked
  by character offsets of the rendered chat template, so multi-turn rows and any template work alike.
  The loss is the **token mean** over an example's unmasked tokens (docs/methods.md#less-formulas).
- Per-example gradients come from one padded forward/backward per batch plus forward hooks on the LoRA
  `Linear` layers (the Opacus trick): for `y = x Wᵀ` the gradient of example n is `Σ_t gy[n,t]ᵀ x[n,t]`, with
  gy from `torch.autograd.grad` with respect to the recorded outputs. Examples never interact (right padding,
  causal attention, per-example loss), so this equals the batch-1 loop (`loop_gradients`) up to float
  rounding; tests/test_less.py proves it (L1). We use hooks rather than `torch.func.vmap(grad(...))`: with
  transformers 5.24, vmap over a Llama forward with a padding mask stops at data-dependent control flow in the
  mask construction (tried), while hooks stay exact for any model whose trainable parameters are LoRA weights.
  Plain fp32 peft LoRA Linear layers skip the hooks: during the batched pass they run as one Linear with the
  update merged into a copy of the weight, `x (W + s·B A)ᵀ`, and their LoRA gradients come from the recorded
  input and output gradient (`_MergedLora`); equal to the hooked path up to float rounding, and cheaper.
- Features are the concatenation of LoRA gradients in `named_parameters()` order (docs/methods.md#less-gradients).
- The Rademacher projector derives row r of Π from block r // 1024, seeded `(seed, block)` with numpy's PCG64,
  so Π is identical across calls, chunk sizes, checkpoints, and train/target sides. A large Π is streamed block
  by block and never held whole; one of at most 256 MB (`cache_bytes`) is generated once and kept.
- `TrakProjector` (`--projector trak`) calls TRAK's projector (package `traker`) with the arguments the LESS
  reference passes: CudaProjector when its `fast_jl` kernel runs on the CUDA device, else BasicProjector;
  Rademacher, block size 128, batch size 16, the model's dtype, model id 0, rows cast to fp16 first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from skillweave.errors import ConfigError, UsageError

IGNORE = -100


# ---- examples -------------------------------------------------------------------------------------------
def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages from a pool/target row: `messages`, `prompt`/`completion`, `instruction`/`response`,
    or Alpaca `instruction`/`input`/`output`."""
    if "messages" in row:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
        if not any(m["role"] == "assistant" for m in messages):
            raise UsageError(f"a `messages` row needs an assistant turn to learn from: {str(row)[:80]}")
        return messages
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
    elif "instruction" in row and ("output" in row or "response" in row):
        prompt = str(row["instruction"])
        if row.get("input"):
            prompt = f"{prompt}\n\n{row['input']}"
        completion = row["output"] if "output" in row else row["response"]
    else:
        raise UsageError(
            f"unrecognised row with keys {sorted(row)}; expected messages, prompt/completion, "
            "instruction/response or Alpaca instruction/input/output"
        )
    return [{"role": "user", "content": str(prompt)}, {"role": "assistant", "content": str(completion)}]


def tulu_text(messages: list[dict[str, str]], eos: str) -> str:
    """Messages in the tulu format the LESS reference trains and scores with (for models without a chat template):
    `<|user|>\\n{content}\\n<|assistant|>\\n{content}{EOS}\\n`, contents stripped."""
    parts = []
    for m in messages:
        if m["role"] == "assistant":
            parts.append("<|assistant|>\n" + m["content"].strip() + eos + "\n")
        else:
            parts.append(f"<|{m['role']}|>\n" + m["content"].strip() + "\n")
    return "".join(parts)


def encode_example(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]]:
    """Token ids and labels (-100 on every non-assistant span) of one conversation, truncated to max_length."""
    bos: list[int] = []
    if tokenizer.chat_template:
        render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)  # noqa: E731
    else:  # the reference's tulu format, BOS first, EOS closing every assistant turn
        render = lambda msgs, gen: tulu_text(msgs, tokenizer.eos_token or "") + ("<|assistant|>\n" if gen else "")  # noqa: E731
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix, upto = render(messages[:i], True), render(messages[: i + 1], False)
        if not upto.startswith(prefix):
            raise ConfigError("the chat template does not render conversations prefix-consistently; "
                              "use a model whose template appends turns")
        spans.append((len(prefix), len(upto)))
    text = render(messages, False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = (bos + list(encoded["input_ids"]))[:max_length]
    offsets = [(-1, -1)] * len(bos) + list(encoded["offset_mapping"])
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE
        for token, (begin, _) in zip(ids, offsets, strict=False)
    ]
    if all(label == IGNORE for label in labels):
        raise UsageError(f"an example has no response tokens within max_length={max_length}; raise --max-length "
                         f"(text starts: {text[:60]!r})")
    return {"input_ids": ids, "labels": labels}


def pad_batch(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ids (pad_id) and labels (-100) to the longest example; attention mask marks real tokens."""
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    real = torch.arange(int(lengths.max())) < lengths[:, None]  # (B, width), row-major like the flat lists
    ids = torch.full(real.shape, pad_id, dtype=torch.long)
    labels = torch.full(real.shape, IGNORE, dtype=torch.long)
    ids[real] = torch.tensor([t for e in examples for t in e["input_ids"]], dtype=torch.long)
    labels[real] = torch.tensor([t for e in examples for t in e["labels"]], dtype=torch.long)
    return {"input_ids": ids, "labels": labels, "attention_mask": real.long()}


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean next-token cross-entropy of each example over its unmasked tokens, shape (B,)."""
    from skillweave.trainers.devices import token_logps

    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = (labels != IGNORE).float()
    # -log p(label) as gather minus logsumexp in fp32, chunked over the sequence
    losses = -token_logps(logits, labels.clamp(min=0))
    return (losses * mask).sum(1) / mask.sum(1).clamp(min=1)


# ---- per-example gradients ------------------------------------------------------------------------------
def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable parameters in `named_parameters()` order; all must be LoRA weights."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters; wrap it with a LoRA adapter first")
    wrong = [n for n, _ in params if "lora_" not in n]
    if wrong:
        raise ConfigError(f"LESS features need only LoRA parameters to require grad; also trainable: {wrong[:3]}")
    return params


def loop_gradients(model: torch.nn.Module, examples: Sequence[dict[str, list[int]]]) -> torch.Tensor:
    """Reference path: one forward/backward per example (batch 1, no padding), shape (B, P)."""
    names_params = trainable_parameters(model)
    params = [p for _, p in names_params]
    rows = []
    device = params[0].device
    for e in examples:
        ids = torch.tensor([e["input_ids"]], device=device)
        logits = model(input_ids=ids).logits
        loss = per_example_loss(logits, torch.tensor([e["labels"]], device=device))[0]
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).float())
    return torch.stack(rows)


class _LinearCapture:
    """Records the inputs and outputs of one LoRA Linear layer during a batched forward (a forward hook)."""

    def __init__(self, module: torch.nn.Linear):
        if module.bias is not None and module.bias.requires_grad:
            raise ConfigError("trainable LoRA biases are not supported by the batched gradient path")
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self._forward)

    def _forward(self, module, args, output):
        self.inputs.append(args[0].detach())
        self.outputs.append(output)

    def remove(self) -> None:
        self.handle.remove()


MERGED_LORA_BYTES = 1 << 28  # most bytes of merged weight copies BatchedGradients keeps (256 MB)


class _MergedLora:
    """One peft LoRA Linear layer run, during a batched pass, as a single Linear with the update merged in.

    The layer computes `x Wᵀ + s·(x Aᵀ) Bᵀ`; here it computes `x (W + s·B A)ᵀ` (the same function up to float
    rounding) with a merged copy of the weight, so the forward skips the two thin LoRA products, the scaling and
    the sum, and the backward their gradients. Only the layer's input x and output are recorded; with gy the
    output's gradient, example n's LoRA gradients are ∂A = Σ_t (gy·sB)[n,t]ᵀ x[n,t] and ∂B = Σ_t gy[n,t]ᵀ
    (x·sAᵀ)[n,t]. The copy is rebuilt when W, A or B changed in place (their version counters), and the layer's
    own forward comes back on `remove()`.
    """

    def __init__(self, module: torch.nn.Module, adapter: str):
        self.module, self.base = module, module.base_layer
        self.A, self.B = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        self.scaling = float(module.scaling[adapter])
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self._versions: tuple[int, ...] | None = None
        self._merge()
        module.forward = self._forward  # an instance attribute: shadows the class's forward until remove()

    def _merge(self) -> None:
        versions = (self.base.weight._version, self.A._version, self.B._version)
        if versions != self._versions:
            with torch.no_grad():
                self.weight = torch.addmm(self.base.weight, self.B, self.A, alpha=self.scaling)
                self.sA, self.sB = self.A * self.scaling, self.B * self.scaling
            self._versions = versions

    def _forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs:
            raise ConfigError("the batched gradient path calls LoRA layers with one input only; use method=loop")
        self._merge()
        out = torch.nn.functional.linear(x, self.weight, self.base.bias)
        if not out.requires_grad:  # nothing below needs a gradient (first layer): the output becomes a leaf
            out.requires_grad_()
        self.inputs.append(x.detach())
        self.outputs.append(out)
        return out

    def remove(self) -> None:
        del self.module.forward


def _mergeable_lora(model: torch.nn.Module, params: Sequence[tuple[str, torch.nn.Parameter]],
                    budget: int) -> dict[int, tuple[torch.nn.Module, str, str]]:
    """{id(parameter): (layer, adapter, "A" or "B")} for the LoRA weights whose layer can run merged: a plain
    peft LoRA Linear (one active adapter, no variant such as DoRA, no LoRA bias, no active dropout) over an
    `nn.Linear`, fp32 weights (merging in bf16/fp16 would round the update into the base weight's precision),
    both A and B trainable; none when the merged copies would take more than `budget` bytes."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no peft: every LoRA weight keeps the hook path
        return {}
    trainable = {id(p) for _, p in params}
    found: dict[int, tuple[torch.nn.Module, str, str]] = {}
    size = 0
    for module in model.modules():
        if type(module) is not LoraLinear or "forward" in module.__dict__:
            continue
        adapters = [a for a in module.active_adapters if a in module.lora_A]
        if len(adapters) != 1 or module.merged or module.disable_adapters or module.fan_in_fan_out:
            continue
        adapter = adapters[0]
        A, B, base, dropout = (module.lora_A[adapter], module.lora_B[adapter], module.base_layer,
                               module.lora_dropout[adapter])
        weights = (base.weight, A.weight, B.weight)
        variant = adapter in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(adapter)
        if (variant or type(base) is not torch.nn.Linear or A.bias is not None
                or B.bias is not None or id(A.weight) not in trainable or id(B.weight) not in trainable
                or (dropout.training and getattr(dropout, "p", 0) > 0)
                or any(w.dtype != torch.float32 or w.device != base.weight.device for w in weights)):
            continue
        size += base.weight.numel() * 4
        found[id(A.weight)], found[id(B.weight)] = (module, adapter, "A"), (module, adapter, "B")
    return found if size <= budget else {}


def _by_example(t: torch.Tensor) -> torch.Tensor:
    """(B, ..., k) as (B, T, k): one row per position of each example (T = 1 for a (B, k) input)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left (B, o, T) @ right (B, T, i) → (B, o, i), example by example, as one batched matrix product.

    The product is formed with the smaller of o and i as its rows: for a LoRA B weight (o = hidden size, i = r)
    `rightᵀ leftᵀ` (B, r, o), returned as a transposed view, costs about a quarter of `left right` (B, o, r) on a
    CPU (tall, thin outputs make badly shaped small GEMMs); the values agree up to float rounding.
    """
    left, right = left.float(), right.float()
    if left.shape[1] <= right.shape[2]:
        return torch.bmm(left, right)
    return torch.bmm(right.transpose(1, 2), left.transpose(1, 2)).transpose(1, 2)


def _thin_product(weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`t (B, T, k) @ weightᵀ` for a weight (r, k) with few rows, returned as (B, r, T) (a permuted view).

    Formed as `weight @ tᵀ`, (r, B·T): the same sums as `t @ weightᵀ` (B·T, r), whose r-column output is the
    badly shaped case on a CPU (about 3x slower for r = 8)."""
    batch, positions = t.shape[0], t.shape[1]
    return (weight @ t.reshape(-1, t.shape[2]).T).view(weight.shape[0], batch, positions).permute(1, 0, 2)


def _key(x: torch.Tensor) -> tuple:
    return x.data_ptr(), tuple(x.shape), x.stride(), x.dtype


def _lora_inputs(sources: Sequence[_MergedLora]) -> dict[int, list[torch.Tensor]]:
    """{id(layer): [(x·sAᵀ)ᵀ, (B, r, T), per call]}, the transposed input of each merged layer's B; layers called
    once on one and the same x (q, k and v read the same normalised hidden state) get theirs from one product
    with their stacked sA."""
    found: dict[int, list[torch.Tensor]] = {}
    groups: dict[tuple, list[_MergedLora]] = {}
    for source in sources:
        if len(source.inputs) == 1:
            groups.setdefault(_key(source.inputs[0]), []).append(source)
        else:
            found[id(source)] = [_thin_product(source.sA, _by_example(x)) for x in source.inputs]
    for members in groups.values():
        x = _by_example(members[0].inputs[0])
        stacked = _thin_product(torch.cat([m.sA for m in members]) if len(members) > 1 else members[0].sA, x)
        start = 0
        for m in members:
            found[id(m)] = [stacked[:, start : start + m.sA.shape[0]]]
            start += m.sA.shape[0]
    return found


def _per_example_rows(slots: Sequence[tuple[Any, str | None]], grads: dict[int, Sequence[torch.Tensor]]) -> torch.Tensor:
    """(B, P): every trainable weight's per-example gradient, flattened, concatenated in `slots` order.

    `slots` holds, per weight, its source: a hooked LoRA Linear (`(capture, None)`) or one half of a merged layer
    (`(layer, "A")`, `(layer, "B")`); `grads[id(source)]` are the gradients of its recorded outputs. Each weight's
    gradient is a sum of terms `left (B, o, T) @ right (B, T, i)` (for a hooked layer gyᵀ and its input x, one
    per call). Weights with one term on one and the same right-hand side (the LoRA A matrices of q, k and v all
    read the layer's normalised hidden state) share one batched product: their left sides are stacked and
    multiplied once, `(B, Σo, T) @ (B, T, i)`, instead of one small product each. Every product is written
    straight into its columns of one preallocated (B, P) matrix (no list of pieces joined by a concatenation).
    """
    lora_inputs = _lora_inputs(list({id(s): s for s, part in slots if part is not None}.values()))
    terms: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for source, part in slots:
        gys = [_by_example(gy) for gy in grads[id(source)]]
        if not gys:
            raise ConfigError("a LoRA layer was not called by the model's forward; use method=loop")
        if part is None:
            terms.append([(gy.transpose(1, 2), _by_example(x)) for gy, x in zip(gys, source.inputs, strict=True)])
        elif part == "A":  # Σ_t (gy·sB)[t]ᵀ x[t]
            terms.append([(_thin_product(source.sB.T, gy), _by_example(x))
                          for gy, x in zip(gys, source.inputs, strict=True)])
        else:  # Σ_t gy[t]ᵀ (x·sAᵀ)[t]
            terms.append([(gy.transpose(1, 2), a.transpose(1, 2))
                          for gy, a in zip(gys, lora_inputs[id(source)], strict=True)])
    products: list[torch.Tensor | None] = [None] * len(slots)
    groups: dict[tuple, list[int]] = {}
    for k, pairs in enumerate(terms):
        if len(pairs) == 1:
            groups.setdefault(_key(pairs[0][1]), []).append(k)
        else:
            for left, right in pairs:
                g = _product(left, right)
                products[k] = g if products[k] is None else products[k] + g
    for members in groups.values():
        right = terms[members[0]][0][1]
        left = torch.cat([terms[k][0][0] for k in members], dim=1) if len(members) > 1 else terms[members[0]][0][0]
        product = _product(left, right)  # (B, Σo, i)
        start = 0
        for k in members:
            width = terms[k][0][0].shape[1]
            products[k] = product[:, start : start + width]
            start += width
    rows = torch.empty(products[0].shape[0], sum(p[0].numel() for p in products), dtype=torch.float32,
                       device=products[0].device)
    start = 0
    for p in products:
        width = p[0].numel()
        rows[:, start : start + width].view(p.shape).copy_(p)
        start += width
    return rows


class BatchedGradients:
    """Per-example LoRA gradients from one padded forward/backward per batch.

    The LoRA layers are prepared once (on entry) and restored on exit, so a datastore build pays for it once, not
    per batch: `with BatchedGradients(model) as grads: rows = grads(examples, pad_id)`. A plain peft LoRA Linear
    with fp32 weights runs merged (`_MergedLora`) while the merged copies fit in `merge_bytes` (default
    `MERGED_LORA_BYTES`; 0 turns merging off); every other LoRA weight gets a forward hook (`_LinearCapture`).
    The adapter may change inside the context (a merged copy is rebuilt when a weight changed in place).
    """

    def __init__(self, model: torch.nn.Module, merge_bytes: int | None = None):
        self.model = model
        self.merge_bytes = MERGED_LORA_BYTES if merge_bytes is None else merge_bytes
        self.captures: list[_LinearCapture | _MergedLora] = []  # every source, each once
        self.slots: list[tuple[_LinearCapture | _MergedLora, str | None]] = []  # per trainable weight, in order

    def __enter__(self) -> BatchedGradients:
        modules = dict(self.model.named_modules())
        try:
            params = trainable_parameters(self.model)
            mergeable = _mergeable_lora(self.model, params, self.merge_bytes) if self.merge_bytes > 0 else {}
            merged: dict[int, _MergedLora] = {}
            for name, param in params:
                if id(param) in mergeable:
                    layer, adapter, part = mergeable[id(param)]
                    if id(layer) not in merged:
                        merged[id(layer)] = _MergedLora(layer, adapter)
                        self.captures.append(merged[id(layer)])
                    self.slots.append((merged[id(layer)], part))
                    continue
                module_name, attr = name.rsplit(".", 1)
                module = modules[module_name]
                if attr != "weight" or not isinstance(module, torch.nn.Linear):
                    raise ConfigError(f"batched gradients support LoRA Linear weights only, not '{name}'; "
                                      "use method=loop")
                capture = _LinearCapture(module)
                self.captures.append(capture)
                self.slots.append((capture, None))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for c in self.captures:
            c.remove()
        self.captures = []
        self.slots = []

    def __call__(self, examples: Sequence[dict[str, list[int]]], pad_id: int) -> torch.Tensor:
        captures = self.captures
        try:
            device = next(self.model.parameters()).device
            batch = pad_batch(examples, pad_id)
            ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            # Logits only from the position before the first response token on (prompts need no vocab projection).
            start = max(min(next(i for i, t in enumerate(e["labels"]) if t != IGNORE) for e in examples) - 1, 0)
            # No attention mask: with right padding and causal attention no real token sees a pad, and pads carry
            # no loss, so their gy is 0 and they add nothing to any example's gradient. The model then takes its
            # plain causal path (no padding-mask construction, which also inspects the mask's values).
            logits = self.model(input_ids=ids, logits_to_keep=ids.shape[1] - start).logits
            total = per_example_loss(logits, labels[:, start:]).sum()
            # Gradients with respect to the recorded layer outputs only: the summed weight gradients are never formed.
            grads = torch.autograd.grad(total, [out for c in captures for out in c.outputs])
            by_source, position = {}, 0
            for c in captures:
                by_source[id(c)] = grads[position : position + len(c.outputs)]
                position += len(c.outputs)
            return _per_example_rows(self.slots, by_source)
        finally:
            for c in captures:
                c.inputs.clear()
                c.outputs.clear()


def batched_gradients(model: torch.nn.Module, examples: Sequence[dict[str, list[int]]], pad_id: int) -> torch.Tensor:
    """Per-example gradients of the token-mean loss from one padded forward/backward, shape (B, P)."""
    with BatchedGradients(model) as grads:
        return grads(examples, pad_id)


def length_batches(lengths: Sequence[int], max_examples: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped by length (shortest first): at most `max_examples` per batch and at most `max_tokens`
    padded tokens (batch size × longest), so a batch of long examples stays within memory. An example longer
    than `max_tokens` gets a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and (len(current) >= max_examples or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def example_gradients(model, examples, pad_id: int, method: str = "batched") -> torch.Tensor:
    if method == "batched":
        return batched_gradients(model, examples, pad_id)
    if method == "loop":
        return loop_gradients(model, examples)
    raise ConfigError(f"unknown gradient method '{method}'; expected batched or loop")


# ---- Adam preconditioning -------------------------------------------------------------------------------
@dataclass
class AdamMoments:
    """Adam state of the trainable parameters, concatenated in `named_parameters()` order."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def from_named(cls, state: dict[str, dict[str, Any]], names: Sequence[str], **hyper: float) -> AdamMoments:
        """From `{param_name: {exp_avg, exp_avg_sq, step}}` as saved by the warmup."""
        missing = [n for n in names if n not in state]
        if missing:
            raise ConfigError(f"the optimizer state lacks parameters {missing[:3]}; was the warmup run with the "
                              "same LoRA settings?")
        m = torch.cat([state[n]["exp_avg"].reshape(-1).float() for n in names])
        v = torch.cat([state[n]["exp_avg_sq"].reshape(-1).float() for n in names])
        step = int(float(state[names[0]]["step"]))
        return cls(m, v, step, **hyper)


def adam_features(grads: torch.Tensor, moments: AdamMoments, variant: str = "code", *,
                  inplace: bool = False) -> torch.Tensor:
    """Γ(z): the Adam update direction one step from the saved state, for each gradient row.

    code (reference implementation): m′ = β1·m + (1−β1)·g, v′ = β2·v + (1−β2)·g², Γ = m′/√(v′+ε), no bias correction.
    paper: bias-corrected with t = saved step + 1 (the step this update would be), Γ = m̂/(√v̂ + ε).
    `inplace=True` overwrites `grads` with Γ and holds one more (B, P) tensor (v′) instead of about four
    temporaries; the same operations in the same order, so the values are identical.
    """
    if variant not in ("code", "paper"):
        raise ConfigError(f"unknown Adam variant '{variant}'; expected code or paper")
    b1, b2 = moments.beta1, moments.beta2
    v = grads.square().mul_(1 - b2).add_(b2 * moments.exp_avg_sq)  # β2·v + (1−β2)·g²
    m = (grads if inplace else grads.clone()).mul_(1 - b1).add_(b1 * moments.exp_avg)  # β1·m + (1−β1)·g
    if variant == "code":
        return m.div_(v.add_(moments.eps).sqrt_())
    t = moments.step + 1
    m.div_(1 - b1**t)
    return m.div_(v.div_(1 - b2**t).sqrt_().add_(moments.eps))


# ---- projection -----------------------------------------------------------------------------------------
PROJECTOR_GENERATORS = ("numpy", "device")


class RademacherProjector:
    """x (B, P) → xΠ (B, d) with Π ∈ {±1}^{P×d} generated block by block, never held whole."""

    BLOCK_ROWS = 1024
    input_dtype = torch.float32  # the rows `project` reads (a projection buffer stores them in this dtype)

    def __init__(self, dim_in: int, dim_out: int, seed: int = 0, chunk_rows: int | None = None,
                 cache_bytes: int = 1 << 28, device: str | torch.device = "cpu", generator: str = "numpy"):
        if dim_out <= 0 or dim_out % 8:
            raise ConfigError(f"projection dimension {dim_out} must be a positive multiple of 8 (e.g. 512, 8192)")
        if generator not in PROJECTOR_GENERATORS:
            raise ConfigError(f"--projector '{generator}' is not one of {', '.join(PROJECTOR_GENERATORS)}")
        self.dim_in, self.dim_out, self.seed = dim_in, dim_out, seed
        self.device = torch.device(device)
        self.generator = generator
        # ~64 MB of float32 matrix per chunk by default.
        self.chunk_rows = chunk_rows or max(self.BLOCK_ROWS, (1 << 24) // dim_out)
        # A small Π (tiny models, small d) is kept after its first use: the same bits, generated once.
        self.cache = dim_in * dim_out * 4 <= cache_bytes
        self._matrix: torch.Tensor | None = None

    @property
    def identity(self) -> str | None:
        """What, besides the seed and d, fixes Π's signs (None for numpy: the same Π on every device)."""
        return None if self.generator == "numpy" else f"{self.generator}-{self.device.type}"

    def block(self, index: int) -> torch.Tensor:
        """Rows [index·1024, (index+1)·1024) of Π, as float32 ±1 (same bits for any P, chunk size or call)."""
        if self.generator == "device":  # torch's generator on the device itself: no host work, no transfer
            gen = torch.Generator(device=self.device)
            # 32 bits (the CPU generator keeps only those); odd multiplier: distinct blocks never share a seed
            gen.manual_seed((self.seed * 0x9E3779B1 + index * 0x85EBCA77) % (1 << 32))
            bits = torch.randint(0, 2, (self.BLOCK_ROWS, self.dim_out), generator=gen, device=self.device,
                                 dtype=torch.int8)
            return bits.to(torch.float32).mul_(2).sub_(1)
        rng = np.random.default_rng([self.seed, index])
        bits = np.unpackbits(np.frombuffer(rng.bytes(self.BLOCK_ROWS * self.dim_out // 8), dtype=np.uint8))
        signs = bits.reshape(self.BLOCK_ROWS, self.dim_out).astype(np.float32) * 2 - 1
        return torch.from_numpy(signs).to(self.device)

    def rows(self, start: int, end: int) -> torch.Tensor:
        first, last = start // self.BLOCK_ROWS, (end - 1) // self.BLOCK_ROWS
        blocks = torch.cat([self.block(b) for b in range(first, last + 1)])
        offset = first * self.BLOCK_ROWS
        return blocks[start - offset : end - offset]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.dim_in:
            raise ConfigError(f"projector built for {self.dim_in} inputs got {x.shape[1]}")
        if self.cache:
            if self._matrix is None:
                self._matrix = self.rows(0, self.dim_in)
            return x.float() @ self._matrix
        out = torch.zeros(x.shape[0], self.dim_out, dtype=torch.float32, device=self.device)
        for start in range(0, self.dim_in, self.chunk_rows):
            end = min(start + self.chunk_rows, self.dim_in)
            out += x[:, start:end].float() @ self.rows(start, end)
        return out


class TrakProjector:
    """TRAK's projector (package `traker`) called the way the LESS reference's `collect_grad_reps` calls it.

    CudaProjector (Π generated inside the `fast_jl` kernel, never stored) when the device is CUDA and a trial
    projection through `fast_jl` works, else BasicProjector (Π regenerated on the device in P × 128 blocks on every
    call); Rademacher, seed `seed`, block size 128, batch size 16, `dtype` (the reference passes the model's),
    model id 0. Rows are cast to fp16 before projecting, as the reference casts each stack of gradients. The
    result is returned as float32.
    """

    generator = "trak"
    cache = False
    input_dtype = torch.float16
    BLOCK_SIZE = 128  # the reference's fixed block size
    MAX_BATCH_SIZE = 16  # the reference's projector batch size

    def __init__(self, dim_in: int, dim_out: int, seed: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        require_trak()
        from trak.projectors import BasicProjector, CudaProjector, ProjectionType

        self.dim_in, self.dim_out, self.seed = dim_in, dim_out, seed
        self.device, self.dtype = torch.device(device), dtype
        kind = CudaProjector if self.device.type == "cuda" and _fast_jl_runs(self.device) else BasicProjector
        self.kind = kind.__name__
        self._projector = kind(grad_dim=dim_in, proj_dim=dim_out, seed=seed, proj_type=ProjectionType.rademacher,
                               device=self.device, dtype=dtype, block_size=self.BLOCK_SIZE,
                               max_batch_size=self.MAX_BATCH_SIZE)

    @property
    def identity(self) -> str:
        """Π differs between the two classes, between torch's CPU and CUDA generators and with the dtype."""
        return f"trak-{self.kind}-{self.device.type}-{str(self.dtype).removeprefix('torch.')}"

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.dim_in:
            raise ConfigError(f"projector built for {self.dim_in} inputs got {x.shape[1]}")
        return self._projector.project(x.to(torch.float16), model_id=0).float()


def require_trak() -> None:
    """Stop with a usage error when TRAK's projector (package `traker`) cannot be imported."""
    try:
        import trak.projectors  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--projector trak needs TRAK's projector, which does not import ({exc}): pip install "
                         "traker==0.3.2 (and fast_jl for its CUDA kernel), or use --projector numpy|device") from None


def _fast_jl_runs(device: torch.device) -> bool:
    """Whether TRAK's CUDA kernel imports and projects on `device` (the reference's own trial run)."""
    try:
        import fast_jl

        sms = torch.cuda.get_device_properties(device.index or 0).multi_processor_count
        fast_jl.project_rademacher_8(torch.zeros(8, 1_000, device=device), 512, 0, sms)
        return True
    except Exception:  # any failure (not installed, no kernel for this GPU) means BasicProjector, as upstream
        return False


PROJECTION_BUFFER_BYTES = 1 << 28  # most gradient rows gathered before one projection (256 MB)


class ProjectionBuffer:
    """Gathers feature batches' gradient rows and projects them together into `out` (rows in `out`'s order).

    One (B, P) @ (P, d) product per feature batch reads all of Π for few rows: memory-bound on a CPU (a 32-row
    product costs about twice as much per row as a 160-row one) and, when Π is too large to cache, regenerated
    per batch. Rows are copied into one buffer of at most `budget` bytes (at most the chunk's rows) and projected
    when it is full, so Π is read once per buffer. The buffer's size depends on P and the budget, never on the
    chunk size; a batch wider than the buffer (P too large for the budget: reference-scale LoRA) is projected on
    its own, as if there were no buffer. Features equal per-batch projection up to float rounding.
    """

    def __init__(self, projector: RademacherProjector | TrakProjector, out: torch.Tensor, budget: int | None = None):
        self.projector, self.out = projector, out
        budget = PROJECTION_BUFFER_BYTES if budget is None else budget
        self.dtype = projector.input_dtype  # fp32 rows for ours, fp16 for TRAK's (cast as the reference does)
        self.capacity = min(out.shape[0], budget // (self.dtype.itemsize * projector.dim_in))
        self.buffer: torch.Tensor | None = None
        self.index: list[int] = []

    def add(self, index: Sequence[int], grads: torch.Tensor) -> None:
        if len(self.index) + len(index) > self.capacity:
            self.flush()
        if len(index) > self.capacity:  # wider than the whole buffer: project this batch alone
            self.out[torch.tensor(index, device=self.out.device)] = self.projector.project(grads)
            return
        if self.buffer is None:
            self.buffer = torch.empty(self.capacity, self.projector.dim_in, dtype=self.dtype, device=grads.device)
        self.buffer[len(self.index) : len(self.index) + len(index)] = grads
        self.index.extend(index)

    def flush(self) -> None:
        if self.index:
            rows = self.buffer[: len(self.index)]
            self.out[torch.tensor(self.index, device=self.out.device)] = self.projector.project(rows)
            self.index = []


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-30)


def expected_cosine_error(dim_out: int) -> float:
    """The JL scale of cosine distortion after projecting to d dimensions, ≈ 1/√d."""
    return 1 / math.sqrt(dim_out)
