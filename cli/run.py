"""`skillweave run <pipeline>` and `skillweave resume RUN_ID`."""

from __future__ import annotations

import math
import shlex
import sys

import click

from skillweave.cli.common import echo_table, open_store, prompts_dir
from skillweave.cli.outcome import (
    EXIT_INTERRUPTED,
    exit_when_done,
    preflight,
    progress_every,
    progress_every_option,
    resume_command,
    stop,
)
from skillweave.cli.prompt_pinning import allow_changed_prompts, allow_changed_prompts_option
from skillweave.cli.shard_option import shard_of, shard_option
from skillweave.cli.workers_option import check_new_run, workers_of, workers_option
from skillweave.errors import UsageError
from skillweave.graphs import shards
from skillweave.providers.core import parse_spec
from skillweave.providers.reply_cache import cache_path


def parse_k(value: str) -> list[int]:
    """'2' -> [2]; '2,3' -> [2, 3]; '2..4' -> [2, 3, 4]."""
    try:
        if ".." in value:
            lo, hi = (int(v) for v in value.split(".."))
            if hi - lo >= K_MAX or hi > K_MAX:  # bounded before the list is built
                raise UsageError(f"--k '{value}' names k up to {hi}; at most {K_MAX}")
            ks = list(range(lo, hi + 1))
        else:
            ks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--k '{value}' is not a number, a list like 2,3 or a range like 2..4") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k '{value}' must name k >= 1")
    if max(ks) > K_MAX:
        raise UsageError(f"--k '{value}' names k = {max(ks)}; at most {K_MAX}")
    return ks


K_MAX = 1000  # no skill catalog comes near this; a larger --k is a typo
MAX_COMBINATIONS = 1_000_000  # graph threads one run may start (--n -1 enumerates C(N, k) of them)


def check_model(option: str, spec: str) -> str:
    try:
        parse_spec(spec)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return spec


RETRY_META = "skillweave.retry"
_RETRY_OPTIONS = (
    ("--timeout", "timeout", float,
     "Seconds one model request may take before it is retried (default 120; the local model: none). "
     "S for every model or SPEC=S for one (repeatable), e.g. --timeout 30 --timeout openai:gpt-4o=90."),
    ("--max-attempts", "max_attempts", int,
     "Attempts per model call before it is recorded as failed (default 5; local: 1). N or SPEC=N, repeatable."),
    ("--max-retry-wait", "max_retry_wait", float,
     "Longest wait in seconds between attempts, a server's Retry-After included (default 30). S or SPEC=S."),
)


def parse_retry_values(option: str, key: str, kind, values, retry: dict | None = None) -> dict:
    """`--timeout 30 --timeout openai:gpt-4o=90` -> {"*": {"timeout": 30.0}, "openai:gpt-4o": {"timeout": 90.0}}."""
    import math

    retry = {spec: dict(fields) for spec, fields in (retry or {}).items()}
    for raw in values:
        spec, _, number = raw.rpartition("=") if "=" in raw else ("*", "", raw)
        spec = spec.strip() or "*"
        if spec != "*":
            check_model(option, spec)
        try:
            value = kind(number)
        except ValueError:
            raise UsageError(f"{option} '{raw}' is not a {'whole ' if kind is int else ''}number (or SPEC=number)") from None
        lowest = 1 if key == "max_attempts" else 0
        if not math.isfinite(value) or value < lowest or (key == "timeout" and value == 0):
            raise UsageError(f"{option} '{raw}' must be a finite number {'>= 1' if lowest else '> 0' if key == 'timeout' else '>= 0'}")
        retry.setdefault(spec, {})[key] = value
    return retry


def _store_retry_option(ctx: click.Context, param: click.Parameter, values) -> None:
    if values:
        option, key, kind = next((o, k, t) for o, k, t, _ in _RETRY_OPTIONS if o.lstrip("-") == param.name.replace("_", "-"))
        ctx.meta[RETRY_META] = parse_retry_values(option, key, kind, values, ctx.meta.get(RETRY_META))


def retry_options(command: click.Command) -> click.Command:
    """Add --timeout / --max-attempts / --max-retry-wait to a command; parsed values land in ctx.meta."""
    if not any(p.name == "timeout" for p in command.params):
        for option, _key, _kind, help_text in _RETRY_OPTIONS:
            command.params.append(click.Option([option], multiple=True, expose_value=False, metavar="[SPEC=]VALUE",
                                               callback=_store_retry_option, help=help_text))
    return command


DRY_RUN_META = "skillweave.dry_run"
COST_META = "skillweave.cost"  # {"max_cost": USD, "batch": True} from --max-cost / --batch
NO_DRY_RUN: frozenset[str] = frozenset()  # commands without --dry-run


def _store_cost_option(ctx: click.Context, param: click.Parameter, value) -> None:
    if value:
        ctx.meta.setdefault(COST_META, {})[param.name] = value


def cost_options(command: click.Command) -> click.Command:
    """Add --dry-run, --max-cost and --batch to a run command (docs/cost.md)."""
    if any(p.name == "max_cost" for p in command.params):
        return command
    if command.name not in NO_DRY_RUN:
        command.params.append(click.Option(
            ["--dry-run"], is_flag=True, expose_value=False,
            callback=lambda ctx, _param, value: ctx.meta.__setitem__(DRY_RUN_META, value),
            help="Plan the run and print its calls per stage and a projected cost range; no model is called and "
                 "no run is stored. Exits 0."))
    command.params.append(click.Option(
        ["--max-cost"], type=click.FloatRange(min=0, min_open=True), default=None, metavar="USD",
        expose_value=False, callback=_store_cost_option,
        help="Budget in USD: no model call starts that could take the run's spend above it; the run then stops "
             "as 'budget', resumable with `resume RUN --max-cost USD`."))
    command.params.append(click.Option(
        ["--batch"], is_flag=True, expose_value=False, callback=_store_cost_option,
        help="Send OpenAI and Anthropic calls through their batch APIs (half price, replies within 24 h); a "
             "killed run resumes polling its batches."))
    return command


def apply_cost_settings(ctx: click.Context, store, run_id: str) -> None:
    """--max-cost / --batch of a command that stored its run itself: kept in the run's config before it runs."""
    settings = ctx.meta.get(COST_META) or {}
    if not settings:  # nothing to keep: the run row is not read
        return
    run = store.get_run(run_id)
    if all(run["config"].get(k) == v for k, v in settings.items()):
        return
    from skillweave.pipelines import get_pipeline

    config = {**run["config"], **settings}
    try:
        check_budget_prices(get_pipeline(run["pipeline"]).load_config(config))
    except UsageError as exc:
        store.set_run_status(run_id, "failed", error=str(exc))
        raise
    store.set_run_config(run_id, config)


MODEL_FIELDS = ("model", "judge", "solver", "critic", "grader")  # settings that name a chat model spec


def check_budget_prices(config) -> None:
    """--max-cost needs a price for every chat model the run names: refused before the run is stored."""
    from skillweave.providers.prices import price_of

    if not config.max_cost:
        return
    for field in MODEL_FIELDS:
        spec = getattr(config, field, None)  # the model-naming settings this pipeline has
        if isinstance(spec, str) and spec and price_of(spec) is None:
            raise UsageError(f"--max-cost: no price for '{spec}' (--{field}); give it price_input/price_output in "
                             f"the models file or a `prices:` entry (docs/cost.md)")


def start_run(ctx: click.Context, pipeline: str, config, catalogs: dict[str, tuple]) -> str:
    """Validate the settings and templates, store catalogs and the run, then execute it and print its report."""
    from skillweave.api import create_run
    from skillweave.pipelines import get_pipeline

    config = get_pipeline(pipeline).new_config(config)  # a dict from an older command module is checked here
    if ctx.meta.get(RETRY_META):
        config.retry = ctx.meta[RETRY_META]
    for key, value in (ctx.meta.get(COST_META) or {}).items():  # --max-cost, --batch
        setattr(config, key, value)
    config.shard = shard_of(ctx) or config.shard  # --shard of a hand-written command (cli/shard_option.py)
    shards.check(pipeline, config)  # a bad --shard, or one on a pipeline that cannot be split
    check_budget_prices(config)
    check_new_run(ctx, pipeline, config)  # --workers N this run cannot use
    if ctx.meta.get(DRY_RUN_META):
        from skillweave.dryrun import dry_run, format_projection

        click.echo(format_projection(dry_run(pipeline, config, catalogs, prompts_dir=prompts_dir(ctx))))
        return ""
    preflight(config)  # API keys and endpoints, before any run row exists
    config.reply_cache = cache_path(config.reply_cache)  # an unusable cache file fails here, not mid-run
    run_id = create_run(open_store(ctx), pipeline, config, catalogs=catalogs, prompts_dir=prompts_dir(ctx),
                        command=shlex.join(["skillweave", *sys.argv[1:]]))
    click.echo(f"run {run_id}", err=True)
    execute_and_report(ctx, pipeline, run_id, config.concurrency)
    return run_id


def execute_and_report(ctx: click.Context, pipeline: str, run_id: str, concurrency: int,
                       retry_failed: bool = False) -> None:
    from skillweave.pipelines import get_pipeline

    store = open_store(ctx)
    apply_cost_settings(ctx, store, run_id)
    from skillweave.graphs.runtime import run_pipeline  # imports LangGraph: only when a run starts

    spec = get_pipeline(pipeline)
    if workers_of(ctx) > 1:  # N processes share the run (graphs/workers.py)
        from functools import partial

        from skillweave.graphs.workers import run_with_workers

        run_pipeline = partial(run_with_workers, workers=workers_of(ctx))
    try:
        summary = run_pipeline(spec, store, run_id, prompts_dir=prompts_dir(ctx), concurrency=concurrency,
                               retry_failed=retry_failed, allow_changed_prompts=allow_changed_prompts(ctx),
                               progress_every=progress_every(ctx))
    except KeyboardInterrupt:
        click.echo(f"Interrupted: run {run_id} stopped; continue it with: {resume_command(ctx, run_id)}", err=True)
        stop(EXIT_INTERRUPTED)
    click.echo(
        f"run {run_id}: {summary.threads} threads, {summary.done} done, {summary.failed} failed, "
        f"{summary.paused} paused for review" + (f", {summary.skipped} already finished" if summary.skipped else "")
        + (f", {summary.crashed} raised ({summary.errors[0]}; `skillweave resume {run_id}` continues them)"
           if summary.crashed else ""),
        err=True,
    )
    if getattr(summary, "per_worker", None):  # --workers N: what each process finished
        click.echo("workers: " + ", ".join(f"{i}: {w['finished']}/{w['threads']} threads"
                                           + (f" ({w['error']})" if w["error"] else "")
                                           for i, w in enumerate(summary.per_worker, 1)), err=True)
    if summary.budget:  # --max-cost stopped it: resumable
        click.echo(f"run {run_id} stopped by its budget: {summary.error}", err=True)
    reporter = spec.reporter()
    if reporter is not None:
        report = reporter(store, store.get_run(run_id))
        echo_table(report["table"], report["columns"])
    exit_when_done(ctx, summary)


class LazyGroup(click.Group):
    """A group whose commands generated from a settings model are built when first asked for (`lazy`), so
    commands that do not start a run never load the pydantic models (CLI start-up time)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, object] = {}  # name -> () -> click.Command

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx, name):
        if name not in self.commands and name in self.lazy:
            self.add_command(self.lazy.pop(name)(), name)
        return self.commands.get(name)


class RunGroup(LazyGroup):
    """`run` subcommands, each with the retry options (--timeout, --max-attempts, ...), built when first asked
    for (`LazyGroup`)."""

    def _registry_names(self) -> set[str]:
        from skillweave.pipelines import all_pipelines

        return {name for name, spec in all_pipelines().items() if spec.graph is not None}

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy, *self._registry_names()})

    def get_command(self, ctx, name):
        if name not in self.commands:
            if name in self.lazy:
                self.add_command(self.lazy.pop(name)(), name)
            else:  # a registered pipeline without a hand-written command (e.g. from a plugin package)
                from skillweave.pipelines import find_pipeline

                spec = find_pipeline(name)
                if spec is not None and spec.graph is not None:
                    self.add_command(generic_run_command(spec), name)
        command = self.commands.get(name)
        # --timeout, --max-attempts, ..., --dry-run, --shard, --progress-every
        if command is not None and not any(p.name == "progress_every" for p in command.params):
            progress_every_option(command)  # click appends the option to a built command
        return cost_options(retry_options(shard_option(workers_option(command)))) if command is not None else None


@click.group("run", cls=RunGroup)
def run_group() -> None:
    """Run a generation or evaluation pipeline; everything lands in the store."""


def _parse_k_option(_ctx, _param, value):
    return parse_k(value) if isinstance(value, str) else value


def _skillmix_command() -> click.Command:
    """`run skillmix`: one option per SkillMixConfig field, plus the catalog files."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.skillmix import SkillMixConfig

    f = click.pass_context(run_skillmix)
    f = click.option("--topics", "topics_file", type=click.Path(dir_okay=False), default=None,
                     help="topics.txt, one topic per line (default: bundled, 33 topics).")(f)
    f = click.option("--skills", "skills_file", type=click.Path(dir_okay=False), default=None,
                     help="Skill catalog: official skills.csv, JSON, or one name per line (default: bundled, "
                          "44 skills).")(f)
    f = progress_every_option(f)
    f = config_options(SkillMixConfig, overrides={
        "k": {"type": str, "default": "2", "multiple": False, "callback": _parse_k_option}})(f)
    return click.command("skillmix")(f)


def run_skillmix(ctx, skills_file, topics_file, **options):
    """Skill-Mix: sample k skills + a topic, two student turns, judge with the k+3 rubric.

    Every option is a field of the run's settings (SkillMixConfig), stored with the run.

    \b
    Example:
      skillweave run skillmix --model local --k 2 --n 2 --rounds 1
      skillweave run skillmix --model openai:gpt-4o-mini --judge openai:gpt-4o --k 2..4 --n 100
      skillweave run skillmix --skills skill-mix/skills.csv --topics skill-mix/topics.txt --k 3 --n 5 --seed 10
      skillweave --prompts-dir official-prompts run skillmix --skills skill-mix/skills.csv \\
        --topics skill-mix/topics.txt --k 3 --n 5 --seed 10 --rounds 2 \\
        --model replay:skillmix=skill-mix/test,student=gpt-4 --judge replay:skillmix=skill-mix/test,student=gpt-4
      skillweave --db shard1.db run skillmix --model fake --k 2 --n 10 --shard 1/2
      skillweave run skillmix --model fake --k 2 --n 2 --reply-cache replies.db
      skillweave run skillmix --model openai:gpt-4o-mini --k 2 --n 1000 --workers 4 --concurrency 256
    """
    from skillweave.agents.skillmix import input_catalogs
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.skillmix import SkillMixConfig

    config = config_from_options(SkillMixConfig, options)
    check_model("--model", config.model)
    check_model("--judge", config.judge)
    if config.n == 0:
        raise UsageError("--n 0 makes no combinations; give n >= 1 (or -1 for all C(N, k))")
    catalogs = input_catalogs(config, skills=skills_file, topics=topics_file)
    available = len(catalogs["skills"][2])
    total = sum(math.comb(available, k) for k in config.k) if config.n == -1 else config.n * len(config.k)
    if total > MAX_COMBINATIONS:  # checked before anything is sampled or allocated
        raise UsageError(f"--n {config.n} with --k {','.join(map(str, config.k))} makes {total:,} combinations; "
                         f"at most {MAX_COMBINATIONS:,} a run")
    start_run(ctx, "skillmix", config, catalogs)


run_group.lazy["skillmix"] = _skillmix_command


def generic_run_command(spec) -> click.Command:
    """`run <name>` for a pipeline without a hand-written command (e.g. one from a plugin): its options are
    the fields of its settings model."""
    from skillweave.cli.options import config_from_options, config_options

    model = spec.config_model

    @click.pass_context
    def command(ctx, **options):
        config = config_from_options(model, options)
        start_run(ctx, spec.name, config, {})

    command.__doc__ = (spec.description or f"Run the {spec.name} pipeline.") + (
        f"\n\n\b\nExample:\n  skillweave run {spec.name} --help")
    return click.command(spec.name)(config_options(model)(command))


@workers_option
@retry_options
@click.command("resume")
@click.argument("run_id")
@click.option("--concurrency", default=None, type=click.IntRange(min=1), help="Override the run's concurrency.")
@click.option("--retry-failed", is_flag=True,
              help="Also run again the threads whose items failed (e.g. after a provider outage).")
@allow_changed_prompts_option
@progress_every_option
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), default=None, metavar="USD",
              help="Set (or raise) the run's budget in USD; kept with the run (docs/cost.md).")
@click.pass_context
def resume(ctx, run_id, concurrency, retry_failed, max_cost):
    """Finish an interrupted run: finished threads are skipped, stored model replies are reused.

    The run keeps its own prompts: the folder it was started with (--prompts-dir) and the template versions
    it used; a changed template stops the resume unless --allow-changed-prompts.

    \b
    Example:
      skillweave resume skillmix-20261126-101500-ab12cd
      skillweave resume latest --retry-failed --timeout 30 --max-attempts 3
      skillweave resume latest --allow-changed-prompts   # continue with edited templates
      skillweave resume latest --max-cost 25      # a run stopped by its budget, with a larger one
      skillweave resume latest --workers 4 --concurrency 256   # 4 processes share the run

    A run is continued by one process at a time: while another live process holds it, resume is refused.
    """
    from skillweave.pipelines import get_pipeline

    store = open_store(ctx)
    run = store.get_run(run_id)
    stored = get_pipeline(run["pipeline"]).load_config(run["config"])  # unknown pipeline or settings: fail first
    if ctx.meta.get(RETRY_META):  # kept in the run's config, so the next resume uses them too
        retry = {spec: dict(fields) for spec, fields in (run["config"].get("retry") or {}).items()}
        for spec, fields in ctx.meta[RETRY_META].items():
            retry.setdefault(spec, {}).update(fields)
        store.set_run_config(run["id"], {**run["config"], "retry": retry})
    if max_cost is not None:  # kept in the run's config like the retry options
        run["config"] = {**store.get_run(run["id"])["config"], "max_cost": max_cost}
        check_budget_prices(get_pipeline(run["pipeline"]).load_config(run["config"]))
        store.set_run_config(run["id"], run["config"])
    from skillweave.agents.review import reopen_dead_claims

    for item_id in reopen_dead_claims(store, run["id"]):  # a review decision whose process died mid-resume
        click.echo(f"item {item_id}: its reviewer's process is gone; it waits for review again", err=True)
    execute_and_report(ctx, run["pipeline"], run["id"], concurrency or stored.concurrency, retry_failed=retry_failed)


def register(root: click.Group) -> None:
    root.add_command(run_group)
    root.add_command(resume)
