"""`skillweave select ...`: LESS gradient-based data selection and its baselines (random, InfSGD, RDS).

The `less`, `infsgd` and `rds` options are generated from the `LessConfig` settings model, so the CLI and the
library never disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillweave.cli.common import echo_json, echo_table, json_option, open_store
from skillweave.cli.settings_command import SettingsCommand
from skillweave.errors import UsageError

EXAMPLE = """\b
Example (tiny CPU run on the embedded model):
  skillweave select less --pool pool.jsonl --targets targets.jsonl --epochs 2 --dim 1024 --lora-r 4 \\
      --lora-targets q_proj,v_proj --max-length 256 --fraction 0.1
  skillweave select list
  skillweave select export select-less-... -o selected.jsonl
"""


LESS_SETTINGS = "skillweave.trainers.less_config:LessConfig"
# LessConfig fields RDS does not use (no warmup, no gradients, no projection)
RDS_UNUSED = {"train_side", "adam_variant", "aggregation", "similarity", "warmup_fraction", "warmup_seed", "epochs",
              "learning_rate", "warmup_ratio", "batch_size", "grad_accum", "lora_r", "lora_alpha", "lora_dropout",
              "lora_targets", "dim", "projector_seed", "projector", "chunk_examples", "gradient_method",
              "feature_batch_tokens"}


def _progress(done: int, total: int, label: str) -> None:
    if sys.stderr.isatty():
        click.echo(f"\r{label}: {done}/{total}", err=True, nl=done >= total)


def _print_result(result: dict, as_json: bool) -> None:
    summary = {k: result[k] for k in ("selection_id", "n_pool", "n_selected", "folder", "top_path") if k in result}
    for key in ("checkpoints", "weights"):
        if key in result:
            summary[key] = result[key]
    if as_json:
        echo_json(summary)
        return
    for key, value in summary.items():
        click.echo(f"{key}: {value}")
    click.echo(f"export with: skillweave select export {summary['selection_id']} -o selected.jsonl")


def _run_less(ctx: click.Context, as_json: bool, options: dict, **values) -> None:
    from skillweave.trainers.devices import is_main_process
    from skillweave.trainers.less import run

    config = ctx.command.settings(options, **values)
    # Under `accelerate launch` one process records; the others open the store only to read a pool run.
    store = open_store(ctx) if is_main_process() or config.pool_run else None
    result = run(config, store, progress=_progress)
    if is_main_process():  # under `accelerate launch` one process reports
        _print_result(result, as_json)


def register(root: click.Group) -> None:
    @root.group("select", epilog=EXAMPLE)
    def select() -> None:
        """Select training data for target examples: LESS, InfSGD, RDS, random."""

    @select.command("less", cls=SettingsCommand, settings=LESS_SETTINGS)
    @json_option
    @click.pass_context
    def less_cmd(ctx: click.Context, as_json: bool, **options) -> None:
        """LESS: LoRA warmup, Adam gradient features, cosine scores against the targets, global top fraction.

        Reruns reuse warmup checkpoints and datastore chunks under --out; the selection is stored as a run
        (one item per selected row) and written as sorted.csv and top_p<fraction>.jsonl.

        \b
        Example (embedded model, CPU-sized):
          skillweave select less --pool pool.jsonl --targets targets.jsonl --epochs 2 --dim 1024 \\
              --lora-r 4 --lora-targets q_proj,v_proj --max-length 256 --fraction 0.1
          skillweave select less --run RUN_ID --targets targets.jsonl --adam-variant paper
          skillweave select less --pool pool.jsonl --targets targets.jsonl --model ./llama-2-7b --device cuda \
              --dtype bf16 --lora-r 128 --lora-alpha 512
        """
        _run_less(ctx, as_json, options)

    @select.command("infsgd", cls=SettingsCommand, settings=LESS_SETTINGS,
                    exclude={"train_side", "adam_variant"})
    @json_option
    @click.pass_context
    def infsgd_cmd(ctx: click.Context, as_json: bool, **options) -> None:
        """InfSGD baseline: like `select less` but with plain (SGD) gradients on the pool side too.

        \b
        Example:
          skillweave select infsgd --pool pool.jsonl --targets targets.jsonl --epochs 2 --dim 1024 --lora-r 4
        """
        _run_less(ctx, as_json, options, train_side="sgd")

    @select.command("rds", cls=SettingsCommand, settings=LESS_SETTINGS, exclude=RDS_UNUSED)
    @json_option
    @click.pass_context
    def rds_cmd(ctx: click.Context, as_json: bool, **options) -> None:
        """RDS baseline: cosine of final-layer hidden states at the last token (base model, no warmup).

        \b
        Example:
          skillweave select rds --pool pool.jsonl --targets targets.jsonl --fraction 0.05
        """
        from skillweave.trainers.less import prepare, rows_hash, subtask_count, top_fraction
        from skillweave.trainers.less_baselines import rds_scores, save_selection

        config = ctx.command.settings(options)
        config.validate()
        store = open_store(ctx)
        p = prepare(config, store)
        scores = rds_scores(p["model"], p["pool_enc"], p["target_enc"], p["tokenizer"].pad_token_id,
                            subtask_count(p["targets"]), config.feature_batch_size)
        selected = top_fraction(scores, config.fraction)
        provenance = {"config": config.model_dump(), "pool_hash": p["pool_hash"],
                      "targets_hash": rows_hash(p["targets"])}
        result = save_selection(store, "rds", p["pool"], selected, scores, provenance, out=p["out"], name=p["name"],
                                fraction=config.fraction, source_run=config.pool_run or None, pool_path=config.pool)
        _print_result(result, as_json)

    @select.command("random", cls=SettingsCommand, settings="skillweave.trainers.less_config:RandomSelectionConfig")
    @json_option
    @click.pass_context
    def random_cmd(ctx: click.Context, as_json: bool, **options) -> None:
        """Random baseline: a seeded uniform sample of the pool.

        \b
        Example:
          skillweave select random --run RUN_ID --fraction 0.05 --seed 1
        """
        config = ctx.command.settings(options)
        pool, pool_run, fraction, seed, out = config.pool, config.pool_run, config.fraction, config.seed, config.out
        if bool(pool) == bool(pool_run):
            raise UsageError("give exactly one of --pool FILE or --run RUN_ID for the candidate pool")
        from skillweave.trainers.less import pool_from_store, read_jsonl, rows_hash
        from skillweave.trainers.less_baselines import random_selection, save_selection

        store = open_store(ctx)
        rows = pool_from_store(store, pool_run) if pool_run else read_jsonl(pool)
        name = pool_run or Path(pool).stem
        selected = random_selection(len(rows), fraction, seed)
        provenance = {"seed": seed, "fraction": fraction, "pool_hash": rows_hash(rows)}
        result = save_selection(store, "random", rows, selected, None, provenance, out=Path(out or Path("grads") / name),
                                name=name, fraction=fraction, source_run=pool_run or None, pool_path=pool)
        _print_result(result, as_json)

    @select.command("list")
    @json_option
    @click.pass_context
    def list_cmd(ctx: click.Context, as_json: bool) -> None:
        """Stored selections, newest first.

        \b
        Example:
          skillweave select list --json
        """
        store = open_store(ctx)
        from skillweave.trainers.selection import list_selections

        rows = list_selections(store)
        if as_json:
            echo_json(rows)
        else:
            echo_table(rows, ["id", "method", "pool", "n_pool", "n_selected", "fraction", "created_at"])

    @select.command("show")
    @click.argument("selection_id")
    @click.option("-n", "limit", type=int, default=20, show_default=True, help="Rows to print (table only).")
    @json_option
    @click.pass_context
    def show_cmd(ctx: click.Context, selection_id: str, limit: int, as_json: bool) -> None:
        """A selection's provenance and its rows, best first.

        \b
        Example:
          skillweave select show select-less-0123456789ab -n 10
        """
        from skillweave.trainers.selection import get_selection

        selection = get_selection(open_store(ctx), selection_id)
        if as_json:
            echo_json(selection)
            return
        for key in ("id", "method", "pool", "source_run", "n_pool", "n_selected", "fraction", "created_at"):
            click.echo(f"{key}: {selection[key]}")
        echo_table(selection["rows"][:limit], ["rank", "row_index", "item_id", "score"])

    @select.command("export")
    @click.argument("selection_id")
    @click.option("-o", "--output", required=True, help="JSONL file to write (the original rows, best first).")
    @click.pass_context
    def export_cmd(ctx: click.Context, selection_id: str, output: str) -> None:
        """Write a selection's rows, unchanged, as JSONL (ready for any trainer that reads JSONL).

        `skillweave export SELECTION_ID --shape ...` also works: a selection is a run.

        \b
        Example:
          skillweave select export select-less-0123456789ab -o selected.jsonl
        """
        from skillweave.trainers.less import write_jsonl
        from skillweave.trainers.less_baselines import selected_payloads

        rows = selected_payloads(open_store(ctx), selection_id)
        write_jsonl(output, rows)
        click.echo(f"wrote {len(rows)} rows to {output}", err=True)

