"""Base models for the trainers: the embedded SmolLM2 (default), any local HF folder, or a tiny test model.

Tiny models are Llama-style, random-init from a config, with an in-code word-level tokenizer, so tests
and CPU verification experiments never touch a hub.
"""

from __future__ import annotations

from collections.abc import Iterable

from skillweave.providers.local_model import resolve_model_path

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def load_model_and_tokenizer(spec: str = "local", *, dtype=None, padding_side: str = "right", device=None,
                             distributed_config=None):
    """Load a fresh, trainable (model, tokenizer) from 'local' (embedded SmolLM2) or a local folder.

    `device`/`dtype` take `--device`/`--dtype` values (or torch objects); the weights are loaded in that dtype and
    moved to that device once. Defaults: fp32 on the CPU. `distributed_config` (transformers' `DistributedConfig`)
    shards the model at load time and leaves its placement to transformers (trainers/fsdp.py).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillweave.trainers.devices import resolve_device, resolve_dtype

    target = device if isinstance(device, torch.device) else resolve_device(device or "cpu")
    if not isinstance(dtype, torch.dtype):
        dtype = resolve_dtype(dtype or "fp32", target)
    path = resolve_model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if distributed_config is not None:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, distributed_config=distributed_config), tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(target), tokenizer


def apply_lora(model, *, r: int, alpha: int, dropout: float = 0.0, targets: str = "all-linear"):
    """Wrap `model` with fresh peft LoRA adapters (B = 0, so it starts equal to the base model)."""
    from peft import LoraConfig, get_peft_model

    modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules,
                                            task_type="CAUSAL_LM"))


def plain_model(model):
    """The model to save: LoRA adapters merged into the weights, so the folder loads without peft."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def word_tokenizer(words: Iterable[str]):
    """A whitespace word-level fast tokenizer over `words` plus special tokens, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *words]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_causal_lm(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    max_position_embeddings: int = 256,
):
    """A random-init Llama-style model (~0.1-0.5M params) built from a config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def tiny_model_and_tokenizer(words: Iterable[str], **kwargs):
    """Tokenizer over `words` and a tiny model sized to it."""
    tokenizer = word_tokenizer(words)
    return tiny_causal_lm(len(tokenizer), **kwargs), tokenizer
