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
    typed_config,
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


@click.command("math2")
@click.option("--bank", default="bundled", show_default=True,
              help="Skill bank: 'bundled', an AdaptMI bank JSON file, or a stored bank id/name.")
@click.option("--n", default=5, show_default=True, type=click.IntRange(min=1), help="Target questions (one thread each).")
@click.option("--model", default="local", show_default=True, help="Question generator (and default for every role).")
@click.option("--solver", default=None, help="Model for the adversarial attempt and the consistency re-solves.")
@click.option("--critic", default=None, help="Model for the critic/validator.")
@click.option("--reviewer", default="auto", show_default=True, help="human (pause for a person), llm:<model>, or auto.")
@click.option("--max-rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Critic rounds per question (a failing question is refined until this many).")
@click.option("--max-pairs", default=3, show_default=True, type=click.IntRange(min=1),
              help="Pairs a thread may draw: each drop draws a new pair until this many.")
@click.option("--consistency-samples", default=3, show_default=True, type=click.IntRange(min=1),
              help="Independent re-solves; a majority of them must agree with the attempt's answer.")
@click.option("--exemplars", "exemplars_per_skill", default=2, show_default=True, type=click.IntRange(min=0),
              help="Exemplars shown per skill to the generator.")
@click.option("--pair-check", type=click.Choice(["rule", "llm", "off"]), default="rule", show_default=True,
              help="Reject near-duplicate (rule) or incompatible (llm) pairs before generating.")
@click.option("--criteria", "criteria_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Critic criteria, one per line (default: the 8 criteria of docs/methods.md#math2-pipeline).")
@click.option("--parse-retries", default=1, show_default=True, type=click.IntRange(min=0),
              help="Re-asks when a reply lacks the expected field.")
@click.option("--seed", default=0, show_default=True, help="Pair sampling seed.")
@click.option("--temperature", default=0.7, show_default=True, help="Sampling temperature for generation and solving.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="Max new tokens per call.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1), help="Threads in flight.")
@click.pass_context
def run_math2(ctx, bank, n, model, solver, critic, reviewer, max_rounds, max_pairs, consistency_samples,
              exemplars_per_skill, pair_check, criteria_file, parse_retries, seed, temperature, max_tokens, concurrency):
    """MATH²: two-skill questions through generator, solver, critic, refine loop, consistency and review.

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

    for option, spec in (("--model", model), ("--solver", solver or model), ("--critic", critic or model)):
        check_model(option, spec)
    reviewer = parse_reviewer(reviewer)
    from skillweave.cli.run import DRY_RUN_META

    dry = ctx.meta.get(DRY_RUN_META)  # --dry-run writes nothing to --db: a stored bank is only read
    db = ctx.find_root().obj["db"]
    store = open_store(ctx) if not dry or (db != ":memory:" and Path(db).expanduser().exists()) else None
    bank_obj = load_bank(store, bank)
    if len(bank_obj.skills) < 2:
        raise UsageError(f"bank '{bank}' has {len(bank_obj.skills)} skill(s); MATH² pairs need at least 2")
    bank_name = bank_obj.name or Path(bank).stem
    catalog_id = "dry-run" if dry else bank_obj.catalog_id or save_bank(store, bank_obj, bank_name, source=bank)
    from skillweave.agents.math2 import default_config

    config = default_config(
        catalog_id, bank=bank, n=n, model=model, solver=solver, critic=critic, reviewer=reviewer,
        max_rounds=max_rounds, max_pairs=max_pairs, consistency_samples=consistency_samples,
        exemplars_per_skill=exemplars_per_skill, pair_check=pair_check, criteria=_criteria(criteria_file),
        parse_retries=parse_retries, seed=seed, temperature=temperature, solve_temperature=temperature,
        max_tokens=max_tokens, concurrency=concurrency,
    )
    for key in [k for k in config if k.endswith("_template")]:
        load_template(config[key], prompts_dir(ctx))
    if dry:
        _dry_run(ctx, config, lambda scratch: {"bank_catalog": save_bank(scratch, bank_obj, bank_name, source=bank)})
        return
    preflight(config)  # API keys and endpoints before the run row: cli/outcome.py
    from skillweave.api import create_run
    from skillweave.cli.shard_option import shard_of

    config["shard"] = shard_of(ctx)  # --shard I/N: every shard shares one run id (graphs/shards.py)
    from skillweave.agents.reply_cache import cache_path

    config["reply_cache"] = cache_path(None)  # $SKILLWEAVE_REPLY_CACHE, as for every other run command
    from skillweave.cli.workers_option import check_new_run

    check_new_run(ctx, "math2", typed_config("math2", config))  # --workers N this run cannot use
    run_id = create_run(store, "math2", typed_config("math2", config), prompts_dir=prompts_dir(ctx),
                        command=shlex.join(["skillweave", *sys.argv[1:]]))
    store.link_run_catalog(run_id, catalog_id, "bank")
    click.echo(f"run {run_id}", err=True)
    execute_and_report(ctx, "math2", run_id, concurrency)
    _review_hint(store, run_id)


def _dry_run(ctx: click.Context, config: dict, setup) -> None:
    """`run math2 --dry-run`: the run planned and executed in a scratch store that holds the bank (docs/cost.md)."""
    from skillweave.cli.run import COST_META, check_budget_prices
    from skillweave.cli.shard_option import shard_of
    from skillweave.dryrun import dry_run, format_projection

    config = typed_config("math2", {**config, **(ctx.meta.get(COST_META) or {}), "shard": shard_of(ctx)})
    from skillweave.pipelines import get_pipeline

    check_budget_prices(get_pipeline("math2").new_config(config))
    click.echo(format_projection(dry_run("math2", config, prompts_dir=prompts_dir(ctx), setup=setup)))


def _review_hint(store, run_id: str) -> None:
    """After a run that paused for a person, the commands that continue it (as extract-skills prints)."""
    from skillweave.agents.review import review_queue

    waiting = review_queue(store, run_id)
    if waiting:
        click.echo(f"{len(waiting)} question(s) paused for review: `skillweave review list --run {run_id}`, "
                   f"`skillweave review show {waiting[0]['id'][:8]}`, then `skillweave review approve|edit|reject "
                   "ITEM`, or `skillweave review serve` for the web page", err=True)


@click.command("math2")
@click.option("--source", "sources", multiple=True,
              help="MATH² run(s) whose accepted questions form the Y set (default: the newest math2 run).")
@click.option("--model", "models", multiple=True, required=False,
              help="Model(s) to evaluate; repeat the option for several (default: local).")
@click.option("--judge", default=None, help="Judge model (default: the first --model).")
@click.option("--x-questions", default="bundled", show_default=True,
              help="Source questions for X: 'bundled' (test split), a JSONL/CSV question file, or 'none'.")
@click.option("--x-limit", default=None, type=click.IntRange(min=1), help="At most this many source questions.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="At most this many MATH² questions.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="Solver max new tokens.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1), help="Calls in flight.")
@click.option("--resume", "resume_run", default=None, help="Finish an interrupted evaluation run (stored replies reused).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Draw the square-law PNG.")
@json_option
@click.pass_context
def eval_math2(ctx, sources, models, judge, x_questions, x_limit, limit, max_tokens, concurrency, resume_run,
               plot_path, as_json):
    """Solve source (X) and MATH² (Y) questions with each model; an LLM judge grades steps and answer.

    Prints accuracy per model and the square-law comparison Y vs X² (residual, relative drop).

    \b
    Example:
      skillweave eval math2 --model fake --model fake:other --judge fake --x-limit 10
      skillweave eval math2 --source math2-20261126-101500-ab12cd --model local --plot square.png
    """
    from skillweave.agents.math2_eval import run_eval
    from skillweave.metrics.math2 import eval_report, plot_eval_report

    store = open_store(ctx)
    if resume_run:
        run_id = store.get_run(resume_run)["id"]
    else:
        models = list(models) or ["local"]
        for spec in [*models, judge or models[0]]:
            check_model("--model/--judge", spec)
        if not sources:
            newest = store.list_runs(limit=1, pipeline="math2")
            if not newest and x_questions == "none":
                raise UsageError("no math2 run in the store; pass --source RUN or run `skillweave run math2` first")
            sources = [newest[0]["id"]] if newest else []
        sources = [store.get_run(s)["id"] for s in sources]
        config = {"models": models, "judge": judge or models[0], "source_runs": sources, "x_questions": x_questions,
                  "x_limit": x_limit, "limit": limit, "temperature": 0.0, "max_tokens": max_tokens,
                  "judge_max_tokens": 384, "concurrency": concurrency, "solve_template": "math2/solve",
                  "judge_template": "math2/judge"}
        for key in ("solve_template", "judge_template"):
            load_template(config[key], prompts_dir(ctx))
        run_id = store.create_run("math2-eval", typed_config("math2-eval", config), command=shlex.join(["skillweave", *sys.argv[1:]]))
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
    run_group.add_command(run_math2)
    group = _eval_group(root)
    group.add_command(eval_math2)
    group.add_command(square_law_cmd)
