"""Devices, precision and memory: --device/--dtype, lean log-probs, dropout off in DPO, no tensor left on the CPU,
warmup as a step count, gradient checkpointing, and the fixes (CHES on a PEFT-wrapped model)."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from skillweave.errors import ConfigError
from skillweave.trainers import ches, devices, dpo
from skillweave.trainers.ches import encode_pairs
from skillweave.trainers.data import PreferencePair
from skillweave.trainers.models import apply_lora, load_model_and_tokenizer, tiny_model_and_tokenizer
from skillweave.trainers.templates import template_words

WORDS = [*template_words(), *"a b c d e f g h i j k l".split()]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_pairs(n: int) -> list[PreferencePair]:
    letters = "abcdefghijkl"
    return [PreferencePair(f"{letters[i % 12]} {letters[(i + 3) % 12]}",
                           " ".join(letters[(i + j) % 12] for j in range(1 + i % 3)),
                           " ".join(letters[(i + 5 + j) % 12] for j in range(1 + i % 4)), f"pair-{i}") for i in range(n)]


@contextlib.contextmanager
def no_moves_to_cpu():
    """Fail on any `Tensor.cpu()` inside the block: what a method keeps must stay on the model's device (on a GPU
    machine this is the call that silently puts a reference or a state on the host)."""
    original = torch.Tensor.cpu

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor was moved to the CPU inside a method")

    torch.Tensor.cpu = refuse
    try:
        yield
    finally:
        torch.Tensor.cpu = original


def test_token_logps_equal_the_full_fp32_log_softmax_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 11, 50, generator=gen) * 4).requires_grad_()
    targets = torch.randint(0, 50, (3, 11), generator=gen)
    full = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    lean = devices.token_logps(logits, targets, chunk=4)  # 11 positions: chunks of 4, 4, 3
    assert torch.allclose(lean, full, atol=1e-5)
    (g_full,) = torch.autograd.grad(full.sum(), logits)
    (g_lean,) = torch.autograd.grad(lean.sum(), logits)
    assert torch.allclose(g_lean, g_full, atol=1e-6)
    half = logits.detach().bfloat16()  # model-dtype logits: computed in fp32 per chunk, as the old .float() path
    old = torch.gather(half.float().log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(devices.token_logps(half, targets, chunk=5), old, atol=1e-5)
    half.requires_grad_()  # the checkpointed path (model-dtype logits with gradients): same values and gradients
    (g_old,) = torch.autograd.grad(torch.gather(half.float().log_softmax(-1), 2, targets.unsqueeze(-1)).sum(), half)
    (g_new,) = torch.autograd.grad(devices.token_logps(half, targets, chunk=5).sum(), half)
    assert torch.allclose(g_new.float(), g_old.float(), atol=1e-2)


def test_device_and_dtype_resolution_and_clear_errors(tmp_path, capsys):
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert devices.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        devices.resolve_device("tpu")
    with pytest.raises(ConfigError, match="--dtype 'int8'"):
        devices.resolve_dtype("int8", torch.device("cpu"))
    if torch.cuda.is_available():
        return
    with pytest.raises(ConfigError, match="CUDA is not available"):
        devices.resolve_device("cuda:0")
    from skillweave.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p.to_dict()) for p in make_pairs(2)))
    with pytest.raises(SystemExit) as exc:
        main(["--db", str(tmp_path / "s.db"), "ches", "score", "--data", str(data), "--device", "cuda"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --device cuda: CUDA is not available")


def test_models_load_in_the_chosen_dtype_and_train_in_bf16(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded, tokenizer = load_model_and_tokenizer(str(tmp_path / "tiny"), device="cpu", dtype="bf16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(8))
    result = dpo.train_dpo(loaded, tokenizer, chosen, rejected, dpo.DPOConfig(lr=1e-2, batch_size=4, optimizer="sgd"))
    assert result["steps"] == 2 and all(math.isfinite(e["loss"]) for e in result["logs"])
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_dpo_reference_logps_and_ches_states_stay_on_the_model_device():
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(6))
    with no_moves_to_cpu():
        reference = dpo.all_logps(model, chosen, tokenizer.pad_token_id)
        sums, _, lasts = ches.hidden_sums(model, chosen + rejected, batch_size=4, pad_id=tokenizer.pad_token_id)
        result = dpo.train_dpo(model, tokenizer, chosen, rejected, dpo.DPOConfig(lr=1e-3, batch_size=3))
    device = devices.model_device(model)
    assert reference.device == sums.device == lasts.device == device
    assert result["steps"] == 2


def test_less_features_moments_and_projection_stay_on_the_model_device(tmp_path):
    from peft import LoraConfig, get_peft_model

    from skillweave.trainers import less_features as lf
    from skillweave.trainers.less import LessConfig, build_features

    model, tokenizer = tiny_model_and_tokenizer([str(i) for i in range(10)], seed=1)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    encoded = [lf.encode_example(tokenizer, lf.to_messages({"prompt": f"{i} {i + 1}", "completion": f"{i % 10}"}), 32)
               for i in range(6)]
    n_params = sum(p.numel() for _, p in lf.trainable_parameters(model))
    moments = lf.AdamMoments(torch.rand(n_params), torch.rand(n_params), step=3)
    projector = lf.RademacherProjector(n_params, 16, seed=0, device=devices.model_device(model))
    config = LessConfig(pool="x", targets="y", chunk_examples=4, feature_batch_size=2)
    raw = build_features(model, tokenizer.pad_token_id, encoded, tmp_path / "store", kind="adam", moments=moments,
                         projector=projector, config=config)
    assert projector._matrix is not None and projector._matrix.device == devices.model_device(model)
    grads = lf.batched_gradients(model, encoded, tokenizer.pad_token_id).detach()
    expected = lf.adam_features(grads, moments) @ projector.rows(0, n_params)  # one shot, pool order
    assert ((raw - expected).norm(dim=1) / expected.norm(dim=1)).max() < 1e-3  # fp16 chunks


def test_dpo_turns_dropout_off_as_trl_does():
    """With attention dropout 0.5 the first step's policy log-probs equal the reference: dropout is off."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    config = LlamaConfig(**{**base.config.to_dict(), "attention_dropout": 0.5})
    model = LlamaForCausalLM(config)
    model.load_state_dict(base.state_dict())
    model = apply_lora(model, r=4, alpha=8, dropout=0.5)
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(8))
    result = dpo.train_dpo(model, tokenizer, chosen, rejected, dpo.DPOConfig(lr=1e-3, batch_size=8, optimizer="sgd"))
    assert result["logs"][0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert result["logs"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    model.train()
    ids = torch.tensor([chosen[0][0]])
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gradient_checkpointing_gives_the_same_dpo_update():
    trained = []
    for checkpointing in (False, True):
        model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=4)
        chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(8))
        config = dpo.DPOConfig(lr=1e-2, batch_size=4, optimizer="sgd", gradient_checkpointing=checkpointing)
        dpo.train_dpo(model, tokenizer, chosen, rejected, config)
        trained.append(dict(model.named_parameters()))
    for name, param in trained[0].items():
        assert torch.allclose(trained[1][name], param, atol=1e-6), name


def test_ches_on_a_peft_wrapped_model_uses_the_decoder_of_the_base():
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=1)
    plain = ches.score_pairs(model, tokenizer, make_pairs(5), batch_size=4)
    wrapped = apply_lora(model, r=4, alpha=8)  # B = 0: the same function as the base model
    assert ches._decoder(wrapped) is wrapped.get_base_model().model
    scored = ches.score_pairs(wrapped, tokenizer, make_pairs(5), batch_size=4)
    assert [r["ches_norm"] for r in scored] == pytest.approx([r["ches_norm"] for r in plain], rel=1e-5)


def test_warmup_is_passed_as_a_whole_number_of_steps(training_arguments):
    """`warmup_steps=0.03` means a ratio only on transformers >= 5 (0.03 steps, no warmup, on 4.x)."""
    from skillweave.trainers import sft
    from skillweave.trainers.data import SFTExample

    seen = training_arguments
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    examples = [SFTExample(instruction="a b", input="", response="c d") for _ in range(8)]
    sft.train_sft(model, tokenizer, examples, sft.SFTConfig(max_steps=40, warmup_ratio=0.05, batch_size=4, lr=1e-3,
                                                            device="cpu"))
    assert isinstance(seen["warmup_steps"], int) and seen["warmup_steps"] == 2  # ceil(0.05 x 40)
    assert devices.warmup_steps(0.03, examples=270_000, batch_size=1, grad_accum=128, epochs=4) == 254
    with pytest.raises(ConfigError, match="warmup ratio 1.5"):
        devices.warmup_steps(1.5, examples=1, batch_size=1, grad_accum=1, epochs=1)
