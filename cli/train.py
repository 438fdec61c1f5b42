"""`skillweave train sft|dpo|templates` and `skillweave ches score`: the SFT (PTST) and DPO (CHES) trainers."""

from __future__ import annotations

from typing import Any

import click

from skillweave.cli.common import echo_json, echo_table, json_option
from skillweave.cli.settings_command import SettingsCommand


def _db(ctx: click.Context) -> str:
    return ctx.find_root().obj["db"]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _main_process() -> bool:
    from skillweave.trainers.devices import is_main_process

    return is_main_process()


def _print_summary(summary: dict[str, Any], as_json: bool, skip: tuple[str, ...] = ()) -> None:
    if not _main_process():  # under `accelerate launch` one process reports
        return
    if as_json:
        echo_json({k: v for k, v in summary.items() if k not in skip})
        return
    flat: list[dict[str, Any]] = []
    for key, value in summary.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            flat += [{"key": f"{key}.{k}", "value": v} for k, v in value.items()]
        elif isinstance(value, list):
            flat.append({"key": key, "value": ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)})
        else:
            flat.append({"key": key, "value": value})
    echo_table(flat, ["key", "value"])


# Options generated from the settings models (trainers/settings.py): one per field, help from its description.
PATH_IN = {"type": click.Path(exists=True, dir_okay=False)}
SETTINGS = "skillweave.trainers.settings:"


@click.group("train")
def train_group() -> None:
    """Fine-tune models on exported data: SFT with PTST templates, DPO with CHES filtering."""


@train_group.command("sft", cls=SettingsCommand, settings=SETTINGS + "SFTConfig", overrides={
    "data": {**PATH_IN, "required": True, "default": None}, "system_prompts": PATH_IN, "eval_data": PATH_IN})
@json_option
@click.pass_context
def train_sft(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Supervised fine-tuning, loss on the response only; records the templates with the checkpoint.

    \b
    Example (PTST: tune without the safety prompt, test with it):
      skillweave train sft --data sda.jsonl --model local --output ckpt/sft \\
        --train-template chat:vanilla --eval-template chat:llama --eval-data eval.jsonl --max-steps 20
      skillweave train sft --data sda.jsonl --model ./llama-3-8b --device cuda --dtype bf16 --lora \\
        --gradient-checkpointing --output ckpt/sft-8b
      accelerate launch --num_processes 4 -m skillweave train sft --data sda.jsonl --model ./llama-3-8b --lora
      accelerate launch --multi_gpu --num_processes 4 -m skillweave train sft --data sda.jsonl \
        --model ./llama-3-8b --dtype bf16 --full --fsdp --output ckpt/sft-full
    """
    config = ctx.command.settings(options, db=_db(ctx))  # a bad value stops here, before torch loads
    from skillweave.trainers import sft

    _quiet_transformers()
    summary = sft.run(config)
    _print_summary(summary, as_json)


@train_group.command("dpo", cls=SettingsCommand, settings=SETTINGS + "DPOConfig", overrides={
    "data": PATH_IN, "eval_data": PATH_IN, "eval_prompts": PATH_IN})
@json_option
@click.pass_context
def train_dpo(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """DPO with a frozen reference; logs likelihood displacement (change of mean ln pi(chosen)).

    \b
    Example (keep the 5% of pairs least likely to displace the preferred response):
      skillweave train dpo --data pairs.jsonl --model local --ches-keep-lowest 0.05 --lr 1e-6 --output ckpt/dpo
      skillweave train dpo --data pairs.jsonl --model local --lora --lora-r 8 --lr 1e-4 --output ckpt/dpo-lora
      skillweave train dpo --data pairs.jsonl --model ./ckpt/sft-8b --device cuda:0 --dtype bf16 --lora
      accelerate launch --cpu --num_processes 2 -m skillweave train dpo --data pairs.jsonl --device cpu
      accelerate launch --multi_gpu --num_processes 4 -m skillweave train dpo --data pairs.jsonl \
        --model ./ckpt/sft-8b --dtype bf16 --full --fsdp --output ckpt/dpo-full
    """
    config = ctx.command.settings(options, db=_db(ctx))  # a bad value stops here, before torch loads
    from skillweave.trainers import dpo

    _quiet_transformers()
    summary = dpo.run(config)
    _print_summary(summary, as_json, skip=("before", "after") if as_json else ("before", "after", "logs"))


@train_group.command("templates")
@click.option("--show", default=None, help="Print one template rendered on an example instruction.")
@json_option
def train_templates(show: str | None, as_json: bool) -> None:
    """List the PTST prompt-template registry (name, wrapper, content, content hash).

    \b
    Example:
      skillweave train templates
      skillweave train templates --show chat:llama
    """
    from skillweave.trainers.templates import get_template, list_templates

    if show:
        template = get_template(show)
        if template.wrapper == "model":
            click.echo(f"{show} renders with the model's own chat template (bind a tokenizer to see it)")
            return
        text = template.render_prompt("What is 2 + 3?")
        echo_json({**template.record(), "prompt": text}) if as_json else click.echo(text)
        return
    rows = [{**t.record(), "wrapper": t.wrapper, "content": t.content, "description": t.description}
            for t in list_templates()]
    echo_json(rows) if as_json else echo_table(rows, ["name", "wrapper", "content", "version", "description"])


@train_group.command("judge-outputs")
@click.argument("outputs", type=click.Path(exists=True, dir_okay=False))
@json_option
def train_judge_outputs(outputs: str, as_json: bool) -> None:
    """Judge recorded model outputs in the PTST release format ({"prompt": question, "answer": model output}
    per line) with the offline keyword judge: ASR, mean harmfulness, refusal rate. Nothing is generated.

    \b
    Example:
      skillweave train judge-outputs question_output/example.jsonl
      skillweave train judge-outputs outputs.jsonl --json
    """
    from skillweave.trainers.evaluate import judge_outputs, read_ptst_outputs

    result = judge_outputs(read_ptst_outputs(outputs))
    if as_json:
        echo_json(result)
        return
    echo_table([{"file": outputs, **result["safety"]}],
               ["file", "n_safety", "refusal_rate", "asr", "mean_harmfulness", "parse_failures"])


@click.group("ches")
def ches_group() -> None:
    """CHES scores of preference pairs (which pairs cause likelihood displacement)."""


@ches_group.command("score", cls=SettingsCommand, settings=SETTINGS + "CHESConfig", overrides={"data": PATH_IN})
@json_option
@click.pass_context
def ches_score(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Score every pair (CHES, CHES~, -NED, last-state inner product) and store one row per pair and model.

    \b
    Example:
      skillweave ches score --data pairs.jsonl --model local --keep-lowest 0.05 --output kept.jsonl
      skillweave ches score --data pairs.jsonl --model ./llama-3-8b --device cuda --dtype bf16 --batch-size 8
      accelerate launch --num_processes 4 -m skillweave ches score --data pairs.jsonl --model ./llama-3-8b
    """
    config = ctx.command.settings(options, db=_db(ctx))  # a bad value stops here, before torch loads
    from skillweave.trainers import ches

    _quiet_transformers()
    summary = ches.run(config)
    if not _main_process():
        return
    if as_json:
        echo_json(summary)
        return
    echo_table(summary["scores"][:20], ["item_id", "ches", "ches_norm", "neg_ned", "len_chosen", "len_rejected"])
    _print_summary(summary, False, skip=("scores",))


def register(root: click.Group) -> None:
    root.add_command(train_group)
    root.add_command(ches_group)
