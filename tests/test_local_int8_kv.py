"""int8 weights keep their keys and values in bfloat16 unless told otherwise (providers/local_engine.py,
KV_BFLOAT16_INT8, `kv_dtype_name`): with int8 matmuls a decode step's attention is the larger share of its CPU, and
int8's texts already part from float16's. float16 keeps its float32 cache, so its tokens do not change. A tiny random
Llama built from a config, as in tests/test_local_engine.py."""

from __future__ import annotations

import pytest

from skillweave.providers import local_engine
from skillweave.providers.local_engine import GenRequest, load_engine
from tests.test_local_engine import CORPUS, _prompts, build_tiny_model

pytestmark = [
    pytest.mark.skipif(not local_engine.fp16_kernels(), reason="torch has no fbgemm kernels on this CPU"),
    pytest.mark.skipif(not __import__("torch").ops.mkldnn._is_mkldnn_bf16_supported(),
                       reason="no oneDNN bfloat16 kernels on this CPU"),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _engine(tiny_model, monkeypatch, dtype, kv=None):
    monkeypatch.setenv("SKILLWEAVE_LOCAL_DTYPE", dtype)
    if kv is None:
        monkeypatch.delenv("SKILLWEAVE_LOCAL_KV", raising=False)
    else:
        monkeypatch.setenv("SKILLWEAVE_LOCAL_KV", kv)
    local_engine._load_engine.cache_clear()
    return load_engine(str(tiny_model))


def test_int8_defaults_to_the_bfloat16_cache_and_float16_keeps_float32(tiny_model, monkeypatch):
    import torch

    monkeypatch.delenv("SKILLWEAVE_LOCAL_KV", raising=False)
    assert local_engine.kv_dtype_name("int8") == "bfloat16"
    assert local_engine.kv_dtype_name("float32") == "float32"
    try:
        int8 = _engine(tiny_model, monkeypatch, "int8")
        request = GenRequest(_prompts(int8, [CORPUS[0]])[0], max_tokens=6)
        int8.prefixes.clear()
        int8.generate([request])
        assert int8.kv_dtype == torch.bfloat16 and all(k.dtype == torch.bfloat16 for k in int8.k)
        assert request.outputs[0]  # it decodes
        # the setting still wins, and float16's default is unchanged
        assert _engine(tiny_model, monkeypatch, "int8", "float32").kv_dtype == torch.float32
        fp16 = _engine(tiny_model, monkeypatch, "float16")
        assert fp16.kv_dtype == (torch.bfloat16 if local_engine.KV_BFLOAT16_DEFAULT else torch.float32)
    finally:
        local_engine._load_engine.cache_clear()

