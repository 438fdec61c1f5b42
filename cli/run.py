"""`skillweave run <pipeline>` and `skillweave resume RUN_ID`."""

from __future__ import annotations

import shlex
import sys

import click

from skillweave.agents.providers import parse_spec
from skillweave.cli.common import echo_table, open_store, prompts_dir
from skillweave.errors import UsageError


def parse_k(value: str) -> list[int]:
    """'2' -> [2]; '2,3' -> [2, 3]; '2..4' -> [2, 3, 4]."""
    try:
        if ".." in value:
            lo, hi = value.split("..")
            ks = list(range(int(lo), int(hi) + 1))
        else:
            ks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--k '{value}' is not a number, a list like 2,3 or a range like 2..4") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k '{value}' must name k >= 1")
    return ks


def check_model(option: str, spec: str) -> str:
    try:
        parse_spec(spec)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return spec


def start_run(ctx: click.Context, pipeline: str, config, catalogs: dict[str, tuple]) -> str:
    """Validate the settings and templates, store catalogs and the run, then execute it and print its report."""
    from skillweave.api import create_run
    from skillweave.pipelines import get_pipeline

    config = get_pipeline(pipeline).load_config(config)  # a dict from an older command module is checked here
    run_id = create_run(open_store(ctx), pipeline, config, catalogs=catalogs, prompts_dir=prompts_dir(ctx),
                        command=shlex.join(["skillweave", *sys.argv[1:]]))
    click.echo(f"run {run_id}", err=True)
    execute_and_report(ctx, pipeline, run_id, config.concurrency)
    return run_id


def execute_and_report(ctx: click.Context, pipeline: str, run_id: str, concurrency: int,
                       retry_failed: bool = False) -> None:
    from skillweave.pipelines import get_pipeline

    store = open_store(ctx)
    from skillweave.graphs.runtime import run_pipeline  # imports LangGraph: only when a run starts

    spec = get_pipeline(pipeline)
    summary = run_pipeline(spec, store, run_id, prompts_dir=prompts_dir(ctx), concurrency=concurrency,
                           retry_failed=retry_failed)
    click.echo(
        f"run {run_id}: {summary.threads} threads, {summary.done} done, {summary.failed} failed, "
        f"{summary.paused} paused for review" + (f", {summary.skipped} already finished" if summary.skipped else ""),
        err=True,
    )
    reporter = spec.reporter()
    if reporter is not None:
        report = reporter(store, store.get_run(run_id))
        echo_table(report["table"], report["columns"])


class RunGroup(click.Group):
    """`run` subcommands. Those generated from a settings model are built when first asked for, so commands
    that do not start a run never load the pydantic models (CLI start-up time)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, object] = {}  # name -> () -> click.Command

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
        return self.commands.get(name)


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
    """
    from skillweave.agents.skillmix import input_catalogs
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.skillmix import SkillMixConfig

    config = config_from_options(SkillMixConfig, options)
    check_model("--model", config.model)
    check_model("--judge", config.judge)
    start_run(ctx, "skillmix", config, input_catalogs(config, skills=skills_file, topics=topics_file))


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


@click.command("resume")
@click.argument("run_id")
@click.option("--concurrency", default=None, type=click.IntRange(min=1), help="Override the run's concurrency.")
@click.option("--retry-failed", is_flag=True,
              help="Also run again the threads whose items failed (e.g. after a provider outage).")
@click.pass_context
def resume(ctx, run_id, concurrency, retry_failed):
    """Finish an interrupted run: finished threads are skipped, stored model replies are reused.

    \b
    Example:
      skillweave resume skillmix-20261126-101500-ab12cd
      skillweave resume latest --retry-failed
    """
    from skillweave.pipelines import get_pipeline

    store = open_store(ctx)
    run = store.get_run(run_id)
    get_pipeline(run["pipeline"]).load_config(run["config"])  # unknown pipeline or settings: fail before any write
    execute_and_report(ctx, run["pipeline"], run["id"], concurrency or run["config"].get("concurrency") or 8,
                       retry_failed=retry_failed)


def register(root: click.Group) -> None:
    root.add_command(run_group)
    root.add_command(resume)
