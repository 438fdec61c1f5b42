"""The LESS datastore's format: fp16 chunks as the reference stores them (format 2, recorded in `format.json`),
within a stated tolerance of the fp32 features and with the same selection; datastores written before formats
existed (fp32 chunks, no `format.json`) resume in fp32 and select what they selected before."""

from __future__ import annotations

import json
import random

import pytest
import torch

from skillweave.errors import ConfigError
from skillweave.trainers import less_features as lf
from skillweave.trainers.less import (
    DATASTORE_FORMAT,
    FP16_ROW_TOLERANCE,
    LessConfig,
    build_features,
    chunk_to_store,
    datastore_format,
    less_scores,
    rows_hash,
    top_fraction,
)
from skillweave.trainers.models import tiny_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = [str(i) for i in range(10)] + list("abcdefghij")
DIM = 64


@pytest.fixture(scope="module")
def setup():
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=2)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # LoRA B starts at zero; give it values so every gradient is non-trivial
            torch.nn.init.normal_(p, std=0.2)
    model.eval()
    rng = random.Random(3)

    def example():
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10)))
        completion = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
        return lf.encode_example(tokenizer, lf.to_messages({"prompt": prompt, "completion": completion}), 48)

    pool, targets = [example() for _ in range(30)], [example() for _ in range(4)]
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    gen = torch.Generator().manual_seed(1)
    moments = lf.AdamMoments(torch.randn(n_params, generator=gen) * 1e-2, torch.rand(n_params, generator=gen) * 1e-4,
                             step=5)
    projector = lf.RademacherProjector(n_params, DIM, seed=0)
    pad = tokenizer.pad_token_id
    # the fp32 path: every row's Adam direction / gradient, projected in fp32 (what format 1 stores, to ~1e-6)
    pool32 = lf.adam_features(lf.batched_gradients(model, pool, pad).detach(), moments) @ projector.rows(0, n_params)
    targets32 = lf.batched_gradients(model, targets, pad).detach() @ projector.rows(0, n_params)
    return {"model": model, "pad": pad, "pool": pool, "targets": targets, "moments": moments,
            "projector": projector, "pool32": pool32, "targets32": targets32}


def _build(s, folder, rows="pool", progress=None):
    config = LessConfig(pool="p", targets="t", chunk_examples=8, feature_batch_size=3, dim=DIM)
    kind, moments = ("adam", s["moments"]) if rows == "pool" else ("sgd", None)
    return build_features(s["model"], s["pad"], s[rows], folder, kind=kind, moments=moments,
                          projector=s["projector"], config=config, progress=progress)


def _row_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).norm(dim=1) / b.float().norm(dim=1)


def _selection(pool: torch.Tensor, targets: torch.Tensor) -> list[int]:
    return top_fraction(less_scores([pool], [targets], [1.0], 2), 0.2)


def test_new_datastores_store_fp16_chunks_record_their_format_and_select_as_fp32(setup, tmp_path):
    s = setup
    pool = _build(s, tmp_path / "pool")
    targets = _build(s, tmp_path / "targets", rows="targets")
    folder = tmp_path / "pool"
    assert json.loads((folder / "format.json").read_text())["format"] == DATASTORE_FORMAT == 2
    chunks = sorted(folder.glob("grads-*.pt"))
    assert len(chunks) == 4 and all(torch.load(c).dtype == torch.float16 for c in chunks)
    assert torch.load(folder / "all_unormalized.pt").dtype == torch.float16  # the reference's merged file
    assert torch.load(folder / "all_orig.pt").dtype == torch.float16
    # the stated tolerance: each row within FP16_ROW_TOLERANCE of its fp32 value, relative to its norm
    error = _row_error(pool, s["pool32"])
    assert 0 < error.max() < FP16_ROW_TOLERANCE and error.mean() < 4e-4  # rounded (not fp32), typically ~2e-4
    assert _row_error(targets, s["targets32"]).max() < FP16_ROW_TOLERANCE
    selected = _selection(pool, targets)
    assert selected == _selection(s["pool32"], s["targets32"]) and len(selected) == 6
    # a fresh build returns what is stored: a reload gives the same values
    assert torch.equal(_build(s, folder), pool)


def test_a_datastore_written_before_formats_resumes_in_fp32_and_selects_the_same(setup, tmp_path):
    """The layout earlier releases wrote: meta.json, fp32 chunks, no format.json; interrupted after one chunk."""
    s = setup
    folder = tmp_path / "old"
    folder.mkdir()
    identity = {"rows": rows_hash(s["pool"]), "projector_seed": 0, "dim": DIM, "checkpoint": ""}
    (folder / "meta.json").write_text(json.dumps(identity))
    first = s["pool32"][:8].clone()
    torch.save(first, folder / "grads-8.pt")
    assert datastore_format(folder) == 1
    seen = []
    resumed = _build(s, folder, progress=lambda done, total, _: seen.append(done))
    assert min(seen) > 8  # the old chunk is kept, not recomputed
    assert json.loads((folder / "format.json").read_text())["format"] == 1  # a folder keeps its format
    assert all(torch.load(c).dtype == torch.float32 for c in folder.glob("grads-*.pt"))
    assert torch.load(folder / "all_unormalized.pt").dtype == torch.float32
    assert torch.equal(resumed[:8], first)
    assert _row_error(resumed, s["pool32"]).max() < 1e-5  # the fp32 features, as before (float rounding)
    targets = _build(s, tmp_path / "targets", rows="targets")
    assert _selection(resumed, targets) == _selection(s["pool32"], s["targets32"])
    # a finished old datastore (all_unormalized.pt in fp32, no format.json) is read back unchanged
    (folder / "format.json").unlink()
    assert datastore_format(folder) == 1 and torch.equal(_build(s, folder), resumed)
    # a new folder starts in the current format; an unknown format is refused
    assert datastore_format(tmp_path / "new") == DATASTORE_FORMAT
    (folder / "format.json").write_text(json.dumps({"format": 9}))
    with pytest.raises(ConfigError, match="format 9"):
        _build(s, folder)


def test_a_chunk_stays_fp32_where_fp16_would_distort_a_row():
    rows = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    assert chunk_to_store(rows, 2).dtype == torch.float16
    assert chunk_to_store(rows, 1).dtype == torch.float32  # format 1 keeps fp32
    over = rows.clone()
    over[2] *= 1e5  # beyond fp16's range (65504): inf in fp16
    kept = chunk_to_store(over, 2)
    assert kept.dtype == torch.float32 and torch.equal(kept, over)
    tiny = rows.clone()
    tiny[1] *= 1e-7  # fp16 subnormals: a few bits left
    assert chunk_to_store(tiny, 2).dtype == torch.float32


def test_a_small_pi_is_generated_once_per_run(setup, tmp_path, monkeypatch):
    from skillweave.trainers.less import make_projector

    s = setup
    projector = make_projector(s["model"], LessConfig(pool="p", targets="t", dim=DIM, device="cpu", dtype="fp32"))
    assert projector.cache  # P x d x 4 bytes within the 256 MiB budget
    blocks = []
    real = lf.RademacherProjector.block
    monkeypatch.setattr(lf.RademacherProjector, "block", lambda self, i: blocks.append(i) or real(self, i))
    for checkpoint in (1, 2):  # one projector for every checkpoint and side, as `run` uses it
        for rows in ("pool", "targets"):
            _build({**s, "projector": projector}, tmp_path / f"{rows}{checkpoint}", rows=rows)
    assert blocks == list(range(-(-projector.dim_in // lf.RademacherProjector.BLOCK_ROWS)))  # each block once
