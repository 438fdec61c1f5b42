"""`skillweave run <pipeline>` and `skillweave resume RUN_ID`."""

from __future__ import annotations

import math
import os
import shlex
import sys

import click

from skillweave.agents.providers import parse_spec
from skillweave.agents.reply_cache import open_cache
from skillweave.catalog import (
    bundled_skills,
    bundled_topics,
    load_lines,
    load_skills,
    split_by_category,
    split_topics,
)
from skillweave.cli.common import echo_table, open_store, prompts_dir
from skillweave.cli.largeruns import (
    EXIT_INTERRUPTED,
    exit_when_done,
    preflight,
    progress_every,
    progress_every_option,
    resume_command,
    stop,
)
from skillweave.errors import UsageError
from skillweave.graphs import shards
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


def start_run(ctx: click.Context, pipeline: str, config: dict, catalogs: dict[str, tuple]) -> str:
    """Validate templates, store catalogs and the run, then execute it and print its report."""
    store = open_store(ctx)
    for key in [k for k in config if k.endswith("_template")]:
        load_template(config[key], prompts_dir(ctx))  # unknown / malformed templates fail before any call
    preflight(config)  # API keys and endpoints, before any run row exists
    if "reply_cache" not in config and os.environ.get("SKILLWEAVE_REPLY_CACHE"):
        config["reply_cache"] = os.environ["SKILLWEAVE_REPLY_CACHE"]
    if config.get("reply_cache"):
        config["reply_cache"] = os.path.abspath(os.path.expanduser(config["reply_cache"]))
        open_cache(config["reply_cache"])  # an unusable cache file fails here, not mid-run
    catalog_ids = {}
    for role, (name, kind, entries, source) in catalogs.items():
        catalog_ids[role] = store.save_catalog(name, kind, entries, source=source)
        config[f"{role}_catalog"] = catalog_ids[role]
    run_id = None
    if config.get("shard"):  # every shard of one run shares its id, so `merge` joins them (graphs/shards.py)
        run_id = shards.sharded_run_id(pipeline, config)
        if store.db["runs"].count_where("id = ?", [run_id]):
            raise UsageError(f"run {run_id} (this shard's run) is already in {store.path}; continue it with "
                             f"`skillweave resume {run_id}`, or give each shard its own --db")
    run_id = store.create_run(pipeline, config, command=shlex.join(["skillweave", *sys.argv[1:]]), run_id=run_id)
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

    try:
        summary = run_pipeline(pipeline, store, run_id, prompts_dir=prompts_dir(ctx), concurrency=concurrency,
                               retry_failed=retry_failed, progress_every=progress_every(ctx))
    except KeyboardInterrupt:
        click.echo(f"Interrupted: run {run_id} stopped; continue it with: {resume_command(ctx, run_id)}", err=True)
        stop(EXIT_INTERRUPTED)
    click.echo(
        f"run {run_id}: {summary.threads} threads, {summary.done} done, {summary.failed} failed, "
        f"{summary.paused} paused for review" + (f", {summary.skipped} already finished" if summary.skipped else ""),
        err=True,
    )
    reporter = resolve(REPORTERS, pipeline)
    if reporter is not None:
        report = reporter(store, store.get_run(run_id))
        echo_table(report["table"], report["columns"])
    exit_when_done(ctx, summary)


@click.group("run")
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
@click.option("--shard", default=None, metavar="I/N",
              help="Run only part I of N of the plan (same plan on every machine); join with `skillweave merge`.")
@click.option("--reply-cache", type=click.Path(dir_okay=False), default=None,
              help="Reuse replies to identical requests from this file, shared across runs (or set "
                   "SKILLWEAVE_REPLY_CACHE).")
@progress_every_option
@click.pass_context
def run_skillmix(ctx, k_value, n, rounds, seed, model, judge, grading_samples, concurrency, skills_file,
                 topics_file, split, train_categories, temperature, max_tokens, judge_template,
                 filter_explicit_name, shorten, sampler, exp_path, shard, reply_cache):
    """Skill-Mix: sample k skills + a topic, two student turns, judge with the k+3 rubric.

    \b
    Example:
      skillweave run skillmix --model local --k 2 --n 2 --rounds 1
      skillweave run skillmix --model openai:gpt-4o-mini --judge openai:gpt-4o --k 2..4 --n 100
      skillweave run skillmix --skills skill-mix/skills.csv --topics skill-mix/topics.txt --k 3 --n 5 --seed 10
      skillweave --db shard1.db run skillmix --model fake --k 2 --n 10 --shard 1/2
      skillweave run skillmix --model fake --k 2 --n 2 --reply-cache replies.db
    """
    ks = parse_k(k_value)
    shards.parse_shard(shard)
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
    if shard:
        config["shard"] = shard
    if reply_cache:
        config["reply_cache"] = reply_cache
    start_run(ctx, "skillmix", config, {
        "skills": (skills_file or "bundled", "skills", [s.as_dict() for s in skills], skills_file or "bundled"),
        "topics": (topics_file or "bundled", "topics", [{"name": t} for t in topics], topics_file or "bundled"),
    })


@click.command("resume")
@click.argument("run_id")
@click.option("--concurrency", default=None, type=click.IntRange(min=1), help="Override the run's concurrency.")
@click.option("--retry-failed", is_flag=True,
              help="Also run again the threads whose items failed (e.g. after a provider outage).")
@progress_every_option
@click.pass_context
def resume(ctx, run_id, concurrency, retry_failed):
    """Finish an interrupted run: finished threads are skipped, stored model replies are reused.

    \b
    Example:
      skillweave resume skillmix-20261126-101500-ab12cd
      skillweave resume latest --retry-failed
    """
    store = open_store(ctx)
    run = store.get_run(run_id)
    from skillweave.graphs.runtime import pipeline_module

    pipeline_module(run["pipeline"])
    execute_and_report(ctx, run["pipeline"], run["id"], concurrency or run["config"].get("concurrency", 8),
                       retry_failed=retry_failed)


def register(root: click.Group) -> None:
    root.add_command(run_group)
    root.add_command(resume)
