"""`run extract-skills`, `eval solve`, `review skills ...` and `skills list|show|import|export`.

The reviewer's edits (rename, merge, split, drop, define) accumulate in a draft stored on the run's
`skills.catalog` item; `review skills approve RUN` resumes the paused thread with the draft, and the run
relabels the questions and builds the bank.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from skillweave.catalog import bank as bk
from skillweave.catalog import instruct_formats as fmt
from skillweave.catalog.mathdata import load_questions
from skillweave.cli.common import echo_json, echo_table, json_option, open_store, prompts_dir
from skillweave.cli.run import LazyGroup, check_model, run_group, start_run
from skillweave.cli.skills_review import _hint  # also registers `review skills ...`
from skillweave.errors import NotFound, UsageError
from skillweave.prompts import load_template
from skillweave.store import queries

FORMATS = ("adaptmi", "skills-txt", "queries-txt", "retrieval")


def _questions(dataset: str, split: str | None, limit: int | None) -> list[dict]:
    rows = load_questions(dataset, split=None if split in (None, "all") else split)
    if not rows:
        raise UsageError(f"dataset '{dataset}' has no questions in split '{split}'")
    return rows[:limit] if limit else rows


def _dataset_catalog(dataset: str, rows: list[dict]) -> tuple:
    from skillweave.agents.solver import dataset_entries

    return (
        Path(dataset).name if dataset != "bundled" else "bundled-math",
        "questions",
        dataset_entries(rows),
        dataset,
    )


# ---- run extract-skills -------------------------------------------------------------------------------
def _run_extract_skills_command() -> click.Command:
    """`run extract-skills`: one option per ExtractSkillsConfig field (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.skill_extraction import ExtractSkillsConfig

    f = config_options(ExtractSkillsConfig, overrides={
        "reviewer": {"default": "human"},  # a person checks the clusters unless told otherwise (API: auto)
        "show_solution": {"decls": ["--show-solution/--no-solution"]},  # today's name: --no-solution
    })(click.pass_context(run_extract_skills))
    return click.command("extract-skills")(f)


def run_extract_skills(ctx, **options):
    """Build a skill exemplar bank from a question set (label, cluster, review, relabel), or a skill list and
    query types by direct prompting when no dataset is given.

    Every option is a field of the run's settings (ExtractSkillsConfig), stored with the run.

    \b
    Example:
      skillweave run extract-skills --dataset bundled --split train --model local --reviewer auto
      skillweave run extract-skills --dataset questions.jsonl --model openai:gpt-4o   # pauses for review
      skillweave review skills show latest
      skillweave review skills approve latest
      skillweave run extract-skills --model fake --reviewer auto          # dataset-agnostic route
    """
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.skill_extraction import ExtractSkillsConfig

    check_model("--model", options["model"])
    config = config_from_options(ExtractSkillsConfig, options)
    catalogs = {}
    if config.dataset:
        catalogs["dataset"] = _dataset_catalog(config.dataset, _questions(config.dataset, config.split, config.limit))
    run_id = start_run(ctx, "extract-skills", config, catalogs)
    if run_id:  # not a --dry-run
        _hint(ctx, run_id)


# ---- eval solve ---------------------------------------------------------------------------------------
@click.group("eval", cls=LazyGroup)
def eval_group() -> None:
    """Evaluate models on question sets (exemplar retrieval, MATH²)."""


def _eval_solve_command() -> click.Command:
    """`eval solve`: one option per SolveConfig field, plus --bank, --limit and --json (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.skill_extraction import SolveConfig

    f = json_option(click.pass_context(eval_solve))
    f = click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")(f)
    f = click.option("--bank", "bank_ref", default="bundled", show_default=True,
                     help="Skill bank: 'bundled', an AdaptMI bank JSON file, or a stored bank id/name.")(f)
    f = config_options(SolveConfig, exclude=EVAL_SOLVE_EXCLUDED, overrides={
        "dataset": {"default": "bundled"},
        "methods": {"decls": ["--exemplars"], "type": str, "multiple": False, "default": "skill,random,fixed",
                    "callback": lambda _c, _p, v: [m.strip() for m in v.split(",") if m.strip()]},
        "retrieval_file": {"decls": ["--retrieval"], "type": click.Path(dir_okay=False)},
    })(f)
    return click.command("solve")(f)


# settings `eval solve` does not offer: the catalog ids (--bank and --dataset store the catalogs and fill them
# in), and --shard (it stores and runs its run itself, one process)
EVAL_SOLVE_EXCLUDED = frozenset({"bank_catalog", "dataset_catalog", "shard"})


def eval_solve(ctx, bank_ref, limit, as_json, **options):
    """Solve each question with skill-based, random or fixed exemplars; report accuracy per method and skill.

    Every option but --bank, --limit and --json is a field of the run's settings (SolveConfig), stored with
    the run.

    \b
    Example:
      skillweave eval solve --model local --limit 10
      skillweave eval solve --dataset q.jsonl --bank my-bank --exemplars skill,random --model openai:gpt-4o-mini
      skillweave eval solve --dataset q.jsonl --bank bank.json --retrieval skill_retrieval/GSM8K/test/test.json
      skillweave report latest --json
    """
    from skillweave.agents.solver import METHODS
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.skill_extraction import SolveConfig
    from skillweave.providers.reply_cache import cache_path

    check_model("--model", options["model"])
    if options["judge"]:
        check_model("--judge", options["judge"])
    chosen = options["methods"]
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise UsageError(
            f"--exemplars '{','.join(chosen)}': unknown method(s) {bad}; choose from {', '.join(METHODS)}"
        )
    store = open_store(ctx)
    bank = bk.load_bank(store, bank_ref)
    if not bank.exemplars:
        raise UsageError(
            f"bank '{bank_ref}' has no exemplars; build one with `skillweave run extract-skills`"
        )
    bank_id = bank.catalog_id or bk.save_bank(store, bank, bank.name or bank_ref, source=bank_ref)
    dataset = options["dataset"]
    split = options["split"] or ("test" if dataset == "bundled" else None)
    rows = _questions(dataset, split, limit)
    if options["retrieval_file"]:
        retrieved = bk.read_retrieval_json(options["retrieval_file"])
        rows = [{**r, "retrieved_skills": retrieved.get(r["question"])} for r in rows]
    config = config_from_options(SolveConfig, {**options, "bank_catalog": bank_id, "split": split})
    from skillweave.agents.solver import run_report
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline

    for template in config.templates():
        load_template(template, prompts_dir(ctx))
    config.reply_cache = cache_path(config.reply_cache)  # --reply-cache, else $SKILLWEAVE_REPLY_CACHE
    name, kind, entries, source = _dataset_catalog(dataset, rows)
    config.dataset_catalog = store.save_catalog(name, kind, entries, source=source)
    run_id = store.create_run("solve", config.model_dump(), command=shlex.join(["skillweave", *sys.argv[1:]]))
    store.link_run_catalog(run_id, config.dataset_catalog, "dataset")
    store.link_run_catalog(run_id, bank_id, "bank")
    click.echo(f"run {run_id}", err=True)
    summary = run_pipeline(get_pipeline("solve"), store, run_id, prompts_dir=prompts_dir(ctx),
                           concurrency=config.concurrency)
    click.echo(
        f"run {run_id}: {summary.threads} threads, {summary.done} done, {summary.failed} failed", err=True
    )
    report = run_report(store, store.get_run(run_id))
    if as_json:
        echo_json({"run_id": run_id, **report})
    else:
        echo_table(report["table"], report["columns"])


# ---- skills list|show|import|export -------------------------------------------------------------------
@click.group("skills")
def skills_group() -> None:
    """Skill banks and skill catalogs: list, show, import and export (AdaptMI JSON, Instruct-SkillMix text)."""


def _resolve_catalog(store, ref: str, kinds: tuple[str, ...] = ("bank", "skills", "query_types")) -> dict:
    """A catalog by id, 'bundled', name (newest; the first of `kinds` with that name wins), or the run id of an
    extract-skills run ('latest' = the newest one): its bank, skills or query types."""
    if ref == "latest" or queries.run_exists(store, ref):
        runs = store.list_runs(limit=1, pipeline="extract-skills") if ref == "latest" else [{"id": ref}]
        roles = store.run_catalogs(runs[0]["id"]) if runs else {}
        for kind in kinds:
            if kind in roles:
                return store.get_catalog(roles[kind])
        if runs:
            raise NotFound(f"run '{runs[0]['id']}' has no {' or '.join(kinds)} catalog (is it finished?)")
    if ref == "bundled":
        bank = bk.bundled_bank()
        return store.get_catalog(bk.save_bank(store, bank, "bundled", source="bundled"))
    if queries.catalog_exists(store, ref):
        return store.get_catalog(ref)
    for kind in kinds:
        newest = queries.newest_catalog_id(store, ref, kind)
        if newest:
            return store.get_catalog(newest)
    raise NotFound(f"no skill bank or catalog '{ref}' in {store.path}; `skillweave skills list` shows them")


@skills_group.command("list")
@json_option
@click.pass_context
def skills_list(ctx, as_json):
    """Stored skill banks, skill catalogs and query-type catalogs.

    \b
    Example:
      skillweave skills list --json
    """
    store = open_store(ctx)
    rows = [
        {
            "id": r["id"],
            "kind": r["kind"],
            "name": r["name"],
            "entries": queries.catalog_entry_count(store, r["id"], except_status="fine"),
            "exemplars": queries.exemplar_count(store, r["id"]),
            "source": r["source"],
            "created_at": r["created_at"],
        }
        for r in queries.catalogs_of_kinds(store, ("bank", "skills", "query_types"))
    ]
    echo_json(rows) if as_json else echo_table(rows, ["id", "kind", "name", "entries", "exemplars", "source"])


@skills_group.command("show")
@click.argument("ref")
@json_option
@click.pass_context
def skills_show(ctx, ref, as_json):
    """A bank's skills with exemplar counts (or a catalog's entries). REF: id, name, run id, latest or bundled.

    \b
    Example:
      skillweave skills show bundled
    """
    store = open_store(ctx)
    catalog = _resolve_catalog(store, ref)
    if catalog["kind"] == "bank":
        rows = bk.bank_from_catalog(catalog).summary()
        columns = ["skill", "subject", "exemplars", "fine_labels", "definition"]
    else:
        rows = [
            {"name": e["name"], "category": e["category"], "definition": e["definition"]}
            for e in catalog["entries"]
        ]
        columns = ["name", "category", "definition"]
    if as_json:
        echo_json({"id": catalog["id"], "kind": catalog["kind"], "name": catalog["name"], "rows": rows})
    else:
        click.echo(f"{catalog['id']} ({catalog['kind']}, {catalog['name']})")
        echo_table(rows, columns)


def _guess_format(path: Path) -> str:
    if path.suffix == ".json":
        return "adaptmi"
    if "quer" in path.name.lower():
        return "queries-txt"
    return "skills-txt"


@skills_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt_name",
    type=click.Choice(FORMATS[:3]),
    default=None,
    help="adaptmi (bank.json), skills-txt (one skill a line) or queries-txt (### blocks); default: by name.",
)
@click.option("--name", default=None, help="Catalog name (default: the file name).")
@json_option
@click.pass_context
def skills_import(ctx, path, fmt_name, name, as_json):
    """Store an AdaptMI bank.json, an Instruct-SkillMix skills.txt or queries.txt.

    \b
    Example:
      skillweave skills import bank.json --name math-bank
      skillweave skills import skills.txt && skillweave skills import queries.txt
    """
    store = open_store(ctx)
    path = Path(path)
    fmt_name = fmt_name or _guess_format(path)
    name = name or path.stem
    if fmt_name == "adaptmi":
        bank = bk.read_bank_json(path)
        catalog_id = bk.save_bank(store, bank, name, source=str(path))
        info = {"skills": len(bank.skills), "exemplars": len(bank.exemplars)}
    elif fmt_name == "skills-txt":
        skills = fmt.read_skills_txt(path)
        entries = fmt.skills_txt_entries(fmt.read_text_exact(path))  # remembers the bytes for export
        catalog_id = store.save_catalog(name, "skills", entries, source=str(path))
        info = {"skills": len(skills), "unique": len(set(skills))}
    else:
        queries = fmt.read_queries_txt(path)
        catalog_id = store.save_catalog(name, "query_types", fmt.query_entries(queries), source=str(path))
        info = {"query_types": len(queries)}
    result = {"id": catalog_id, "name": name, "format": fmt_name, **info}
    echo_json(result) if as_json else click.echo(" ".join(f"{k}={v}" for k, v in result.items()))


@skills_group.command("export")
@click.argument("ref")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt_name",
    type=click.Choice(FORMATS),
    default=None,
    help="adaptmi, skills-txt, queries-txt or retrieval (AdaptMI retrieval file, {\"question2skill\": ...}); "
    "default: by name.",
)
@click.option(
    "--provenance", is_flag=True, help="AdaptMI: add each exemplar's provenance (model, prompts, labels)."
)
@click.pass_context
def skills_export(ctx, ref, out, fmt_name, provenance):
    """Write a stored bank or catalog in an external format. REF: id, name, run id, latest or bundled.

    \b
    Example:
      skillweave skills export bundled bank.json
      skillweave skills export my-run skills.txt --format skills-txt
    """
    from skillweave.export.writers import refuse_store

    store = open_store(ctx)
    out_path = Path(out)
    refuse_store(out_path, store)  # never write over the store
    fmt_name = fmt_name or _guess_format(out_path)
    catalog = _resolve_catalog(
        store,
        ref,
        {"skills-txt": ("skills", "bank"), "queries-txt": ("query_types",)}.get(
            fmt_name, ("bank", "skills", "query_types")
        ),
    )
    if fmt_name in ("adaptmi", "retrieval"):
        if catalog["kind"] != "bank":
            raise UsageError(f"'{ref}' is a {catalog['kind']} catalog; {fmt_name} export needs a skill bank")
        bank = bk.bank_from_catalog(catalog)
        if fmt_name == "adaptmi":
            bk.write_bank_json(bank, out_path, include_provenance=provenance)
        else:
            import json

            out_path.write_text(
                json.dumps(bk.retrieval_document(bank), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
    elif fmt_name == "skills-txt":
        if catalog["kind"] == "query_types":
            raise UsageError(f"'{ref}' is a query_types catalog; export it with --format queries-txt")
        kept = [e for e in catalog["entries"] if e["status"] != "fine"]
        out_path.write_text(fmt.skills_txt_from_entries(kept), encoding="utf-8", newline="")
    else:
        if catalog["kind"] != "query_types":
            raise UsageError(f"'{ref}' is a {catalog['kind']} catalog; queries-txt export needs query types")
        fmt.write_queries_txt(out_path, fmt.queries_from_entries(catalog["entries"]))
    click.echo(f"wrote {out_path} ({fmt_name})", err=True)


eval_group.lazy["solve"] = _eval_solve_command


def register(root: click.Group) -> None:
    run_group.lazy["extract-skills"] = _run_extract_skills_command  # built when first asked for
    existing = root.commands.get("eval")
    if existing is None:
        root.add_command(eval_group)
    elif existing is not eval_group and isinstance(existing, click.Group):  # someone else's eval group
        for name in eval_group.list_commands(click.Context(eval_group)):
            existing.add_command(eval_group.get_command(click.Context(eval_group), name), name)
    root.add_command(skills_group)
