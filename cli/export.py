"""`skillweave run instruct-skillmix` and `skillweave export RUN_ID...`: make instruction data, write it for trainers."""

from __future__ import annotations

import shlex
import sys

import click

from skillweave.cli.common import echo_json, echo_table, json_option, open_store
from skillweave.cli.run import check_model, parse_k, run_group, start_run
from skillweave.errors import UsageError

HELDOUT_SEED = 4242


def _run_instruct_skillmix_command() -> click.Command:
    """`run instruct-skillmix`: one option per InstructSkillMixConfig field, plus the catalog sources and
    --shirkers (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.instruct_skillmix import InstructSkillMixConfig

    f = click.pass_context(run_instruct_skillmix)
    for option in reversed([
        click.option("--skills", "skills_file", type=click.Path(dir_okay=False), default=None,
                     help="skills.txt, one snake_case skill a line (default: bundled, 40 skills)."),
        click.option("--queries", "queries_file", type=click.Path(dir_okay=False), default=None,
                     help="queries.txt with '### N. **Name**' blocks (default: bundled, 16 query types)."),
        click.option("--from-run", default=None,
                     help="Use the skills and query types an extract-skills run stored (its run id) instead of "
                          "files."),
        click.option("--skills-catalog", "skills_ref", default=None,
                     help="A stored skills catalog (id or name) instead of --skills."),
        click.option("--queries-catalog", "queries_ref", default=None,
                     help="A stored query-types catalog (id or name) instead of --queries."),
        click.option("--shirkers", is_flag=True,
                     help="Ablation: replace a fraction of responses (--shirker-fraction) with deliberately "
                          "unhelpful ones."),
    ]):
        f = option(f)
    f = config_options(InstructSkillMixConfig, overrides={
        # these defaults depend on other options (--set, --model, --shirkers): the command fills them in
        "n": {"default": None}, "seed": {"default": None}, "max_tokens": {"default": None},
        "shirker_fraction": {"default": 0.2},
    })(f)
    return click.command("instruct-skillmix")(f)


def run_instruct_skillmix(ctx, skills_file, queries_file, from_run, skills_ref, queries_ref, shirkers, **options):
    """Instruct-SkillMix: k random skills + a balanced query type -> five-turn generator -> (instruction, response).

    Every option but the catalog sources and --shirkers is a field of the run's settings
    (InstructSkillMixConfig), stored with the run.

    \b
    Example:
      skillweave run instruct-skillmix --model fake --n 20
      skillweave run instruct-skillmix --model local --n 5
      skillweave run instruct-skillmix --model openai:gpt-4o --n 1000 --shirkers
      skillweave run instruct-skillmix --model openai:gpt-4o --set heldout
      skillweave run instruct-skillmix --model fake --n 20 --sampler types-first
      skillweave export latest --format jsonl --shape alpaca --out ism.jsonl
    """
    from skillweave.catalog.instruct_formats import (
        bundled_instruct_skills,
        bundled_query_types,
        queries_from_entries,
        query_entries,
        read_queries_txt,
        read_skills_txt,
        skill_entries,
    )
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.instruct_skillmix import InstructSkillMixConfig
    from skillweave.providers.core import parse_spec

    model, k, set_name = options["model"], options["k"], options["set"]
    check_model("--model", model)
    skills = read_skills_txt(skills_file) if skills_file else bundled_instruct_skills()
    queries = read_queries_txt(queries_file) if queries_file else bundled_query_types()
    skills_source, queries_source = skills_file or "bundled", queries_file or "bundled"
    if from_run or skills_ref or queries_ref:
        store = open_store(ctx)
        linked = store.run_catalogs(store.get_run(from_run)["id"]) if from_run else {}
        if from_run and not {"skills", "query_types"} & linked.keys():
            raise UsageError(f"run '{from_run}' stored no skills or query_types catalog; pick an extract-skills run")
        skills_ref, queries_ref = skills_ref or linked.get("skills"), queries_ref or linked.get("query_types")
        if skills_ref:
            catalog = _stored_catalog(store, skills_ref, "skills")
            skills, skills_source = [e["name"] for e in catalog["entries"]], catalog["id"]
        if queries_ref:
            catalog = _stored_catalog(store, queries_ref, "query_types")
            queries, queries_source = queries_from_entries(catalog["entries"]), catalog["id"]
    if k > len(skills):
        raise UsageError(f"--k {k} exceeds the {len(skills)} skills in {skills_source}")
    heldout = set_name == "heldout"
    config = config_from_options(InstructSkillMixConfig, {
        **options,
        "n": options["n"] or (100 if heldout else 5),
        "seed": options["seed"] if options["seed"] is not None else (HELDOUT_SEED if heldout else 42),
        "max_tokens": options["max_tokens"] or (4096 if parse_spec(model)[0] in ("openai", "anthropic") else 256),
        "shirker_fraction": options["shirker_fraction"] if shirkers else 0.0,
    })
    start_run(ctx, "instruct-skillmix", config, {
        "skills": (skills_source, "skills", skill_entries(skills), skills_source),
        "query_types": (queries_source, "query_types", query_entries(queries), queries_source),
    })


def _stored_catalog(store, ref: str, kind: str) -> dict:
    """A stored catalog of `kind` by id, or the newest with that name."""
    from skillweave.errors import NotFound
    from skillweave.store import queries

    if queries.catalog_exists(store, ref, kind):
        return store.get_catalog(ref)
    newest = queries.newest_catalog_id(store, ref, kind)
    if not newest:
        raise NotFound(f"no {kind} catalog '{ref}' in {store.path}; `skillweave skills list` shows the catalogs")
    return store.get_catalog(newest)


@click.command("export")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "json", "parquet", "hf"]), default="jsonl",
              show_default=True, help="jsonl, json (one list, Alpaca style), parquet, or hf (datasets.save_to_disk folder).")
@click.option("--shape", type=click.Choice(["alpaca", "messages", "prompt-completion", "preference"]), default="alpaca",
              show_default=True, help="Row shape: instruction/input/output, messages, prompt/completion, prompt/chosen/rejected.")
@click.option("--out", "out", required=True, type=click.Path(), help="Output file (or folder for --format hf).")
@click.option("--status", default="finished", show_default=True,
              help="Item status to keep: 'finished' (each pipeline's finished items: accepted for MATH², done "
                   "otherwise), a status such as done, or 'any'.")
@click.option("--min-score", default=None, type=float, help="Keep items whose voted rubric score (sum of points) is >= this.")
@click.option("--full-marks", is_flag=True, help="Skill-Mix: keep only texts whose voted points are all 1 (Zhao et al.).")
@click.option("--reviewed-only", is_flag=True, help="Keep only items a reviewer approved or edited.")
@click.option("--exclude-shirkers", is_flag=True, help="Drop Instruct-SkillMix points whose response is a shirker.")
@click.option("--k", "k_value", default=None, help="Keep only these k (e.g. 1 or 1,2 or 1..3).")
@click.option("--system", default=None, help="System message to put first in --shape messages rows.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@json_option
@click.pass_context
def export(ctx, run_ids, fmt, shape, out, status, min_score, full_marks, reviewed_only, exclude_shirkers, k_value,
           system, overwrite, as_json):
    """Write a run's items as training data, with a dataset card beside it; every row carries its item_id.

    \b
    Examples:
      skillweave export latest --format jsonl --shape alpaca --out ism.jsonl
      skillweave export RUN --format hf --shape prompt-completion --out ism_hf --exclude-shirkers
      skillweave export RUN --shape preference --out pairs.jsonl      # shirker or Skill-Mix round pairs
      skillweave export SKILLMIX_RUN --full-marks --k 1..3 --out d123.jsonl   # Zhao et al. SFT data
      skillweave export MATH2_RUN --shape prompt-completion --out math2.jsonl  # accepted, reviewed questions
    """
    from skillweave.export import ExportFilters, export_runs

    store = open_store(ctx)
    filters = ExportFilters(status=None if status == "any" else status, min_score=min_score, full_marks=full_marks,
                            reviewed_only=reviewed_only, exclude_shirkers=exclude_shirkers,
                            k=parse_k(k_value) if k_value else None)
    result = export_runs(store, list(run_ids), out, fmt=fmt, shape=shape, filters=filters, system=system,
                         overwrite=overwrite, command=shlex.join(["skillweave", *sys.argv[1:]]))
    if as_json:
        echo_json(result)
    else:
        echo_table([{"rows": result["rows"], "items seen": result["items_seen"], "out": result["out"],
                     "card": result["card"]}], ["rows", "items seen", "out", "card"])
        for reason, count in result["dropped"].items():
            click.echo(f"dropped {count}: {reason}", err=True)


def register(root: click.Group) -> None:
    run_group.lazy["instruct-skillmix"] = _run_instruct_skillmix_command  # built when first asked for
    root.add_command(export)
