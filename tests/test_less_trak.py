"""`--projector trak`: TRAK's projector called as the LESS reference's `collect_grad_reps` calls it, so the features
are the reference's for the same per-example gradients; without `traker` installed, one `Error:` line, exit 2."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from skillweave.errors import ConfigError
from skillweave.trainers import less_features as lf
from skillweave.trainers.less import FP16_ROW_TOLERANCE, LessConfig, build_features, make_projector
from tests.test_less_scale import _lora_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = [str(i) for i in range(10)] + list("abcdef")
DIM = 256  # two of TRAK's 128-column blocks


def _model():
    model, tokenizer = _lora_model(WORDS, seed=4)
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": " ".join(WORDS[i % 7: i % 7 + 1 + i % 5]),
                                                            "completion": f"{WORDS[i % 16]} {WORDS[(i * 3) % 16]}"}),
                                 32) for i in range(20)]
    return model, tokenizer, encoded


def reference_projection(grads: torch.Tensor, dtype: torch.dtype, dim: int = DIM) -> torch.Tensor:
    """What the LESS reference does with per-example gradients on a machine without fast_jl: BasicProjector with its
    arguments, every 16 stacked rows cast to fp16 and projected with model id 0."""
    from trak.projectors import BasicProjector, ProjectionType

    projector = BasicProjector(grad_dim=grads.shape[1], proj_dim=dim, seed=0, proj_type=ProjectionType.rademacher,
                               device=torch.device("cpu"), dtype=dtype, block_size=128, max_batch_size=16)
    return torch.cat([projector.project(grads[i : i + 16].to(torch.float16), model_id=0)
                      for i in range(0, len(grads), 16)])


def test_projector_trak_gives_the_reference_features_for_the_same_gradients(tmp_path):
    pytest.importorskip("trak.projectors", reason="traker (TRAK's projector) is not installed: pip install traker==0.3.2")
    model, tokenizer, encoded = _model()
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    gen = torch.Generator().manual_seed(0)
    moments = lf.AdamMoments(torch.randn(n_params, generator=gen) * 1e-2, torch.rand(n_params, generator=gen) * 1e-4,
                             step=3)
    config = LessConfig(pool="p", targets="t", dim=DIM, projector="trak", gradient_method="loop",
                        chunk_examples=8, feature_batch_size=3, device="cpu", dtype="fp32")
    projector = make_projector(model, config)
    assert isinstance(projector, lf.TrakProjector) and projector.kind == "BasicProjector"  # no CUDA here
    assert projector.identity == "trak-BasicProjector-cpu-float32"
    raw = build_features(model, tokenizer.pad_token_id, encoded, tmp_path / "trak", kind="adam", moments=moments,
                         projector=projector, config=config)
    # the reference's recipe on the same per-example Adam directions (batch-1 gradients, as its loop takes them)
    grads = lf.adam_features(lf.loop_gradients(model, encoded), moments)
    expected = reference_projection(grads, torch.float32)
    # the projector itself: equal up to fp32 summation order (the products' widths differ)
    assert torch.allclose(projector.project(grads), expected, rtol=1e-5, atol=1e-4)
    # through the datastore (fp16 chunks): within the stored tolerance
    error = (raw - expected).norm(dim=1) / expected.norm(dim=1)
    assert error.max() < FP16_ROW_TOLERANCE
    # not a tautology: our own projector gives other features for the same gradients
    ours = grads @ lf.RademacherProjector(n_params, DIM, seed=0).rows(0, n_params)
    assert ((ours - expected).norm(dim=1) / expected.norm(dim=1)).min() > 0.5
    # a datastore built with TRAK's projector refuses ours
    with pytest.raises(ConfigError, match="other data"):
        build_features(model, tokenizer.pad_token_id, encoded, tmp_path / "trak", kind="adam", moments=moments,
                       projector=lf.RademacherProjector(n_params, DIM, seed=0), config=config)


def test_projector_trak_uses_the_model_dtype_as_the_reference_does():
    pytest.importorskip("trak.projectors", reason="traker (TRAK's projector) is not installed: pip install traker==0.3.2")
    grads = torch.randn(5, 3000, generator=torch.Generator().manual_seed(2))
    projector = lf.TrakProjector(3000, DIM, seed=0, dtype=torch.bfloat16)  # the reference loads models in bf16
    got = projector.project(grads)
    assert got.dtype == torch.float32 and projector.identity == "trak-BasicProjector-cpu-bfloat16"
    assert torch.equal(got, reference_projection(grads, torch.bfloat16).float())


def test_projector_trak_without_traker_is_one_error_line_exit_2(tmp_path, capsys, monkeypatch):
    from test_less_pipeline import LESS_ARGS, _cli, _task_rows, _write

    monkeypatch.setitem(sys.modules, "trak", None)  # `import trak...` raises ImportError, as when not installed
    monkeypatch.setitem(sys.modules, "trak.projectors", None)
    pool = _write(tmp_path / "pool.jsonl", _task_rows(4))
    targets = _write(tmp_path / "targets.jsonl", _task_rows(1, seed=3)[:2])
    code, out, err = _cli(capsys, "--db", str(tmp_path / "sw.db"), "select", "less", "--pool", pool, "--targets",
                          targets, "--out", str(tmp_path / "grads"), *LESS_ARGS, "--projector", "trak")
    assert code == 2 and out == ""
    assert err.startswith("Error:") and len(err.strip().splitlines()) == 1 and "traker" in err
    assert not (tmp_path / "grads" / "warmup").exists()  # stopped before the warmup


def test_select_less_runs_with_projector_trak(tmp_path, capsys):
    pytest.importorskip("trak.projectors", reason="traker (TRAK's projector) is not installed: pip install traker==0.3.2")
    from test_less_pipeline import LESS_ARGS, _cli, _task_rows, _write

    pool = _write(tmp_path / "pool.jsonl", _task_rows(5))
    targets = _write(tmp_path / "targets.jsonl", [r for r in _task_rows(4, seed=7) if r["task"] == "add"][:2])
    code, out, err = _cli(capsys, "--db", str(tmp_path / "sw.db"), "select", "less", "--pool", pool, "--targets",
                          targets, "--out", str(tmp_path / "grads"), *LESS_ARGS, "--projector", "trak",
                          "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["n_selected"] == 1
    meta = json.loads((tmp_path / "grads" / "pool-ckpt1-adam" / "dim128" / "meta.json").read_text())
    assert meta["projector"] == "trak-BasicProjector-cpu-float32"


def test_the_projection_buffer_holds_fp16_rows_for_trak_as_the_reference_stacks_them():
    pytest.importorskip("trak.projectors", reason="traker (TRAK's projector) is not installed: pip install traker==0.3.2")
    projector = lf.TrakProjector(3000, DIM, seed=0)
    out = torch.zeros(10, DIM)
    buffer = lf.ProjectionBuffer(projector, out, budget=6 * 2 * 3000)  # six fp16 rows (three fp32 ones)
    assert buffer.capacity == 6
    grads = torch.randn(5, 3000, generator=torch.Generator().manual_seed(3))
    buffer.add([0, 2, 4, 6, 8], grads)
    assert buffer.buffer.dtype == torch.float16
    buffer.flush()
    assert torch.equal(out[[0, 2, 4, 6, 8]], reference_projection(grads, torch.float32))
    assert lf.ProjectionBuffer(lf.RademacherProjector(3000, DIM), out, budget=6 * 2 * 3000).capacity == 3


def test_on_cuda_with_fast_jl_the_cuda_projector_gets_the_reference_arguments(monkeypatch):
    """The CUDA branch, run on the CPU: which class is built and with what (the kernel itself needs a GPU)."""
    projectors = pytest.importorskip("trak.projectors",
                                     reason="traker (TRAK's projector) is not installed: pip install traker==0.3.2")
    built = {}

    class FakeCudaProjector:
        def __init__(self, **kwargs):
            built.update(kwargs)

        def project(self, grads, model_id):
            built["projected"] = (grads.dtype, model_id)
            return torch.ones(grads.shape[0], DIM, dtype=torch.float16)

    monkeypatch.setattr(projectors, "CudaProjector", FakeCudaProjector)
    monkeypatch.setattr(lf, "_fast_jl_runs", lambda device: device.type == "cuda")
    projector = lf.TrakProjector(3000, DIM, seed=0, device="cuda:1", dtype=torch.bfloat16)
    assert projector.kind == "FakeCudaProjector" and projector.identity.endswith("-cuda-bfloat16")
    assert built == {"grad_dim": 3000, "proj_dim": DIM, "seed": 0, "proj_type": projectors.ProjectionType.rademacher,
                     "device": torch.device("cuda:1"), "dtype": torch.bfloat16, "block_size": 128,
                     "max_batch_size": 16}
    assert projector.project(torch.zeros(3, 3000)).dtype == torch.float32
    assert built["projected"] == (torch.float16, 0)  # fp16 rows, model id 0, as the reference calls it
    # without a working fast_jl (not installed here), a CUDA device gets BasicProjector, as in the reference
    monkeypatch.undo()
    assert lf._fast_jl_runs(torch.device("cuda")) is False
