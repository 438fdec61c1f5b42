"""LESS at reference scale: batches projected straight into the chunk accumulator (memory independent of the
chunk size, features unchanged), and the reference's tulu encoding for models without a chat template."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import LessConfig, build_features
from skillweave.trainers.models import tiny_model_and_tokenizer, word_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = [str(i) for i in range(10)]


def _lora_model(words: list[str] = WORDS, seed: int = 1):
    """A tiny model with LoRA r=2 on q/v whose B matrices are not zero (so gradients reach A), in eval mode."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model_and_tokenizer(words, seed=seed)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    model.eval()
    return model, tokenizer


@pytest.mark.parametrize("budget_rows", [0, 6])
def test_projection_sees_one_batch_at_a_time_and_features_do_not_depend_on_the_chunk_size(tmp_path, monkeypatch,
                                                                                          budget_rows):
    model, tokenizer = _lora_model()
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": " ".join(WORDS[: 1 + i % 9]),
                                                            "completion": WORDS[i % 10]}), 32) for i in range(20)]
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    projector = lf.RademacherProjector(n_params, 32, seed=3)
    # the projection buffer's byte budget: 0 projects every batch alone, 6 rows gathers at most 6 rows
    monkeypatch.setattr(lf, "PROJECTION_BUFFER_BYTES", budget_rows * 4 * n_params)
    widest = []
    real = lf.RademacherProjector.project
    monkeypatch.setattr(lf.RademacherProjector, "project",
                        lambda self, x: widest.append(x.shape[0]) or real(self, x))
    results = []
    for chunk in (20, 7):
        config = LessConfig(pool="p", targets="t", chunk_examples=chunk, feature_batch_size=4)
        results.append(build_features(model, tokenizer.pad_token_id, encoded, tmp_path / f"c{chunk}", kind="sgd",
                                      moments=None, projector=projector, config=config))
    # never a (chunk, P) gradient matrix: at most one feature batch, or the budget's rows, projected at once
    assert max(widest) <= max(4, budget_rows)
    assert max(widest) == 4 if budget_rows == 0 else max(widest) > 4  # the budget is used when there is one
    grads = lf.batched_gradients(model, encoded, tokenizer.pad_token_id).detach()
    expected = grads @ projector.rows(0, n_params)  # the old path: all rows' gradients, projected at once
    for raw in results:  # stored as fp16 chunks: within FP16_ROW_TOLERANCE of each row's norm
        assert ((raw - expected).norm(dim=1) / expected.norm(dim=1)).max() < 1e-3


def test_models_without_a_chat_template_use_the_tulu_format_with_bos_and_eos():
    tokenizer = word_tokenizer(["hello", "there", "world", "again"])
    tokenizer.chat_template = None
    messages = [{"role": "user", "content": " hello there "}, {"role": "assistant", "content": "world"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "there world"}]
    assert lf.tulu_text(messages, "</s>") == (
        "<|user|>\nhello there\n<|assistant|>\nworld</s>\n<|user|>\nagain\n<|assistant|>\nthere world</s>\n")
    encoded = lf.encode_example(tokenizer, messages, 64)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["<s>", "<|user|>", "hello", "there", "<|assistant|>", "world", "</s>", "<|user|>", "again",
                      "<|assistant|>", "there", "world", "</s>"]
    learned = [t for t, label in zip(tokens, encoded["labels"], strict=True) if label != lf.IGNORE]
    assert learned == ["world", "</s>", "there", "world", "</s>"]  # the responses and their EOS, nothing else


def test_device_generated_projector_is_seeded_chunk_invariant_and_preserves_cosines():
    from pydantic import ValidationError

    from skillweave.errors import ConfigError

    n_in, d = 3000, 512
    a = lf.RademacherProjector(n_in, d, seed=5, generator="device")
    streamed = lf.RademacherProjector(n_in, d, seed=5, generator="device", chunk_rows=700, cache_bytes=0)
    x = torch.randn(6, n_in, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.rows(0, n_in), lf.RademacherProjector(n_in, d, seed=5, generator="device").rows(0, n_in))
    assert not torch.equal(a.rows(0, 1024), lf.RademacherProjector(n_in, d, seed=6, generator="device").rows(0, 1024))
    assert set(a.block(0).unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(a.project(x), streamed.project(x), rtol=1e-4, atol=1e-3)  # same Π, any chunking
    cos = lf.normalize_rows(x) @ lf.normalize_rows(x).T
    projected = lf.normalize_rows(a.project(x))
    assert (projected @ projected.T - cos).abs().max() < 4 * lf.expected_cosine_error(d)
    with pytest.raises(ConfigError, match="--projector 'fast'"):
        lf.RademacherProjector(n_in, d, generator="fast")
    with pytest.raises(ValidationError, match="projector"):  # checked when the settings are built
        LessConfig(pool="p", targets="t", projector="fast")


def test_projection_buffer_gathers_batches_within_its_budget_and_keeps_rows_in_place():
    torch.manual_seed(0)
    n_params, rows = 40, 11
    projector = lf.RademacherProjector(n_params, 16, seed=5)
    grads = torch.randn(rows, n_params)
    expected = grads @ projector.rows(0, n_params)
    order = [[3, 7], [0, 1, 2], [10], [4, 5, 6, 8, 9]]  # length-sorted batches come in any row order
    for budget_rows, widest_allowed in ((0, 5), (3, 5), (5, 5), (8, 8), (100, 11)):
        widths = []
        real = projector.project
        projector.project = lambda x: widths.append(x.shape[0]) or real(x)  # noqa: B023
        out = torch.zeros(rows, 16)
        buffer = lf.ProjectionBuffer(projector, out, budget=budget_rows * 4 * n_params)
        for index in order:
            buffer.add(index, grads[index])
        buffer.flush()
        del projector.project
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5), budget_rows
        assert max(widths) <= widest_allowed and sum(widths) == rows, (budget_rows, widths)
        if budget_rows >= rows:
            assert widths == [rows]  # the whole chunk in one product: Π read once


@pytest.mark.parametrize(("world", "expected"), [(1, 4), (2, 2)])
def test_less_warmup_passes_the_ratio_as_a_whole_number_of_steps_for_the_launch(tmp_path, monkeypatch, world,
                                                                                expected):
    """`warmup_ratio` is turned into a step count (a float `warmup_steps` is a ratio only on transformers >= 5),
    counted over the optimizer steps `Trainer` takes: 20 warmup rows, batch 2 per process, 4 epochs -> 40 steps
    with one process, 20 with two; a ratio of 0.1 -> 4 and 2 warmup steps."""
    import sys

    from skillweave.trainers.less import warmup

    class Captured(Exception):
        pass

    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Captured  # the arguments are what this test is about; no training

    # what less.warmup imports, loaded first: that import can swap the lazily loaded `transformers` module object
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: F401

    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", capture)
    monkeypatch.setenv("WORLD_SIZE", str(world))
    model, tokenizer = _lora_model()
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": WORDS[i % 10], "completion": WORDS[(i + 1) % 10]}),
                                 16) for i in range(40)]
    config = LessConfig(pool="p", targets="t", warmup_fraction=0.5, batch_size=2, grad_accum=1, epochs=4,
                        warmup_ratio=0.1)
    with pytest.raises(Captured):
        warmup(model, tokenizer, encoded, config, tmp_path)
    assert isinstance(seen["warmup_steps"], int) and seen["warmup_steps"] == expected


def test_projection_buffer_size_is_an_option_bounded_by_the_chunk(tmp_path, monkeypatch):

    model, tokenizer = _lora_model()
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": " ".join(WORDS[: 1 + i % 9]),
                                                            "completion": WORDS[i % 10]}), 32) for i in range(20)]
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    projector = lf.RademacherProjector(n_params, 32, seed=3)
    monkeypatch.setattr(lf, "PROJECTION_BUFFER_BYTES", 0)  # the default budget would project batch by batch
    widest = []
    real = lf.RademacherProjector.project
    monkeypatch.setattr(lf.RademacherProjector, "project", lambda self, x: widest.append(x.shape[0]) or real(self, x))
    config = LessConfig(pool="p", targets="t", chunk_examples=8, feature_batch_size=3, projection_buffer_mb=1)
    raw = build_features(model, tokenizer.pad_token_id, encoded, tmp_path / "a", kind="sgd", moments=None,
                         projector=projector, config=config)
    assert widest == [8, 8, 4]  # 1 MiB holds every row of a chunk here: one product per chunk, never more rows
    grads = lf.batched_gradients(model, encoded, tokenizer.pad_token_id).detach()
    expected = grads @ projector.rows(0, n_params)
    assert ((raw - expected).norm(dim=1) / expected.norm(dim=1)).max() < 1e-3  # fp16 chunks
    with pytest.raises(ValidationError, match="projection_buffer_mb"):  # the model's range (ge=0)
        LessConfig(pool="p", targets="t", projection_buffer_mb=-1)


def test_less_warmup_refuses_pure_fp16_training(tmp_path):
    """AdamW's eps (1e-8) is 0 in fp16: LoRA A's first moments and second moments start at 0 (B is 0), so a pure fp16
    warmup divides 0 by 0. The warmup stops with a ConfigError (an `Error:` line on the CLI) before training."""
    from skillweave.errors import ConfigError
    from skillweave.trainers.less import warmup

    model, tokenizer = _lora_model()
    model.half()
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": WORDS[i % 10], "completion": WORDS[(i + 1) % 10]}),
                                 16) for i in range(8)]
    config = LessConfig(pool="p", targets="t", warmup_fraction=0.5, batch_size=2, epochs=1)
    with pytest.raises(ConfigError, match="pure fp16"):
        warmup(model, tokenizer, encoded, config, tmp_path)
    assert not (tmp_path / "warmup").exists()
