"""`skillweave run <pipeline>` and `skillweave resume RUN_ID`."""

from __future__ import annotations

import math
import shlex
import sys

import click

from skillweave.agents.providers import parse_spec
from skillweave.catalog import (
    bundled_skills,
    bundled_topics,
    load_lines,
    load_skills,
    split_by_category,
    split_topics,
)
from skillweave.cli.common import echo_table, open_store, prompts_dir
from skillweave.errors import UsageError
from skillweave.prompts import load_template


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


class RunGroup(click.Group):
    """`skillweave run`: every pipeline command gets the retry options (--timeout, --max-attempts, ...)."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        return retry_options(command) if command is not None else None


def start_run(ctx: click.Context, pipeline: str, config: dict, catalogs: dict[str, tuple]) -> str:
    """Validate templates, store catalogs and the run, then execute it and print its report."""
    store = open_store(ctx)
    if ctx.meta.get(RETRY_META):
        config["retry"] = ctx.meta[RETRY_META]
    for key in [k for k in config if k.endswith("_template")]:
        load_template(config[key], prompts_dir(ctx))  # unknown / malformed templates fail before any call
    catalog_ids = {}
    for role, (name, kind, entries, source) in catalogs.items():
        catalog_ids[role] = store.save_catalog(name, kind, entries, source=source)
        config[f"{role}_catalog"] = catalog_ids[role]
    run_id = store.create_run(pipeline, config, command=shlex.join(["skillweave", *sys.argv[1:]]))
    for role, catalog_id in catalog_ids.items():
        store.link_run_catalog(run_id, catalog_id, role)
    click.echo(f"run {run_id}", err=True)
    execute_and_report(ctx, pipeline, run_id, config.get("concurrency", 8))
    return run_id


def execute_and_report(ctx: click.Context, pipeline: str, run_id: str, concurrency: int,
                       retry_failed: bool = False) -> None:
    from skillweave.metrics import REPORTERS, resolve

    store = open_store(ctx)
    from skillweave.graphs.runtime import run_pipeline  # imports LangGraph: only when a run starts

    summary = run_pipeline(pipeline, store, run_id, prompts_dir=prompts_dir(ctx), concurrency=concurrency,
                           retry_failed=retry_failed)
    click.echo(
        f"run {run_id}: {summary.threads} threads, {summary.done} done, {summary.failed} failed, "
        f"{summary.paused} paused for review" + (f", {summary.skipped} already finished" if summary.skipped else "")
        + (f", {summary.crashed} raised ({summary.errors[0]}; `skillweave resume {run_id}` continues them)"
           if summary.crashed else ""),
        err=True,
    )
    reporter = resolve(REPORTERS, pipeline)
    if reporter is not None:
        report = reporter(store, store.get_run(run_id))
        echo_table(report["table"], report["columns"])


@click.group("run", cls=RunGroup)
def run_group() -> None:
    """Run a generation or evaluation pipeline; everything lands in the store."""


@run_group.command("skillmix")
@click.option("--k", "k_value", default="2", show_default=True, help="Skills per combination: 2, 2,3 or 2..4.")
@click.option("--n", default=5, show_default=True, type=click.IntRange(min=-1),
              help="Combinations per k (-1 enumerates all C(N,k) in sorted order; with --sampler official 0 does too).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Generation rounds per combination (same combinations; the best round counts).")
@click.option("--seed", default=10, show_default=True, help="Sampling seed (the reference default is 10).")
@click.option("--model", default="local", show_default=True, help="Student model spec: local, fake, openai:<m>, anthropic:<m>.")
@click.option("--judge", default=None, help="Judge model spec (default: same as --model).")
@click.option("--grading-samples", default=3, show_default=True, type=click.IntRange(min=1),
              help="Judge samples per text; rubric items are decided by majority vote.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Combinations in flight at once.")
@click.option("--skills", "skills_file", type=click.Path(dir_okay=False), default=None,
              help="Skill catalog: official skills.csv, JSON, or one name per line (default: bundled, 44 skills).")
@click.option("--topics", "topics_file", type=click.Path(dir_okay=False), default=None,
              help="topics.txt, one topic per line (default: bundled, 33 topics).")
@click.option("--split", type=click.Choice(["all", "train", "heldout"]), default="all", show_default=True,
              help="Use only the train or held-out part of the category split (Zhao et al.).")
@click.option("--train-categories", default="literary,rhetorical", show_default=True,
              help="Skill categories in the train split (comma-separated).")
@click.option("--temperature", default=0.7, show_default=True, help="Student sampling temperature.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="Student max new tokens per turn.")
@click.option("--judge-template", default="skillmix/judge", show_default=True,
              help="skillmix/judge (table) or skillmix/judge_points (point list).")
@click.option("--filter-explicit-name", is_flag=True, help="Zero a skill's point when its name appears verbatim.")
@click.option("--shorten", is_flag=True, help="Turn 1 also asks to shorten (the weaker-model variant).")
@click.option("--sampler", type=click.Choice(["official", "interleaved"]), default="official", show_default=True,
              help="official: query_random.py's order (all combinations, then one topic each, then the in-prompt "
                   "reshuffle seeded by --exp-path); interleaved: skillweave's earlier order (a combination and "
                   "its topic per draw); the two give different pairs for the same seed.")
@click.option("--exp-path", default="test", show_default=True,
              help="official sampler: the experiment path string that seeds the skill order inside each prompt "
                   "(query_random.py's --exp_path).")
@click.pass_context
def run_skillmix(ctx, k_value, n, rounds, seed, model, judge, grading_samples, concurrency, skills_file,
                 topics_file, split, train_categories, temperature, max_tokens, judge_template,
                 filter_explicit_name, shorten, sampler, exp_path):
    """Skill-Mix: sample k skills + a topic, two student turns, judge with the k+3 rubric.

    \b
    Example:
      skillweave run skillmix --model local --k 2 --n 2 --rounds 1
      skillweave run skillmix --model openai:gpt-4o-mini --judge openai:gpt-4o --k 2..4 --n 100
      skillweave run skillmix --skills skill-mix/skills.csv --topics skill-mix/topics.txt --k 3 --n 5 --seed 10
    """
    ks = parse_k(k_value)
    check_model("--model", model)
    check_model("--judge", judge or model)
    skills = load_skills(skills_file) if skills_file else bundled_skills()
    topics = load_lines(topics_file) if topics_file else bundled_topics()
    if split != "all":
        train, heldout = split_by_category(skills, {c.strip() for c in train_categories.split(",") if c.strip()})
        skills = train if split == "train" else heldout
        topics = split_topics(topics)[0 if split == "train" else 1]
    if max(ks) > len(skills):
        raise UsageError(f"--k {max(ks)} exceeds the {len(skills)} skills available")
    if n == 0:
        raise UsageError("--n 0 makes no combinations; give n >= 1 (or -1 for all C(N, k))")
    total = sum(math.comb(len(skills), k) for k in ks) if n == -1 else n * len(ks)
    if total > MAX_COMBINATIONS:  # checked before anything is sampled or allocated
        raise UsageError(f"--n {n} with --k {k_value} makes {total:,} combinations; at most {MAX_COMBINATIONS:,} "
                         "a run")
    config = {
        "k": ks, "n": n, "rounds": rounds, "seed": seed, "model": model, "judge": judge or model,
        "grading_samples": grading_samples, "concurrency": concurrency, "split": split,
        "train_categories": train_categories, "temperature": temperature, "judge_temperature": 0.7,
        "max_tokens": max_tokens, "student_template": "skillmix/student", "judge_template": judge_template,
        "filter_explicit_name": filter_explicit_name, "shorten": shorten, "sampler": sampler,
    }
    if sampler == "official":
        config["exp_path"] = exp_path
    start_run(ctx, "skillmix", config, {
        "skills": (skills_file or "bundled", "skills", [s.as_dict() for s in skills], skills_file or "bundled"),
        "topics": (topics_file or "bundled", "topics", [{"name": t} for t in topics], topics_file or "bundled"),
    })


@retry_options
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
      skillweave resume latest --retry-failed --timeout 30 --max-attempts 3

    A run is continued by one process at a time: while another live process holds it, resume is refused.
    """
    store = open_store(ctx)
    run = store.get_run(run_id)
    if ctx.meta.get(RETRY_META):  # kept in the run's config, so the next resume uses them too
        from skillweave.store import jdump

        retry = {spec: dict(fields) for spec, fields in (run["config"].get("retry") or {}).items()}
        for spec, fields in ctx.meta[RETRY_META].items():
            retry.setdefault(spec, {}).update(fields)
        config = {**run["config"], "retry": retry}
        with store.lock:
            store.db["runs"].update(run["id"], {"config": jdump(config)})
    from skillweave.agents.review import reopen_dead_claims
    from skillweave.graphs.runtime import pipeline_module

    pipeline_module(run["pipeline"])
    for item_id in reopen_dead_claims(store, run["id"]):  # a review decision whose process died mid-resume
        click.echo(f"item {item_id}: its reviewer's process is gone; it waits for review again", err=True)
    execute_and_report(ctx, run["pipeline"], run["id"], concurrency or run["config"].get("concurrency", 8),
                       retry_failed=retry_failed)


def register(root: click.Group) -> None:
    root.add_command(run_group)
    root.add_command(resume)
