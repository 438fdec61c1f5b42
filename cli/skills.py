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
from skillweave.cli.common import echo_json, echo_table, json_option, open_store, prompts_dir, typed_config
from skillweave.cli.run import check_model, run_group, start_run
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
@click.command("extract-skills")
@click.option(
    "--dataset",
    default=None,
    help="Questions (JSONL or CSV with question, answer, optional subject "
    "and solution) or 'bundled'. Without it: direct prompting for skills and query types.",
)
@click.option(
    "--split",
    default="all",
    show_default=True,
    help="Use only rows with this `split` value (all = every row).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N questions.")
@click.option(
    "--model", default="local", show_default=True, help="Model spec: local, fake, openai:<m>, anthropic:<m>."
)
@click.option(
    "--reviewer",
    type=click.Choice(["human", "auto"]),
    default="human",
    show_default=True,
    help="human: pause after clustering for `skillweave review skills`; auto: no pause.",
)
@click.option("--bank-name", default=None, help="Name of the stored bank / catalogs (default: the run id).")
@click.option(
    "--relabel",
    type=click.Choice(["map", "llm"]),
    default="map",
    show_default=True,
    help="map: each question takes its fine label's coarse skill; llm: the model picks for every question.",
)
@click.option(
    "--cluster-batch",
    default=80,
    show_default=True,
    type=click.IntRange(min=2),
    help="Fine labels per clustering call (per subject).",
)
@click.option(
    "--cluster-ratio",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.01, 1.0),
    help="Target coarse/fine ratio suggested to the clustering model (MATH: ~117/5000; unverified).",
)
@click.option(
    "--pregroup",
    type=click.Choice(["alpha", "embed"]),
    default="alpha",
    show_default=True,
    help="How labels beyond --cluster-batch are split into clustering calls: sorted names, or MiniLM similarity.",
)
@click.option(
    "--cluster-max-tokens",
    default=2048,
    show_default=True,
    type=click.IntRange(min=16),
    help="Max new tokens of a clustering / skill-list / query-type reply.",
)
@click.option("--no-solution", is_flag=True, help="Do not show solutions to the labeller.")
@click.option(
    "--parse-retries",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Fresh calls after a reply that does not parse.",
)
@click.option(
    "--temperature", default=0.0, show_default=True, help="First-try temperature (retries use 0.7)."
)
@click.option(
    "--concurrency", default=8, show_default=True, type=click.IntRange(min=1), help="Calls in flight."
)
@click.option(
    "--domain",
    default="helpful instruction following",
    show_default=True,
    help="Without a dataset: the domain to enumerate skills for.",
)
@click.option("--n-topics", default=8, show_default=True, help="Without a dataset: topics to ask for.")
@click.option("--skills-per-topic", default=6, show_default=True, help="Without a dataset: skills per topic.")
@click.option(
    "--n-query-types", default=12, show_default=True, help="Without a dataset: query types to ask for."
)
@click.option(
    "--proposals",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Without a dataset: skill-list calls whose union is deduplicated.",
)
@click.pass_context
def run_extract_skills(
    ctx,
    dataset,
    split,
    limit,
    model,
    reviewer,
    bank_name,
    relabel,
    cluster_batch,
    cluster_ratio,
    pregroup,
    cluster_max_tokens,
    no_solution,
    parse_retries,
    temperature,
    concurrency,
    domain,
    n_topics,
    skills_per_topic,
    n_query_types,
    proposals,
):
    """Build a skill exemplar bank from a question set (label, cluster, review, relabel), or a skill list and
    query types by direct prompting when no dataset is given.

    \b
    Example:
      skillweave run extract-skills --dataset bundled --split train --model local --reviewer auto
      skillweave run extract-skills --dataset questions.jsonl --model openai:gpt-4o   # pauses for review
      skillweave review skills show latest
      skillweave review skills approve latest
      skillweave run extract-skills --model fake --reviewer auto          # dataset-agnostic route
    """
    check_model("--model", model)
    config = {
        "model": model,
        "reviewer": reviewer,
        "bank_name": bank_name,
        "relabel": relabel,
        "cluster_batch": cluster_batch,
        "cluster_ratio": cluster_ratio,
        "show_solution": not no_solution,
        "cluster_max_tokens": cluster_max_tokens,
        "pregroup": pregroup,
        "propose_max_tokens": cluster_max_tokens,
        "parse_retries": parse_retries,
        "temperature": temperature,
        "concurrency": concurrency,
        "label_template": "skill_extraction/label",
        "cluster_template": "skill_extraction/cluster",
        "relabel_template": "skill_extraction/relabel",
        "dataset": dataset,
        "split": split,
        "limit": limit,
    }
    catalogs = {}
    if dataset:
        catalogs["dataset"] = _dataset_catalog(dataset, _questions(dataset, split, limit))
    else:
        config.update(
            {
                "domain": domain,
                "n_topics": n_topics,
                "skills_per_topic": skills_per_topic,
                "n_query_types": n_query_types,
                "proposals": proposals,
                "skills_template": "skill_extraction/propose_skills",
                "query_types_template": "skill_extraction/propose_query_types",
            }
        )
    run_id = start_run(ctx, "extract-skills", config, catalogs)
    if run_id:  # not a --dry-run
        _hint(ctx, run_id)


# ---- eval solve ---------------------------------------------------------------------------------------
@click.group("eval")
def eval_group() -> None:
    """Evaluate models on question sets (exemplar retrieval, MATH²)."""


@eval_group.command("solve")
@click.option("--dataset", default="bundled", show_default=True, help="Questions (JSONL/CSV) or 'bundled'.")
@click.option(
    "--split", default=None, help="Rows with this `split` value (default: test for bundled, else all)."
)
@click.option(
    "--bank",
    "bank_ref",
    default="bundled",
    show_default=True,
    help="Skill bank: 'bundled', an AdaptMI bank JSON file, or a stored bank id/name.",
)
@click.option(
    "--exemplars",
    "methods",
    default="skill,random,fixed",
    show_default=True,
    help="Exemplar methods to compare, comma-separated: skill, random, fixed, subject (same-subject baseline).",
)
@click.option("--model", default="local", show_default=True, help="Solver model spec.")
@click.option("--k", default=4, show_default=True, type=click.IntRange(min=0), help="Exemplars per question.")
@click.option("--seed", default=0, show_default=True, help="Seed of the exemplar draws.")
@click.option(
    "--judge", default=None, help="Also grade with an LLM judge (model spec); the report then uses it."
)
@click.option(
    "--skill-list",
    type=click.Choice(["all", "subject"]),
    default="all",
    show_default=True,
    help="Skills shown to the picker: all, or only the question's subject's skills.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")
@click.option("--max-tokens", default=384, show_default=True, type=click.IntRange(min=1),
              help="Solver max new tokens.")
@click.option(
    "--parse-retries",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Fresh skill-pick calls after an unparseable pick.",
)
@click.option(
    "--concurrency", default=8, show_default=True, type=click.IntRange(min=1), help="Threads in flight."
)
@click.option(
    "--retrieval",
    "retrieval_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="AdaptMI retrieval file ({\"question2skill\": ...}): the skill method takes each question's skill "
    "from it (matched by question text) instead of asking the model.",
)
@json_option
@click.pass_context
def eval_solve(
    ctx,
    dataset,
    split,
    bank_ref,
    methods,
    model,
    k,
    seed,
    judge,
    skill_list,
    limit,
    max_tokens,
    parse_retries,
    concurrency,
    retrieval_file,
    as_json,
):
    """Solve each question with skill-based, random or fixed exemplars; report accuracy per method and skill.

    \b
    Example:
      skillweave eval solve --model local --limit 10
      skillweave eval solve --dataset q.jsonl --bank my-bank --exemplars skill,random --model openai:gpt-4o-mini
      skillweave eval solve --dataset q.jsonl --bank bank.json --retrieval skill_retrieval/GSM8K/test/test.json
      skillweave report latest --json
    """
    from skillweave.agents.solver import METHODS

    check_model("--model", model)
    if judge:
        check_model("--judge", judge)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise UsageError(
            f"--exemplars '{methods}': unknown method(s) {bad}; choose from {', '.join(METHODS)}"
        )
    store = open_store(ctx)
    bank = bk.load_bank(store, bank_ref)
    if not bank.exemplars:
        raise UsageError(
            f"bank '{bank_ref}' has no exemplars; build one with `skillweave run extract-skills`"
        )
    bank_id = bank.catalog_id or bk.save_bank(store, bank, bank.name or bank_ref, source=bank_ref)
    split = split or ("test" if dataset == "bundled" else None)
    rows = _questions(dataset, split, limit)
    if retrieval_file:
        retrieved = bk.read_retrieval_json(retrieval_file)
        rows = [{**r, "retrieved_skills": retrieved.get(r["question"])} for r in rows]
    config = {
        "model": model,
        "k": k,
        "seed": seed,
        "methods": chosen,
        "judge": judge,
        "skill_list": skill_list,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "parse_retries": parse_retries,
        "concurrency": concurrency,
        "bank_catalog": bank_id,
        "dataset": dataset,
        "split": split,
        "pick_template": "solve/pick_skill",
        "solve_template": "solve/cot",
        "judge_template": "solve/judge",
    }
    if retrieval_file:
        config["retrieval_file"] = retrieval_file
    from skillweave.agents.solver import run_report
    from skillweave.graphs.runtime import run_pipeline
    from skillweave.pipelines import get_pipeline

    for key in [k for k in config if k.endswith("_template")]:
        load_template(config[key], prompts_dir(ctx))
    name, kind, entries, source = _dataset_catalog(dataset, rows)
    config["dataset_catalog"] = store.save_catalog(name, kind, entries, source=source)
    run_id = store.create_run("solve", typed_config("solve", config), command=shlex.join(["skillweave", *sys.argv[1:]]))
    store.link_run_catalog(run_id, config["dataset_catalog"], "dataset")
    store.link_run_catalog(run_id, bank_id, "bank")
    click.echo(f"run {run_id}", err=True)
    summary = run_pipeline(get_pipeline("solve"), store, run_id, prompts_dir=prompts_dir(ctx), concurrency=concurrency)
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


def register(root: click.Group) -> None:
    run_group.add_command(run_extract_skills)
    existing = root.commands.get("eval")
    if existing is None:
        root.add_command(eval_group)
    elif existing is not eval_group and isinstance(existing, click.Group):  # someone else's eval group
        for name, command in eval_group.commands.items():
            existing.add_command(command, name)
    root.add_command(skills_group)
