"""FSDP (trainers/fsdp.py): `train dpo --full --fsdp` under `accelerate launch --cpu --num_processes 2` shards the
policy with FSDP2 over gloo and makes the same update as one process without sharding; the settings FSDP needs
are usage errors otherwise (`train sft --fsdp`: tests/test_sft_fsdp.py)."""

from __future__ import annotations

import json
import os

import pytest
import test_multiprocess as mp
import torch

from skillweave.cli import main
from skillweave.errors import ConfigError
from skillweave.trainers.fsdp import check_fsdp, layer_classes, pad_passes
from skillweave.trainers.models import tiny_model_and_tokenizer

tiny_pairs = mp.tiny_pairs  # the fixture: a tiny saved model and 11 preference pairs


def test_pad_passes_evens_out_the_round_robin_shares():
    # 11 items over 2 processes: 6 and 5; in passes of 2: 3 and 3; in passes of 5: 2 and 1 -> one pad for rank 1
    assert pad_passes(11, 2, 2, 6) == 0 and pad_passes(11, 2, 2, 5) == 0
    assert pad_passes(11, 5, 2, 6) == 0 and pad_passes(11, 5, 2, 5) == 1
    assert pad_passes(1, 3, 2, 0) == 1  # a step with one pair: the process without a pair runs one empty pass
    assert pad_passes(4, 16, 1, 4) == 0


def test_fsdp_needs_several_processes_and_full_fine_tuning():
    with pytest.raises(ConfigError, match="several processes"):
        check_fsdp(lora=False, world=1)
    with pytest.raises(ConfigError, match="full fine-tuning"):
        check_fsdp(lora=True, world=2)
    with pytest.raises(ConfigError, match="--eval-data generates text"):
        check_fsdp(lora=False, world=2, generates="--eval-data")
    check_fsdp(lora=False, world=2)


@pytest.mark.parametrize("command", [["train", "dpo", "--data", "pairs.jsonl"], ["train", "sft", "--data", "sft.jsonl"]])
def test_fsdp_in_one_process_is_a_usage_error(tiny_pairs, capsys, command):
    tmp_path = tiny_pairs
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    (tmp_path / "sft.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    os.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--db", "x.db", *command, "--model", "tiny", "--device", "cpu", "--fsdp"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "several processes" in err and "Traceback" not in err


def test_layer_classes_name_the_decoder_layer():
    model, _ = tiny_model_and_tokenizer(list("abcd"), seed=0)
    assert layer_classes(model) == {"LlamaDecoderLayer"}


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_dpo_fsdp_two_processes_make_the_same_update_as_one(tiny_pairs, capsys):
    args = ["train", "dpo", "--data", "pairs.jsonl", "--model", "tiny", "--device", "cpu", "--optimizer", "adamw",
            "--lr", "1e-2", "--batch-size", "5", "--micro-batch-size", "2", "--full", "--json"]
    os.chdir(tiny_pairs)
    one = json.loads(mp.one_process(["--db", "one.db", *args, "--output", "one"], capsys))
    two = json.loads(mp.launch(["--db", "two.db", *args, "--fsdp", "--output", "two"], tiny_pairs))
    assert two["steps"] == one["steps"] == 3  # the last step has one pair: the other process runs an empty pass
    assert [e["loss"] for e in two["logs"]] == pytest.approx([e["loss"] for e in one["logs"]], abs=1e-6)
    assert two["delta_logp_chosen"] == pytest.approx(one["delta_logp_chosen"], abs=1e-5)
    base, a, b = (mp._weights(tiny_pairs / name) for name in ("tiny", "one", "two"))
    assert a.keys() == b.keys()
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 2e-5  # AdamW: the same update to float order (6.8e-6)
    assert max((a[n] - base[n]).abs().max().item() for n in a) > 1e-3  # and the update is not nothing
    assert all(isinstance(t, torch.Tensor) and not hasattr(t, "placements") for t in b.values())  # plain tensors
