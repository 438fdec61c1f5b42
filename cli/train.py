"""`skillweave train sft|dpo|templates` and `skillweave ches score`: the SFT (PTST) and DPO (CHES) trainers."""

from __future__ import annotations

from typing import Any

import click

from skillweave.cli.common import echo_json, echo_table, json_option


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



def device_options(checkpointing: bool = False, fsdp: bool = False):
    """--device and --dtype (and --gradient-checkpointing, --fsdp) for a trainer command (trainers/devices.py)."""
    options = [
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
        click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Weights and compute precision; auto: bf16 on a CUDA device that supports it, else fp32."),
    ]
    if checkpointing:
        options.append(click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=False,
                                    show_default=True,
                                    help="Recompute activations in the backward pass (less memory, more compute)."))
    if fsdp:
        options.append(click.option("--fsdp/--no-fsdp", default=False, show_default=True,
                                    help="Shard weights, gradients and optimizer state across the processes of an "
                                         "`accelerate launch` (FSDP2); full fine-tuning only."))

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate

@click.group("train")
def train_group() -> None:
    """Fine-tune models on exported data: SFT with PTST templates, DPO with CHES filtering."""


@train_group.command("sft")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL/JSON in an export shape: prompt/completion, messages, or Alpaca instruction/input/output.")
@click.option("--model", default="local", show_default=True, help="'local' (embedded SmolLM2-135M-Instruct) or a local HF folder.")
@click.option("--output", "output_dir", default=None, help="Checkpoint folder (weights, tokenizer, templates used).")
@click.option("--train-template", default="chat:vanilla", show_default=True, help="Template for training data (see `train templates`).")
@click.option("--eval-template", default="chat:llama", show_default=True, help="Template for evaluation (PTST: with a safety prompt).")
@click.option("--system-prompts", default=None, type=click.Path(exists=True, dir_okay=False), help="JSON file overriding system-prompt texts.")
@click.option("--eval-data", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSONL to evaluate after training (rows with `answer` are Q/A, others safety prompts), or an "
                   "AdvBench-style CSV (one prompt a row, no header).")
@click.option("--eval-max-new-tokens", default=64, show_default=True, help="Generation length at evaluation.")
@click.option("--lora/--full", default=False, show_default=True, help="LoRA adapters (merged on save) or full fine-tuning.")
@click.option("--lora-r", default=8, show_default=True, help="LoRA rank.")
@click.option("--lora-targets", default="all-linear", show_default=True, help="Comma-separated module names or all-linear.")
@click.option("--lr", default=2e-5, show_default=True, help="Peak learning rate.")
@click.option("--epochs", default=1.0, show_default=True, help="Training epochs.")
@click.option("--max-steps", default=-1, show_default=True, help="Stop after this many optimizer steps (-1: use epochs).")
@click.option("--batch-size", default=4, show_default=True, help="Examples per step.")
@click.option("--grad-accum", default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--max-length", default=1024, show_default=True, help="Max tokens per example; the start is kept.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@device_options(checkpointing=True, fsdp=True)
@json_option
@click.pass_context
def train_sft(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Supervised fine-tuning, loss on the response only; records the templates with the checkpoint.

    \b
    Example (PTST: tune without the safety prompt, test with it):
      skillweave train sft --data sda.jsonl --model local --output ckpt/sft \\
        --train-template chat:vanilla --eval-template chat:llama --eval-data eval.jsonl --max-steps 20
      skillweave train sft --data sda.jsonl --model ./llama-3-8b --device cuda --dtype bf16 --lora \
        --gradient-checkpointing --output ckpt/sft-8b
      accelerate launch --num_processes 4 -m skillweave train sft --data sda.jsonl --model ./llama-3-8b --lora
      accelerate launch --multi_gpu --num_processes 4 -m skillweave train sft --data sda.jsonl \
        --model ./llama-3-8b --dtype bf16 --full --fsdp --output ckpt/sft-full
    """
    from skillweave.trainers import sft

    _quiet_transformers()
    config = sft.SFTConfig(db=_db(ctx), **options)
    summary = sft.run(config)
    _print_summary(summary, as_json)


@train_group.command("dpo")
@click.option("--data", default=None, type=click.Path(exists=True, dir_okay=False), help="Preference pairs (JSONL/JSON): prompt/chosen/rejected, SORRY-Bench query/chosen/rejected or AlpacaFarm output_1/output_2/preference.")
@click.option("--store-run", default=None, help="Read pairs from this run's store items of kind 'preference'.")
@click.option("--model", default="local", show_default=True, help="'local' (embedded SmolLM2-135M-Instruct) or a local HF folder.")
@click.option("--output", "output_dir", default=None, help="Folder to save the trained policy.")
@click.option("--template", default="model", show_default=True, help="Prompt template (default: the model's chat template).")
@click.option("--beta", default=0.1, show_default=True, help="DPO beta (IPO: tau).")
@click.option("--loss", "loss_type", type=click.Choice(["sigmoid", "ipo"]), default="sigmoid", show_default=True, help="Preference loss.")
@click.option("--label-smoothing", default=0.0, show_default=True, help="cDPO label smoothing.")
@click.option("--c-sft", default=0.0, show_default=True, help="Weight of the SFT term on chosen responses.")
@click.option("--optimizer", type=click.Choice(["rmsprop", "adamw", "sgd"]), default="rmsprop", show_default=True, help="Optimizer.")
@click.option("--lr", default=1e-6, show_default=True, help="Learning rate.")
@click.option("--epochs", default=1, show_default=True, help="Passes over the pairs.")
@click.option("--max-steps", default=None, type=int, help="Stop after this many steps.")
@click.option("--batch-size", default=8, show_default=True, help="Pairs per step.")
@click.option("--micro-batch-size", default=None, type=click.IntRange(min=1),
              help="Pairs per forward/backward; gradients accumulate to one step of --batch-size (less memory).")
@click.option("--max-length", default=1024, show_default=True, help="Max tokens per sequence; the start is kept.")
@click.option("--ches-keep-lowest", default=None, type=float, help="Train only on this fraction with the lowest CHES~ (e.g. 0.05).")
@click.option("--lora/--full", default=False, show_default=True,
              help="LoRA adapters (reference = the base model; merged on save) or full fine-tuning.")
@click.option("--lora-r", default=8, show_default=True, help="LoRA rank.")
@click.option("--lora-targets", default="all-linear", show_default=True, help="Comma-separated module names or all-linear.")
@click.option("--seed", default=0, show_default=True, help="Shuffling and tie-breaking seed.")
@device_options(checkpointing=True, fsdp=True)
@click.option("--eval-data", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Held-out prompt/chosen/rejected JSONL: change of mean ln pi(chosen) on it too.")
@click.option("--eval-prompts", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSONL of safety prompts: refusal rate before/after (keyword judge).")
@click.option("--eval-max-new-tokens", default=64, show_default=True, help="Generation length for --eval-prompts.")
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
    from skillweave.trainers import dpo

    _quiet_transformers()
    summary = dpo.run(dpo.DPOConfig(db=_db(ctx), **options))
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


@ches_group.command("score")
@click.option("--data", default=None, type=click.Path(exists=True, dir_okay=False), help="Preference pairs (JSONL/JSON): prompt/chosen/rejected, SORRY-Bench query/chosen/rejected or AlpacaFarm output_1/output_2/preference.")
@click.option("--store-run", default=None, help="Read pairs from this run's store items of kind 'preference'.")
@click.option("--model", default="local", show_default=True, help="'local' or a local HF folder (the policy to score with).")
@click.option("--template", default="model", show_default=True, help="Prompt template (default: the model's chat template).")
@click.option("--batch-size", default=32, show_default=True, help="Sequences per forward pass (sorted by length).")
@click.option("--max-length", default=1024, show_default=True, help="Max tokens per sequence; the start is kept.")
@click.option("--keep-lowest", default=None, type=float, help="Keep this fraction with the lowest CHES~ (e.g. 0.05).")
@click.option("--output", default=None, help="JSONL for the kept rows (with --keep-lowest).")
@device_options()
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
    from skillweave.trainers import ches

    _quiet_transformers()
    summary = ches.run(ches.CHESConfig(db=_db(ctx), **options))
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
