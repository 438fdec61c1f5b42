"""The trainer commands' settings models: one option per field (its description as help), the options and defaults
of earlier releases kept, bad values refused (one `Error:` line, exit 2; ValidationError in Python), and settings
stored by earlier releases still load."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from skillweave.cli import cli, main
from skillweave.trainers.less_config import LessConfig, RandomSelectionConfig
from skillweave.trainers.settings import (
    CHESConfig,
    DPOConfig,
    SFTConfig,
    TopicHeadConfig,
    TopicModelConfig,
    TopicTrainConfig,
    UnlearnConfig,
)

# command -> (settings model, fields it leaves out besides the model's cli_exclude)
COMMANDS = {
    ("train", "sft"): (SFTConfig, set()),
    ("train", "dpo"): (DPOConfig, set()),
    ("ches", "score"): (CHESConfig, set()),
    ("select", "less"): (LessConfig, set()),
    ("select", "infsgd"): (LessConfig, {"train_side", "adam_variant"}),
    ("select", "rds"): (LessConfig, {"train_side", "adam_variant", "aggregation", "similarity", "warmup_fraction",
                                     "warmup_seed", "epochs", "learning_rate", "warmup_ratio", "batch_size",
                                     "grad_accum", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "dim",
                                     "projector_seed", "projector", "chunk_examples", "gradient_method",
                                     "feature_batch_tokens"}),
    ("unlearn",): (UnlearnConfig, set()),
    ("topic-model", "train"): (TopicTrainConfig, set()),
    ("topic-model", "head"): (TopicHeadConfig, set()),
    ("select", "random"): (RandomSelectionConfig, set()),
}


def command(path: tuple[str, ...]) -> click.Command:
    found: click.Command = cli
    for name in path:
        found = found.get_command(click.Context(found), name)
    return found


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_field_is_an_option_with_its_description_as_help(path):
    model, left_out = COMMANDS[path]
    options = {p.name: p for p in command(path).params if isinstance(p, click.Option)}
    fields = {name: info for name, info in model.model_fields.items()
              if name not in model.cli_exclude and name not in left_out}
    assert fields and set(fields) <= set(options)
    for name, info in fields.items():
        assert info.description and options[name].help == info.description, (path, name)
        if info.default is not None and not options[name].required and not info.default_factory:
            assert options[name].default == info.default, (path, name)
    assert not set(left_out) & set(options)
    assert model.model_config["extra"] == "forbid"


# Every option these commands had before their options were generated, with its default then.
EARLIER = {
    ("train", "sft"): {"--data": None, "--model": "local", "--output": None, "--train-template": "chat:vanilla",
                       "--eval-template": "chat:llama", "--system-prompts": None, "--eval-data": None,
                       "--eval-max-new-tokens": 64, "--lora": False, "--lora-r": 8, "--lora-targets": "all-linear",
                       "--lr": 2e-5, "--epochs": 1.0, "--max-steps": -1, "--batch-size": 4, "--grad-accum": 1,
                       "--max-length": 1024, "--seed": 0, "--device": "auto", "--dtype": "auto",
                       "--gradient-checkpointing": False, "--json": False},
    ("train", "dpo"): {"--data": None, "--store-run": None, "--model": "local", "--output": None,
                       "--template": "model", "--beta": 0.1, "--loss": "sigmoid", "--label-smoothing": 0.0,
                       "--c-sft": 0.0, "--optimizer": "rmsprop", "--lr": 1e-6, "--epochs": 1, "--max-steps": None,
                       "--batch-size": 8, "--micro-batch-size": None, "--max-length": 1024,
                       "--ches-keep-lowest": None, "--lora": False, "--lora-r": 8, "--lora-targets": "all-linear",
                       "--seed": 0, "--device": "auto", "--dtype": "auto", "--gradient-checkpointing": False,
                       "--eval-data": None, "--eval-prompts": None, "--eval-max-new-tokens": 64, "--json": False},
    ("ches", "score"): {"--data": None, "--store-run": None, "--model": "local", "--template": "model",
                        "--batch-size": 32, "--max-length": 1024, "--keep-lowest": None, "--output": None,
                        "--device": "auto", "--dtype": "auto", "--json": False},
    ("unlearn",): {"--forget": None, "--model": "latest", "--head": None, "--epsilon": 1.0, "--delta": 1e-5,
                   "--sensitivity": None, "--capacity": 0, "--utility-threshold": 0.1, "--keep-anchors": False,
                   "--noiseless": False, "--newton-only": False, "--seed": 0, "--verify": False, "--dry-run": False,
                   "--json": False},
    ("topic-model", "train"): {"--topics": 5, "--vocab": 500, "--min-df": 2, "--anchor-min-docs": 2,
                               "--items": (), "--name": "store", "--json": False},
    ("select", "less"): {"--pool": "", "--run": "", "--targets": "", "--model": "local", "--dim": 8192,
                         "--fraction": 0.05, "--lora-alpha": 32, "--projector": "numpy", "--device": "auto"},
    ("select", "random"): {"--pool": "", "--run": "", "--fraction": 0.05, "--seed": 0, "--out": "", "--json": False},
    ("topic-model", "head"): {"--label": None, "--model": "latest", "--ridge": 1e-3, "--json": False},
}


def effective_default(option: click.Option, ctx: click.Context):
    """What the option gives when not used (click's "unset" marker: False for a flag, else None)."""
    value = option.get_default(ctx)
    if value is None or value == () or type(value).__name__ == "Sentinel":
        return False if option.is_flag else None
    return value


@pytest.mark.parametrize("path", list(EARLIER), ids=" ".join)
def test_earlier_option_names_and_defaults_are_kept(path):
    ctx = click.Context(command(path))
    options = {opt: p for p in command(path).params if isinstance(p, click.Option) for opt in p.opts}
    for flag, default in EARLIER[path].items():
        assert flag in options, (path, flag)
        assert effective_default(options[flag], ctx) == (None if default == () else default), (path, flag)
    if "--lora" in EARLIER[path]:
        assert options["--lora"].secondary_opts == ["--full"]
    if "--gradient-checkpointing" in EARLIER[path]:
        assert options["--gradient-checkpointing"].secondary_opts == ["--no-gradient-checkpointing"]


@pytest.mark.parametrize("args, message", [
    (["train", "dpo", "--lr", "-1"], "Invalid value for '--lr'"),
    (["train", "dpo", "--lr", "0"], "Invalid value for '--lr'"),
    (["train", "dpo", "--label-smoothing", "0.7"], "Invalid value for '--label-smoothing'"),
    (["train", "sft", "--data", "{data}", "--dtype", "fp8"], "Invalid value for '--dtype'"),
    (["train", "sft", "--data", "{data}", "--scheduler", "cosine_typo"], "Invalid value for '--scheduler'"),
    (["train", "sft", "--data", "{data}", "--warmup-ratio", "1"], "Invalid value for '--warmup-ratio'"),
    (["ches", "score", "--data", "{data}", "--device", "gpu"], "device: Value error, 'gpu' is not one of auto"),
    (["ches", "score", "--keep-lowest", "1.5"], "Invalid value for '--keep-lowest'"),
    (["select", "less", "--pool", "{data}", "--targets", "{data}", "--dim", "100"], "dim: Input should be a multiple "
                                                                                     "of 8"),
    (["select", "less", "--pool", "{data}", "--targets", "{data}", "--projector", "fast"], "'--projector'"),
    (["unlearn", "--forget", "run:x", "--delta", "1"], "Invalid value for '--delta'"),
    (["topic-model", "train", "--topics", "1"], "Invalid value for '--topics'"),
    (["topic-model", "head", "--label", "run:x", "--ridge", "0"], "Invalid value for '--ridge'"),
    (["select", "random", "--pool", "{data}", "--fraction", "0"], "Invalid value for '--fraction'"),
])
def test_a_bad_value_is_one_error_line_and_exit_2(tmp_path, capsys, args, message):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    with pytest.raises(SystemExit) as exc:
        main(["--db", str(tmp_path / "s.db"), *[a.replace("{data}", str(data)) for a in args]])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("Error: ") and len(err.splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened or recorded


@pytest.mark.parametrize("model, values, field", [
    (SFTConfig, {"lr": -1e-5}, "lr"),
    (SFTConfig, {"max_step": 3}, "max_step"),  # a typo'd key
    (DPOConfig, {"loss_type": "hinge"}, "loss_type"),
    (DPOConfig, {"ches_keep_lowest": 0}, "ches_keep_lowest"),
    (CHESConfig, {"dtype": "fp8"}, "dtype"),
    (CHESConfig, {"device": "cuda:x"}, "device"),
    (LessConfig, {"fraction": 1.5}, "fraction"),
    (LessConfig, {"lora_rank": 4}, "lora_rank"),
    (UnlearnConfig, {"epsilon": 0}, "epsilon"),
    (TopicModelConfig, {"n_topic": 3}, "n_topic"),
    (TopicHeadConfig, {"ridge": -1.0}, "ridge"),
    (RandomSelectionConfig, {"fraction": 2}, "fraction"),
])
def test_bad_settings_through_the_python_api_are_validation_errors(model, values, field):
    with pytest.raises(ValidationError) as exc:
        model(**values)
    assert [e["loc"][0] for e in exc.value.errors()] == [field]


def test_devices_and_precisions_that_are_accepted():
    for device in ("auto", "cpu", "cuda", "cuda:1", "CUDA:0"):
        assert CHESConfig(device=device).device == device
    assert [CHESConfig(dtype=d).dtype for d in ("auto", "fp32", "bf16", "fp16")] == ["auto", "fp32", "bf16", "fp16"]


# Settings exactly as releases before these models stored them (the dataclasses' asdict, as JSON in the store).
STORED = {
    SFTConfig: '{"data": "sda.jsonl", "model": "local", "output_dir": "ckpt", "train_template": "chat:vanilla", '
               '"eval_template": "chat:llama", "system_prompts": null, "eval_data": null, "eval_max_new_tokens": 64, '
               '"eval_temperature": 0.0, "lora": true, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, '
               '"lora_targets": "all-linear", "lr": 0.001, "epochs": 1.0, "max_steps": 2, "batch_size": 4, '
               '"grad_accum": 1, "max_length": 1024, "warmup_ratio": 0.03, "scheduler": "cosine", "seed": 0, '
               '"db": "s.db", "device": "auto", "dtype": "auto", "gradient_checkpointing": false}',
    DPOConfig: '{"data": "pairs.jsonl", "store_run": null, "model": "local", "output_dir": null, "template": "model", '
               '"beta": 0.1, "loss_type": "ipo", "label_smoothing": 0.0, "c_sft": 0.0, "optimizer": "rmsprop", '
               '"lr": 1e-06, "epochs": 1, "max_steps": null, "batch_size": 8, "micro_batch_size": null, '
               '"max_length": 1024, "ches_keep_lowest": 0.05, "ches_batch_size": 32, "lora": false, "lora_r": 8, '
               '"lora_alpha": 16, "lora_dropout": 0.0, "lora_targets": "all-linear", "seed": 0, "eval_data": null, '
               '"eval_prompts": null, "eval_max_new_tokens": 64, "device": "cpu", "dtype": "auto", '
               '"gradient_checkpointing": false, "db": "s.db"}',
    CHESConfig: '{"data": "pairs.jsonl", "store_run": null, "model": "local", "template": "model", "batch_size": 32, '
                '"max_length": 1024, "keep_lowest": 0.05, "output": "kept.jsonl", "db": "s.db", "device": "auto", '
                '"dtype": "bf16"}',
    LessConfig: '{"pool": "pool.jsonl", "pool_run": "", "targets": "t.jsonl", "model": "local", "out": "", '
                '"name": "", "warmup_fraction": 0.05, "warmup_seed": 42, "epochs": 4, "learning_rate": 2e-05, '
                '"warmup_ratio": 0.03, "batch_size": 4, "grad_accum": 1, "lora_r": 8, "lora_alpha": 32, '
                '"lora_dropout": 0.1, "lora_targets": "q_proj,k_proj,v_proj,o_proj", "max_length": 2048, '
                '"dim": 1024, "projector_seed": 0, "projector": "numpy", "adam_variant": "paper", '
                '"aggregation": "code", "train_side": "adam", "similarity": "cosine", "fraction": 0.1, '
                '"feature_batch_size": 32, "feature_batch_tokens": 8192, "chunk_examples": 160, '
                '"gradient_method": "batched", "seed": 0, "device": "auto", "dtype": "auto"}',
    UnlearnConfig: '{"epsilon": 2.0, "delta": 1e-05, "sensitivity": null, "capacity": 10, "utility_threshold": 0.1, '
                   '"noiseless": false, "keep_anchors": true, "newton_only": false, "seed": 3}',
    TopicModelConfig: '{"n_topics": 4, "anchor_min_docs": 2, "projection_dim": 0, "cleanup": true, "seed": 0, '
                      '"max_iter": 10}',
}


# settings added after those rows were stored: new fields go last, so older rows keep their order
ADDED_SINCE = {SFTConfig: {"fsdp": False}, DPOConfig: {"fsdp": False}, LessConfig: {"projection_buffer_mb": 0}}


@pytest.mark.parametrize("model", list(STORED), ids=lambda m: m.__name__)
def test_settings_stored_by_earlier_releases_load_and_are_written_in_the_same_shape(model):
    stored = json.loads(STORED[model])
    settings = model.from_stored(stored)
    # model_dump() has the same keys, order and values, then the settings added since (at their defaults, last)
    added = ADDED_SINCE.get(model, {})
    assert settings.model_dump() == {**stored, **added} and list(settings.model_dump()) == [*stored, *added]
    assert model.from_stored({**stored, "retired_setting": 1}) == settings  # a key a later release dropped
    with pytest.raises(ValidationError):
        model.model_validate({**stored, "retired_setting": 1})  # but new settings never take unknown keys


def test_topic_model_train_options_reach_the_stored_model_and_old_rows_load(tmp_path):
    from skillweave.store import Store, jdump
    from skillweave.trainers.unlearning.lineage import load_model

    db = str(tmp_path / "tm.db")
    store = Store(db)
    run_id = store.create_run("demo", {"n": 24}, run_id="run-a")
    words = ["telescope galaxy orbit planet comet", "oven flour butter recipe dough", "harbor mast wind sail tide"]
    for i in range(24):
        item_id = store.ensure_item(run_id, "demo.text", i, skills=["x"])
        store.update_item(item_id, payload_update={"text": f"{words[i % 3]} {words[(i + 1) % 3].split()[i % 5]}"},
                          status="done")
    store.close()
    result = CliRunner().invoke(cli, ["--db", db, "topic-model", "train", "--topics", "3", "--vocab", "50",
                                      "--max-iter", "5", "--no-cleanup", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = Store(db)
    row = next(store.db["topic_models"].rows)
    assert json.loads(row["config"]) == {"n_topics": 3, "anchor_min_docs": 2, "projection_dim": 0,
                                         "cleanup": False, "seed": 0, "max_iter": 5}
    store.db["topic_models"].update(row["id"], {"config": jdump({**json.loads(row["config"]), "retired": 1})})
    model, _ = load_model(store, row["id"])
    assert model.config == TopicModelConfig(n_topics=3, anchor_min_docs=2, cleanup=False, max_iter=5)


def test_the_option_tables_in_the_docs_are_the_generated_ones():
    import re
    from pathlib import Path

    from skillweave.cli.settings_command import options_table

    marker = re.compile(r"<!-- options of `skillweave ([^`]+)`[^>]*-->\n((?:\|.*\n)*)")
    found = {}
    for page in ("trainers-sft-dpo-ches.md", "less.md", "unlearning.md"):
        text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
        for match in marker.finditer(text):
            found[match.group(1)] = match.group(2).rstrip("\n")
    assert set(found) == {" ".join(path) for path in COMMANDS} - {"select infsgd", "select rds"}  # less's table
    for name, table in found.items():
        assert table == options_table(command(tuple(name.split()))), f"docs table of '{name}' is out of date"


def test_train_sft_stores_the_settings_it_ran_with(tmp_path, capsys):
    from skillweave.store import Store
    from skillweave.trainers.models import tiny_model_and_tokenizer
    from skillweave.trainers.templates import template_words

    model, tokenizer = tiny_model_and_tokenizer([*template_words(), *"what is one two three".split()], seed=3)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"what is {w}", "completion": w}) for w in ["one", "two"] * 4))
    db, out = tmp_path / "s.db", tmp_path / "ckpt"
    main(["--db", str(db), "train", "sft", "--data", str(data), "--model", str(tmp_path / "tiny"), "--output", str(out),
          "--max-steps", "1", "--scheduler", "constant", "--warmup-ratio", "0", "--eval-temperature", "0.5", "--json"])
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    expected = SFTConfig(data=str(data), model=str(tmp_path / "tiny"), output_dir=str(out), max_steps=1,
                         scheduler="constant", warmup_ratio=0, eval_temperature=0.5, db=str(db))
    run = Store(str(db)).get_run("latest")
    assert run["pipeline"] == "train-sft" and run["config"] == expected.model_dump()
    assert SFTConfig.from_stored(run["config"]) == expected
    saved = json.loads((out / "skillweave_training.json").read_text())
    assert SFTConfig.from_stored(saved["config"]) == expected
