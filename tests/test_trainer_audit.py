"""Issue 16 audit: a fake device split (the model on the `meta` device) for what DPO and CHES keep, fp16 training
(mixed precision with loss scaling, on the CPU), dropout off during the DPO loss, gradient checkpointing switched
on, and the CUDA-only branches of device resolution and SFT placement exercised on the CPU with fakes."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from test_devices import WORDS, make_pairs  # the same vocabulary and pairs as the device tests

from skillweave.errors import ConfigError
from skillweave.trainers import ches, devices, dpo, sft
from skillweave.trainers.ches import encode_pairs
from skillweave.trainers.data import SFTExample
from skillweave.trainers.models import apply_lora, tiny_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- a fake device split: the model on `meta`, everything created without `device=` lands on the CPU ------------
class FakeLM(torch.nn.Module):
    """A causal LM in plain torch ops (transformers' mask code reads values, which `meta` tensors do not have)."""

    def __init__(self, vocab: int, width: int = 8):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=width, use_cache=False)
        self.embed = torch.nn.Embedding(vocab, width)
        self.mix = torch.nn.Linear(width, width)
        self.drop = torch.nn.Dropout(0.1)
        self.lm_head = torch.nn.Linear(width, vocab)

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=False, **_):
        first = self.embed(input_ids)
        last = torch.tanh(self.mix(self.drop(first)))
        return SimpleNamespace(logits=self.lm_head(last), hidden_states=(first, last))


@contextlib.contextmanager
def meta_readouts(moved_to_cpu: list[torch.device]):
    """Numbers read out of `meta` tensors (item, float, tolist) are zeros; `.cpu()` records where a tensor came from.

    A meta tensor holds no values, so this lets a whole method run with its model on `meta`: any tensor the method
    keeps that was built without the model's device is then on the CPU instead, and the assertions see it.
    """
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "tolist", "cpu")}

    def item(self):
        return 0.0 if self.is_meta else originals["item"](self)

    def to_float(self):
        return 0.0 if self.is_meta else originals["__float__"](self)

    def tolist(self):
        return torch.zeros(self.shape).tolist() if self.is_meta else originals["tolist"](self)

    def cpu(self, *args, **kwargs):
        moved_to_cpu.append(self.device)
        return torch.zeros(self.shape, dtype=self.dtype) if self.is_meta else originals["cpu"](self, *args, **kwargs)

    torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist, torch.Tensor.cpu = item, to_float, tolist, cpu
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def meta_model_and_tokenizer():
    _, tokenizer = tiny_model_and_tokenizer(WORDS, seed=0)
    return FakeLM(len(tokenizer)).to("meta"), tokenizer


def test_dpo_keeps_reference_logps_policy_logps_and_optimizer_state_on_the_model_device(monkeypatch):
    model, tokenizer = meta_model_and_tokenizer()
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(6))
    kept: dict[str, list] = {"logps": [], "optimizers": []}
    real_all_logps, real_optimizer = dpo.all_logps, dpo.make_optimizer

    def spy_all_logps(*args, **kwargs):
        kept["logps"].append(real_all_logps(*args, **kwargs))
        return kept["logps"][-1]

    def spy_optimizer(*args, **kwargs):
        kept["optimizers"].append(real_optimizer(*args, **kwargs))
        return kept["optimizers"][-1]

    monkeypatch.setattr(dpo, "all_logps", spy_all_logps)
    monkeypatch.setattr(dpo, "make_optimizer", spy_optimizer)
    moved: list[torch.device] = []
    for name in ("rmsprop", "adamw"):
        with meta_readouts(moved):
            result = dpo.train_dpo(model, tokenizer, chosen, rejected,
                                   dpo.DPOConfig(lr=1e-3, batch_size=3, optimizer=name))
        assert result["steps"] == 2
    assert moved == []  # nothing was moved to the CPU
    # reference (before) and final log-probs of both runs: all on the model's device
    assert len(kept["logps"]) == 8 and {t.device.type for t in kept["logps"]} == {"meta"}
    for optimizer in kept["optimizers"]:
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
        assert state and {t.device.type for t in state} == {"meta"}  # RMSprop square_avg; Adam exp_avg(_sq)


def test_ches_sums_and_scores_stay_on_the_model_device_until_they_are_saved(monkeypatch):
    model, tokenizer = meta_model_and_tokenizer()
    kept = []
    real = ches.hidden_sums

    def spy(*args, **kwargs):
        kept.extend(real(*args, **kwargs))
        return kept[0], kept[1], kept[2]

    monkeypatch.setattr(ches, "hidden_sums", spy)
    moved: list[torch.device] = []
    with meta_readouts(moved):
        records = ches.score_pairs(model, tokenizer, make_pairs(5), batch_size=2)
    sums, lengths, lasts = kept
    assert sums.device.type == lasts.device.type == "meta"
    assert len(records) == 5 and lengths.tolist() == [r["len_chosen"] for r in records] + [r["len_rejected"] for r in records]
    # CHES, CHES~ and the last-state product are computed on the model's device; they leave it once, to be saved
    assert [d.type for d in moved] == ["meta", "meta", "meta"]


# ---- fp16 training: mixed precision with a loss scale --------------------------------------------------------------
def test_dpo_in_fp16_trains_with_fp32_weights_autocast_and_a_loss_scale():
    """Pure fp16 gave NaN after the first RMSprop step (eps 1e-8 is 0 in fp16); now finite and close to fp32."""
    trained = {}
    for dtype in ("fp32", "fp16"):
        model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
        if dtype == "fp16":
            model.half()  # as `--dtype fp16` loads it
        seen: list[torch.dtype] = []
        model.lm_head.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.dtype))
        chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(8))
        result = dpo.train_dpo(model, tokenizer, chosen, rejected,
                               dpo.DPOConfig(lr=1e-3, batch_size=4, epochs=3, dtype=dtype))
        trained[dtype] = (model, result, set(seen))
    model, result, seen = trained["fp16"]
    assert seen == {torch.float16}  # the forward ran under fp16 autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp32 master weights
    assert all(torch.isfinite(p).all() for p in model.parameters())
    losses = [e["loss"] for e in result["logs"]]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    reference = [e["loss"] for e in trained["fp32"][1]["logs"]]
    assert losses == pytest.approx(reference, abs=2e-2)
    assert trained["fp32"][2] == {torch.float32}


def test_sft_in_fp16_uses_the_trainer_mixed_precision_with_fp32_weights(training_arguments):
    seen = training_arguments
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    model.half()
    examples = [SFTExample(instruction="a b", input="", response="c d e") for _ in range(8)]
    result = sft.train_sft(model, tokenizer, examples, sft.SFTConfig(max_steps=3, batch_size=4, lr=1e-3,
                                                                     warmup_ratio=0, device="cpu", dtype="fp16"))
    assert seen["fp16"] is True
    assert {p.dtype for p in result["model"].parameters()} == {torch.float32}
    assert len(result["losses"]) == 3 and all(math.isfinite(x) for x in result["losses"])


def test_fp16_mixed_precision_is_inert_for_fp32_and_bf16():
    for dtype, cast in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("auto", torch.float32)):
        model, _ = tiny_model_and_tokenizer(WORDS, seed=1)
        model.to(cast)
        autocast, scaler = devices.fp16_mixed_precision(model, dtype)
        assert not scaler.is_enabled() and {p.dtype for p in model.parameters()} == {cast}
        with autocast():
            assert not torch.is_autocast_enabled("cpu")


# ---- dropout, gradient checkpointing ------------------------------------------------------------------------------
def test_every_dropout_is_zero_while_the_dpo_loss_is_computed(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    base, tokenizer = tiny_model_and_tokenizer(WORDS, seed=3)
    model = LlamaForCausalLM(LlamaConfig(**{**base.config.to_dict(), "attention_dropout": 0.3}))
    model = apply_lora(model, r=4, alpha=8, dropout=0.3)
    probabilities = []
    real = dpo.dpo_loss

    def check(*args, **kwargs):
        probabilities.append({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
                             | {m.attention_dropout for m in model.modules() if hasattr(m, "attention_dropout")})
        return real(*args, **kwargs)

    monkeypatch.setattr(dpo, "dpo_loss", check)
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(4))
    dpo.train_dpo(model, tokenizer, chosen, rejected, dpo.DPOConfig(lr=1e-3, batch_size=2, optimizer="sgd"))
    assert len(probabilities) == 2 and all(p == {0.0} for p in probabilities)


def test_gradient_checkpointing_is_switched_on_in_the_model(monkeypatch):
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=4)
    chosen, rejected, _ = encode_pairs(tokenizer, make_pairs(4))
    dpo.train_dpo(model, tokenizer, chosen, rejected,
                  dpo.DPOConfig(lr=1e-3, batch_size=4, optimizer="sgd", gradient_checkpointing=True))
    assert model.is_gradient_checkpointing and model.config.use_cache is False
    plain, _ = tiny_model_and_tokenizer(WORDS, seed=4)
    dpo.train_dpo(plain, tokenizer, chosen, rejected, dpo.DPOConfig(lr=1e-3, batch_size=4, optimizer="sgd"))
    assert not plain.is_gradient_checkpointing

    import transformers

    during = []
    real = transformers.Trainer.training_step

    def spy(self, model, *args, **kwargs):
        during.append(self.model.is_gradient_checkpointing)
        return real(self, model, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", spy)
    examples = [SFTExample(instruction="a b", input="", response="c d") for _ in range(4)]
    for flag in (True, False):
        model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=4)
        sft.train_sft(model, tokenizer, examples, sft.SFTConfig(max_steps=1, batch_size=4, device="cpu",
                                                                gradient_checkpointing=flag))
    assert during == [True, False]


# ---- CUDA-only branches, run on the CPU with a faked torch.cuda ---------------------------------------------------
def fake_cuda(monkeypatch, *, count: int = 2, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_means_cuda_and_bf16_where_available(monkeypatch):
    fake_cuda(monkeypatch)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="cuda:N with N below 2"):
        devices.resolve_device("cuda:2")
    assert devices.resolve_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert devices.resolve_dtype("fp16", torch.device("cuda", 0)) is torch.float16
    fake_cuda(monkeypatch, bf16=False)
    assert devices.resolve_dtype("auto", torch.device("cuda", 0)) is torch.float32  # e.g. a V100: no bf16


def test_sft_on_cuda_makes_the_model_device_current_and_does_not_force_the_cpu(monkeypatch):
    import transformers

    calls, seen = [], {}

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(sft, "model_device", lambda model: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(transformers, "TrainingArguments", capture)
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=5)
    examples = [SFTExample(instruction="a b", input="", response="c d") for _ in range(4)]
    with pytest.raises(Stop):
        sft.train_sft(model, tokenizer, examples, sft.SFTConfig(max_steps=1, device="cuda:1"))
    assert calls == [torch.device("cuda", 1)] and seen["use_cpu"] is False and not seen.get("fp16")


# ---- every trainer command with --device cpu and each --dtype, in the default suite --------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import json

    folder = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_model_and_tokenizer(WORDS, seed=6)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(p.to_dict()) for p in make_pairs(6)))
    (folder / "sft.jsonl").write_text("\n".join(json.dumps({"prompt": "a b", "completion": "c d e"}) for _ in range(4)))
    (folder / "eval.jsonl").write_text(json.dumps({"prompt": "a b"}))
    return folder


@pytest.mark.parametrize(("command", "dtype"), [
    ("dpo", "fp16"), ("dpo", "bf16"), ("sft", "fp16"), ("sft", "bf16"), ("ches", "fp16"), ("ches", "fp32")])
def test_every_trainer_command_runs_on_the_cpu_in_each_dtype(tiny_folder, tmp_path, capsys, command, dtype):
    import json

    from skillweave.cli import main
    from skillweave.store import Store

    f, db = tiny_folder, tmp_path / "s.db"
    common = ["--model", str(f / "model"), "--device", "cpu", "--dtype", dtype, "--json"]
    if command == "dpo":  # fp16: full fine-tuning with RMSprop (pure fp16 gave NaN); bf16: LoRA on a bf16 base
        tuning = ["--full", "--lr", "1e-3"] if dtype == "fp16" else ["--lora", "--lora-r", "2", "--lr", "1e-2",
                                                                     "--optimizer", "adamw"]
        args = ["train", "dpo", "--data", str(f / "pairs.jsonl"), *tuning, "--batch-size", "3", *common]
    elif command == "sft":  # full fine-tuning, then generation for the evaluation
        args = ["train", "sft", "--data", str(f / "sft.jsonl"), "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3",
                "--eval-data", str(f / "eval.jsonl"), "--eval-max-new-tokens", "2", *common]
    else:
        args = ["ches", "score", "--data", str(f / "pairs.jsonl"), "--batch-size", "4", *common]
    main(["--db", str(db), *args])
    summary = json.loads(capsys.readouterr().out)
    if command == "dpo":
        assert summary["steps"] == 2 and all(math.isfinite(e["loss"]) for e in summary["logs"])
        assert math.isfinite(summary["delta_logp_chosen"])
    elif command == "sft":
        assert summary["steps"] == 2 and all(math.isfinite(x) for x in summary["losses"])
        assert summary["evaluation"]["n_safety"] == 1
    else:
        assert summary["scored"] == 6 and all(math.isfinite(r["ches_norm"]) for r in summary["scores"])
    run = Store(str(db)).get_run(summary["run_id"])
    assert run["status"] == "done" and (run["config"]["device"], run["config"]["dtype"]) == ("cpu", dtype)
