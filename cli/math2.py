"""`skillweave run math2`, `skillweave eval math2` and `skillweave eval square-law`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from skillweave.agents.review import parse_reviewer
from skillweave.cli.common import (
    echo_json,
    echo_table,
    emit_report,
    json_option,
    open_store,
    prompts_dir,
)
from skillweave.cli.outcome import preflight
from skillweave.cli.run import check_model, execute_and_report, run_group
from skillweave.errors import UsageError
from skillweave.prompts import load_template


def _criteria(path: str | None) -> list[str]:
    if not path:
        from skillweave.pipelines.math2 import DEFAULT_CRITERIA  # settings models: only when a run starts

        return list(DEFAULT_CRITERIA)
    from skillweave.catalog.textfiles import read_text

    lines = [line.strip() for line in read_text(path, "--criteria").splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"--criteria file '{path}' has no criteria (one per line)")
    return lines


def _read_criteria(_ctx, _param, path: str | None) -> list[str] | None:
    return _criteria(path) if path else None  # None: the settings' default criteria


def _run_math2_command() -> click.Command:
    """`run math2`: one option per Math2Config field (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.math2 import Math2Config

    f = config_options(Math2Config, overrides={
        "bank": {"default": "bundled"},
        "reviewer": {"callback": lambda _c, _p, v: parse_reviewer(v)},
        "exemplars_per_skill": {"decls": ["--exemplars", "--exemplars-per-skill"]},  # today's name first
        "criteria": {"type": click.Path(dir_okay=False, exists=True), "multiple": False, "default": None,
                     "callback": _read_criteria, "metavar": "FILE"},
    })(click.pass_context(run_math2))
    return click.command("math2")(f)


def run_math2(ctx, **options):
    """MATH²: two-skill questions through generator, solver, critic, refine loop, consistency and review.

    Every option is a field of the run's settings (Math2Config), stored with the run.
    Every drop is stored with its stage and reason (`skillweave report RUN`, `skillweave items list RUN`).
    With --reviewer human, finished questions wait in `skillweave review list` (or `review serve`).

    \b
    Example:
      skillweave run math2 --model fake --n 3
      skillweave run math2 --model openai:gpt-4o-mini --n 200 --dry-run     # calls per stage, cost range
      skillweave run math2 --model local --n 2 --max-rounds 2 --reviewer human
      skillweave review list
    """
    from skillweave.catalog.bank import load_bank, save_bank

    bank, model = options["bank"], options["model"]
    for option, spec in (("--model", model), ("--solver", options["solver"] or model),
                         ("--critic", options["critic"] or model)):
        check_model(option, spec)
    from skillweave.cli.run import DRY_RUN_META

    dry = ctx.meta.get(DRY_RUN_META)  # --dry-run writes nothing to --db: a stored bank is only read
    db = ctx.find_root().obj["db"]
    store = open_store(ctx) if not dry or (db != ":memory:" and Path(db).expanduser().exists()) else None
    bank_obj = load_bank(store, bank)
    if len(bank_obj.skills) < 2:
        raise UsageError(f"bank '{bank}' has {len(bank_obj.skills)} skill(s); MATH² pairs need at least 2")
    bank_name = bank_obj.name or Path(bank).stem
    catalog_id = "dry-run" if dry else bank_obj.catalog_id or save_bank(store, bank_obj, bank_name, source=bank)
    from skillweave.cli.options import config_from_options
    from skillweave.cli.run import COST_META, RETRY_META, check_budget_prices
    from skillweave.cli.shard_option import shard_of
    from skillweave.pipelines.math2 import Math2Config

    config = config_from_options(Math2Config, {
        **options, "bank_catalog": catalog_id,
        **(ctx.meta.get(COST_META) or {}),  # --max-cost, --batch
        "retry": ctx.meta.get(RETRY_META),  # --timeout, --max-attempts, --max-retry-wait
        "shard": shard_of(ctx) or options["shard"],  # --shard I/N: every shard shares one run id (graphs/shards.py)
    })
    for template in config.templates():
        load_template(template, prompts_dir(ctx))
    check_budget_prices(config)  # --max-cost needs a price for every model named
    if dry:
        _dry_run(ctx, config, lambda scratch: {"bank_catalog": save_bank(scratch, bank_obj, bank_name, source=bank)})
        return
    preflight(config)  # API keys and endpoints before the run row: cli/outcome.py
    from skillweave.api import create_run
    from skillweave.providers.reply_cache import cache_path

    config.reply_cache = cache_path(config.reply_cache)  # --reply-cache, else $SKILLWEAVE_REPLY_CACHE
    from skillweave.cli.workers_option import check_new_run

    check_new_run(ctx, "math2", config)  # --workers N this run cannot use
    run_id = create_run(store, "math2", config, prompts_dir=prompts_dir(ctx),
                        command=shlex.join(["skillweave", *sys.argv[1:]]))
    store.link_run_catalog(run_id, catalog_id, "bank")
    click.echo(f"run {run_id}", err=True)
    execute_and_report(ctx, "math2", run_id, config.concurrency)
    _review_hint(store, run_id)


def _dry_run(ctx: click.Context, config, setup) -> None:
    """`run math2 --dry-run`: the run planned and executed in a scratch store that holds the bank (docs/cost.md)."""
    from skillweave.dryrun import dry_run, format_projection

    click.echo(format_projection(dry_run("math2", config, prompts_dir=prompts_dir(ctx), setup=setup)))


def _review_hint(store, run_id: str) -> None:
    """After a run that paused for a person, the commands that continue it (as extract-skills prints)."""
    from skillweave.agents.review import review_queue

    waiting = review_queue(store, run_id)
    if waiting:
        click.echo(f"{len(waiting)} question(s) paused for review: `skillweave review list --run {run_id}`, "
                   f"`skillweave review show {waiting[0]['id'][:8]}`, then `skillweave review approve|edit|reject "
                   "ITEM`, or `skillweave review serve` for the web page", err=True)


# settings `eval math2` does not offer: its runner evaluates the whole set in one process (no plan to split)
EVAL_MATH2_EXCLUDED = frozenset({"shard"})


def _eval_math2_command() -> click.Command:
    """`eval math2`: one option per Math2EvalConfig field, plus --resume, --plot and --json (built when first
    asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.math2 import Math2EvalConfig

    f = json_option(click.pass_context(eval_math2))
    f = click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
                     help="Draw the square-law PNG.")(f)
    f = click.option("--resume", "resume_run", default=None,
                     help="Finish an interrupted evaluation run (stored replies reused).")(f)
    f = config_options(Math2EvalConfig, exclude=EVAL_MATH2_EXCLUDED, overrides={
        "source_runs": {"decls": ["--source"]},  # today's name
        "models": {"decls": ["--model"], "default": (), "show_default": False},  # repeatable; none: local
        "judge": {"default": None, "required": False},  # the first --model
    })(f)
    return click.command("math2")(f)


def eval_math2(ctx, resume_run, plot_path, as_json, **options):
    """Solve source (X) and MATH² (Y) questions with each model; an LLM judge grades steps and answer.

    Prints accuracy per model and the square-law comparison Y vs X² (residual, relative drop).
    Every option but --resume, --plot and --json is a field of the run's settings (Math2EvalConfig).

    \b
    Example:
      skillweave eval math2 --model fake --model fake:other --judge fake --x-limit 10
      skillweave eval math2 --source math2-20261126-101500-ab12cd --model local --plot square.png
    """
    from skillweave.agents.math2_eval import run_eval
    from skillweave.cli.options import config_from_options
    from skillweave.metrics.math2 import eval_report, plot_eval_report
    from skillweave.pipelines.math2 import Math2EvalConfig
    from skillweave.providers.reply_cache import cache_path

    store = open_store(ctx)
    if resume_run:
        run_id = store.get_run(resume_run)["id"]
    else:
        models = list(options["models"]) or ["local"]
        judge = options["judge"] or models[0]
        for spec in [*models, judge]:
            check_model("--model/--judge", spec)
        sources = options["source_runs"]
        if not sources:
            newest = store.list_runs(limit=1, pipeline="math2")
            if not newest and options["x_questions"] == "none":
                raise UsageError("no math2 run in the store; pass --source RUN or run `skillweave run math2` first")
            sources = [newest[0]["id"]] if newest else []
        sources = [store.get_run(s)["id"] for s in sources]
        config = config_from_options(Math2EvalConfig, {**options, "models": models, "judge": judge,
                                                       "source_runs": sources})
        for template in config.templates():
            load_template(template, prompts_dir(ctx))
        config.reply_cache = cache_path(config.reply_cache)  # --reply-cache, else $SKILLWEAVE_REPLY_CACHE
        run_id = store.create_run("math2-eval", config.model_dump(), command=shlex.join(["skillweave", *sys.argv[1:]]))
    click.echo(f"run {run_id}", err=True)
    summary = run_eval(store, run_id, prompts_dir=prompts_dir(ctx))
    click.echo(f"run {run_id}: {summary['items']} solutions, {summary['done']} graded, {summary['failed']} failed",
               err=True)
    emit_report(eval_report(store, store.get_run(run_id)), plotter=plot_eval_report, plot_path=plot_path,
                as_json=as_json, empty="(nothing graded)")


def read_accuracies(path: str) -> list[dict]:
    """model,x,y[,n_x,n_y] rows from CSV, or a JSON list of such objects."""
    from skillweave.catalog.textfiles import read_csv, read_text

    try:
        rows = json.loads(read_text(path, "accuracies")) if path.endswith(".json") else read_csv(path, "accuracies")
    except json.JSONDecodeError as exc:
        raise UsageError(f"accuracies file '{path}' is not JSON: {exc}") from None
    out = []
    for i, row in enumerate(rows):
        try:
            x, y = float(row["x"]), float(row["y"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{path} row {i + 1}: needs numeric 'x' and 'y' columns (and 'model')") from None
        if x > 1 or y > 1:  # percentages
            x, y = x / 100, y / 100
        entry = {"model": row.get("model") or f"model{i + 1}", "x": x, "y": y}
        for key in ("n_x", "n_y"):
            if row.get(key) not in (None, ""):
                entry[key] = int(row[key])
        out.append(entry)
    if not out:
        raise UsageError(f"{path} has no rows")
    return out


@click.command("square-law")
@click.argument("source")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Draw the scatter PNG.")
@json_option
@click.pass_context
def square_law_cmd(ctx, source, plot_path, as_json):
    """Fit MATH² accuracy Y against X² from an eval run id or a CSV/JSON of model,x,y.

    \b
    Example:
      skillweave eval square-law accuracies.csv --plot square.png
      skillweave eval square-law latest --json
    """
    from skillweave.metrics.math2 import eval_accuracies, plot_square_law, square_law

    if Path(source).is_file():
        points = read_accuracies(source)
    else:
        store = open_store(ctx)
        points = [r for r in eval_accuracies(store, store.get_run(source)["id"])
                  if r["x"] is not None and r["y"] is not None]
        if not points:
            raise UsageError(f"eval run '{source}' has no model with both X and Y accuracies")
    result = square_law(points)
    if plot_path:
        plot_square_law(result, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
    if as_json:
        echo_json(result)
        return
    rows = [{"model": p["model"], "X": f"{p['x']:.3f}", "Y": f"{p['y']:.3f}", "X²": f"{p['x2']:.3f}",
             "Y − X²": f"{p['residual']:+.3f}", "position": p["position"],
             "relative drop": "" if p["relative_drop"] is None else f"{p['relative_drop']:.1%}"} for p in result["points"]]
    echo_table(rows, ["model", "X", "Y", "X²", "Y − X²", "position", "relative drop"])
    fit = result["fit"]
    click.echo("fit: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fit.items()))


def _eval_group(root: click.Group) -> click.Group:
    """The shared `eval` group: the skill-extraction module's when it exists, else our own."""
    try:
        from skillweave.cli.skills import eval_group

        return eval_group
    except (ImportError, AttributeError):
        pass
    if isinstance(root.commands.get("eval"), click.Group):
        return root.commands["eval"]

    @click.group("eval")
    def eval_group() -> None:
        """Evaluate models on generated data."""

    root.add_command(eval_group)
    return eval_group


def register(root: click.Group) -> None:
    run_group.lazy["math2"] = _run_math2_command  # built when first asked for
    group = _eval_group(root)
    if hasattr(group, "lazy"):
        group.lazy["math2"] = _eval_math2_command
    else:  # an `eval` group of another kind: built now
        group.add_command(_eval_math2_command())
    group.add_command(square_law_cmd)
