"""Every tensor LESS keeps lives on the model's device, guarded with a meta/CPU device split.

The model sits on PyTorch's "meta" device (shapes, no data: a stand-in for a GPU on a CPU-only machine) and the
feature pipeline runs under a torch-function mode that fails any call whose tensor arguments sit on two devices.
A projector, Π, Adam moments, per-example gradients, projection buffer or chunk accumulator left on the CPU
meets the model's meta tensors in some operation and fails the test; `.cpu()` is recorded, so the only
tensors moved to the host are the finished (chunk × d) accumulators, once each, to be saved.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import (
    LessConfig,
    build_features,
    load_checkpoint,
    make_projector,
    save_checkpoint,
)
from skillweave.trainers.models import tiny_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
META = torch.device("meta")


class OneDevicePerCall(TorchFunctionMode):
    """Fails any torch call that mixes tensors (other than 0-dim scalars) from two devices. On the meta device
    torch itself lets some mixes through (a meta @ CPU product gives meta), which CUDA would refuse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim() > 0}
        if len(found) > 1:
            raise AssertionError(f"{getattr(func, '__name__', func)} mixes tensors on {sorted(map(str, found))}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def host_moves(record: list):
    """Record every `Tensor.cpu()` of a meta tensor (shape) and hand back zeros: meta tensors hold no data."""
    original = torch.Tensor.cpu

    def cpu(self, *args, **kwargs):
        if self.device == META:
            record.append(tuple(self.shape))
            return torch.zeros(self.shape, dtype=self.dtype)
        return original(self, *args, **kwargs)

    torch.Tensor.cpu = cpu
    try:
        yield
    finally:
        torch.Tensor.cpu = original


def _model(device):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model_and_tokenizer([str(i) for i in range(10)], seed=1)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    model.eval()
    return model.to(device), tokenizer


def _encoded(tokenizer, n=6):
    rows = [{"prompt": " ".join(str(j) for j in range(1 + i % 5)), "completion": f"{i % 10} {(i + 3) % 10}"}
            for i in range(n)]  # different lengths: right-padded batches
    return [lf.encode_example(tokenizer, lf.to_messages(r), 32) for r in rows]


def test_the_guard_catches_a_cpu_tensor_meeting_a_meta_one():
    with OneDevicePerCall(), pytest.raises(AssertionError, match="mixes tensors"):
        torch.zeros(3, 4, device=META) @ torch.ones(4, 2)  # torch alone lets this one through
    with OneDevicePerCall():
        torch.zeros(3, 4, device=META) * torch.tensor(2.0)  # 0-dim scalars may stay on the host, as on CUDA


@pytest.mark.parametrize("method", ["batched", "loop"])
def test_less_features_keep_moments_projector_gradients_and_accumulator_on_the_model_device(tmp_path, method):
    # Adam moments as a warmup saves them (on the CPU, by parameter name), loaded into the meta model
    cpu_model, tokenizer = _model("cpu")
    names = [n for n, _ in lf.trainable_parameters(cpu_model)]
    optimizer = torch.optim.AdamW([p for _, p in lf.trainable_parameters(cpu_model)], lr=1e-3)
    sum(p.sum() for _, p in lf.trainable_parameters(cpu_model)).backward()
    optimizer.step()
    save_checkpoint(cpu_model, optimizer, names, tmp_path / "ckpt1", epoch=1, step=1, lrs=[1e-3])
    model, _ = _model(META)
    _, moments = load_checkpoint(model, tmp_path / "ckpt1")
    assert moments.exp_avg.device == moments.exp_avg_sq.device == META

    config = LessConfig(pool="p", targets="t", dim=16, chunk_examples=4, feature_batch_size=2,
                        gradient_method=method)
    projector = make_projector(model, config)
    assert projector.device == META
    encoded = _encoded(tokenizer)
    moved: list[tuple[int, ...]] = []
    with OneDevicePerCall(), host_moves(moved):
        projector.project(torch.zeros(1, projector.dim_in, device=META))
        assert projector._matrix is not None and projector._matrix.device == META  # Π generated once, kept there
        for kind, side_moments in (("adam", moments), ("sgd", None)):
            raw = build_features(model, tokenizer.pad_token_id, encoded, tmp_path / kind, kind=kind,
                                 moments=side_moments, projector=projector, config=config)
            assert raw.shape == (6, 16)
    # only the finished chunk accumulators reach the host, each once, to be saved
    assert moved == [(4, 16), (2, 16)] * 2


def test_a_streamed_projector_and_the_projection_buffer_stay_on_the_model_device(monkeypatch):
    projector = lf.RademacherProjector(3000, 16, seed=2, device=META, cache_bytes=0, chunk_rows=1024)
    out = torch.zeros(5, 16, device=META)
    moved: list = []
    with OneDevicePerCall(), host_moves(moved):
        assert projector.project(torch.ones(2, 3000, device=META)).device == META  # block by block, never cached
        buffer = lf.ProjectionBuffer(projector, out, budget=3 * 4 * 3000)  # gathers up to 3 rows
        buffer.add([0, 2], torch.ones(2, 3000, device=META))
        buffer.add([1, 3, 4], torch.ones(3, 3000, device=META))  # full: flushes the first two, then projects alone
        buffer.flush()
        assert buffer.buffer.device == META
    assert projector._matrix is None and moved == []
