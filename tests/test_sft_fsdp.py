"""`train sft --fsdp` (trainers/fsdp.py, trainers/sft.py): the model is sharded with FSDP2 at load time by
transformers (`DistributedConfig`) and trained in `Trainer`; on CPU processes (gloo) two sharded processes make the
same updates as one unsharded process, and the saved checkpoint is a plain transformers folder."""

from __future__ import annotations

import json
import os

import pytest
import test_multiprocess as mp
import torch

from skillweave.errors import ConfigError
from skillweave.trainers import fsdp, sft
from skillweave.trainers.data import SFTExample
from skillweave.trainers.models import tiny_model_and_tokenizer

LETTERS = "abcdefghijkl"


def _save_tiny(folder, *, tied: bool = False) -> None:
    """A tiny model; `tied`: the LM head shares the embedding matrix (as SmolLM2 and Llama-3.2-1B do)."""
    model, tokenizer = tiny_model_and_tokenizer(mp.WORDS, seed=5)
    if tied:
        from transformers import LlamaForCausalLM

        model.config.tie_word_embeddings = True
        torch.manual_seed(5)
        model = LlamaForCausalLM(model.config)
        assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture()
def sft_folder(tmp_path):
    """A tiny saved model and 16 SFT rows with responses of 1 to 5 tokens (so per-token loss weighting matters)."""
    _save_tiny(tmp_path / "tiny")
    rows = [{"prompt": f"{LETTERS[i % 12]} {LETTERS[(i + 4) % 12]}",
             "completion": " ".join(LETTERS[(i + j) % 12] for j in range(1 + i % 5))} for i in range(16)]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _weights(folder) -> dict[str, torch.Tensor]:
    return {name: value.float() for name, value in mp._weights(folder).items()}


# Every step sees all 16 examples (one process: a batch of 16; two: 4 per process x 2 accumulation steps), so the
# data order inside a step cannot make the runs differ; 3 epochs = 3 AdamW steps (lr 1e-2, one warmup step).
COMMON = ["train", "sft", "--data", "sft.jsonl", "--model", "tiny", "--device", "cpu", "--epochs", "3", "--lr", "1e-2",
          "--json"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied-embeddings"])
def test_sft_fsdp_two_cpu_processes_make_the_same_updates_as_one(sft_folder, capsys, tied):
    if tied:  # transformers folds the tied LM head into the embedding's FSDP unit
        _save_tiny(sft_folder / "tiny", tied=True)
    os.chdir(sft_folder)
    one = json.loads(mp.one_process(["--db", "one.db", *COMMON, "--batch-size", "16", "--output", "one"], capsys))
    two = json.loads(mp.launch(["--db", "two.db", *COMMON, "--batch-size", "4", "--grad-accum", "2",
                                "--gradient-checkpointing", "--fsdp", "--output", "two"], sft_folder))
    assert two["fsdp"] == {"processes": 2, "weights_held": 0.5}  # each process held half of the weights
    assert "fsdp" not in one
    assert two["steps"] == one["steps"] == 3
    assert two["losses"] == pytest.approx(one["losses"], abs=1e-6)  # token-weighted across processes (measured: equal)
    # AdamW hides a constant gradient scale (a mean where a sum belongs would still give the same weights): the
    # gradient norms before clipping show it
    assert len(two["grad_norms"]) == 3 and two["grad_norms"] == pytest.approx(one["grad_norms"], rel=1e-5)
    base, a, b = (_weights(sft_folder / name) for name in ("tiny", "one", "two"))
    assert a.keys() == b.keys()
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 5e-5  # float summation order (2.8e-6; tied 1.3e-5)
    assert max((a[n] - base[n]).abs().max().item() for n in a) > 1e-3  # and the update is not nothing (1.5e-2)
    saved = json.loads((sft_folder / "two" / "skillweave_training.json").read_text())
    assert saved["config"]["fsdp"] is True and saved["method"] == "sft"
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(sft_folder / "two")) == len(AutoTokenizer.from_pretrained(sft_folder / "tiny"))
    config = json.loads((sft_folder / "two" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "distributed_config" not in config
    from skillweave.store import Store

    store = Store(str(sft_folder / "two.db"))
    assert [r["status"] for r in store.db["runs"].rows] == ["done"]  # one process records
    assert len(list(store.db["train_checkpoints"].rows)) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_sft_fsdp_in_bf16_stays_with_one_process_to_bf16_rounding(sft_folder, capsys):
    os.chdir(sft_folder)
    args = [*COMMON, "--dtype", "bf16"]
    one = json.loads(mp.one_process(["--db", "one.db", *args, "--batch-size", "16", "--output", "one"], capsys))
    two = json.loads(mp.launch(["--db", "two.db", *args, "--batch-size", "8", "--fsdp", "--output", "two"],
                               sft_folder))
    assert two["fsdp"]["weights_held"] == 0.5
    # bf16 logits carry ~3 digits: measured up to 1.1e-3 apart (1.6e-5 with other batch splits), while the loss
    # falls by 0.47 over the three steps
    assert two["losses"] == pytest.approx(one["losses"], abs=5e-3)
    assert one["losses"][0] - one["losses"][-1] > 0.1
    from transformers import AutoModelForCausalLM

    assert next(AutoModelForCausalLM.from_pretrained(sft_folder / "two").parameters()).dtype == torch.bfloat16
    base, a, b = (_weights(sft_folder / name) for name in ("tiny", "one", "two"))
    diff = torch.cat([(a[n] - b[n]).flatten() for n in a]).abs().mean()
    moved = torch.cat([(a[n] - base[n]).flatten() for n in a]).abs().mean()
    # bf16 keeps ~3 digits: the two runs differ by a rounding step on some weights (measured: mean 3.2e-5 against
    # a mean update of 1.2e-2); a wrong shard or a missing reduction would differ by the size of the update
    assert diff < 0.01 * moved


def test_sft_fsdp_shards_where_transformers_puts_the_shards(monkeypatch):
    """transformers' sharded loading takes its device type from torch's accelerator (mps -> cpu); a process that
    trains on another device is refused before anything is loaded."""
    from transformers.distributed import DistributedConfig

    expected = torch._C._get_accelerator().type  # what transformers.distributed.utils reads
    assert fsdp.accelerator_type() == ("cpu" if expected == "mps" else expected)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(fsdp, "accelerator_type", lambda: "cpu")
    built = fsdp.sharded_load_config(torch.device("cpu"))
    assert isinstance(built, DistributedConfig) and built.fsdp_size == 4 and built.tp_size == 1
    monkeypatch.setattr(fsdp, "accelerator_type", lambda: "cuda")  # a CUDA build of torch, `--device cpu`
    with pytest.raises(ConfigError, match=r"shards on torch's accelerator \(cuda\).*--device cpu"):
        fsdp.sharded_load_config(torch.device("cpu"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # `accelerate launch --use_fsdp`: accelerate would shard too
    with pytest.raises(ConfigError, match="drop accelerate's --use_fsdp"):
        fsdp.sharded_load_config(torch.device("cuda", 0))


def test_shard_fraction_of_an_unsharded_model_is_one():
    model, _ = tiny_model_and_tokenizer(mp.WORDS, seed=0)
    assert fsdp.shard_fraction(model) == 1.0


def test_train_sft_with_fsdp_refuses_a_model_that_was_not_loaded_sharded():
    model, tokenizer = tiny_model_and_tokenizer(mp.WORDS, seed=0)
    examples = [SFTExample(instruction="a b", input="", response="c d")]
    with pytest.raises(ConfigError, match="not loaded sharded"):
        sft.train_sft(model, tokenizer, examples, sft.SFTConfig(max_steps=1, device="cpu", fsdp=True))
