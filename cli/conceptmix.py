"""ConceptMix commands: `run conceptmix`, `import conceptmix`, and the `conceptmix` group (sample, catalog,
evaluate, report, export)."""

from __future__ import annotations

import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import click

from skillweave.agents.conceptmix import KIND
from skillweave.catalog.conceptmix import (
    config_from_concepts,
    describe_concept,
    load_concept_catalog,
    load_sentence_file,
    sample_record,
)
from skillweave.cli.common import echo_json, echo_table, json_option, open_store
from skillweave.cli.run import LazyGroup
from skillweave.errors import UsageError
from skillweave.providers.images import image_backend, image_folder


def _check_specs(model: str | None, image_model: str, grader: str) -> None:
    from skillweave.cli.run import check_model

    if model is not None:
        check_model("--model", model)
    check_model("--grader", grader)
    if grader.partition(":")[0] == "local":
        raise UsageError(f"--grader {grader} reads text only and cannot see images; "
                         "use openai:<vision model>, anthropic:<model> or fake")
    image_backend(image_model)  # unknown spec, missing diffusers or a missing folder fail before any call


def _catalog_option(f):
    return click.option("--concepts", "concepts_dir", type=click.Path(file_okay=False), default=None,
                        help="Folder of category files (e.g. the official config/); default: the bundled catalog.")(f)


def _execute(ctx: click.Context, run_id: str, concurrency: int) -> None:
    from skillweave.cli.run import execute_and_report

    execute_and_report(ctx, "conceptmix", run_id, concurrency)
    click.echo(f"details: skillweave conceptmix report {run_id}", err=True)


GRADING_FIELDS = ["image_model", "grader", "grader_max_tokens", "grader_temperature", "concurrency", "reply_cache"]
GRADER_REQUIRED = {"grader": {"default": None, "required": True}}  # `fake` always answers Yes: never a silent default


def _grading_options(f):
    """The settings of a run that makes and grades images for ready prompts (`import conceptmix`, `conceptmix
    evaluate`), generated from ConceptMixConfig."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.conceptmix import ConceptMixConfig

    return config_options(ConceptMixConfig, only=GRADING_FIELDS, overrides=GRADER_REQUIRED)(f)


def _prompt_run_config(options: dict, **settings):
    """The typed settings of a run over ready prompts (imported or another run's)."""
    from skillweave.cli.options import config_from_options
    from skillweave.pipelines.conceptmix import ConceptMixConfig

    return config_from_options(ConceptMixConfig, {**{f: options[f] for f in GRADING_FIELDS}, **settings})


def _run_conceptmix_command() -> click.Command:
    """`run conceptmix`: one option per ConceptMixConfig field, plus --concepts (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.cli.run import parse_k
    from skillweave.pipelines.conceptmix import ConceptMixConfig

    f = _catalog_option(click.pass_context(run_conceptmix))
    f = config_options(ConceptMixConfig, overrides={
        # the settings leave k, n and model unset for imported prompts; a generating run has these defaults
        "k": {"type": str, "default": "1..3", "multiple": False, "callback": lambda _c, _p, v: parse_k(v)},
        "n": {"default": 4},
        "model": {"default": "local"},
        **GRADER_REQUIRED,
    })(f)
    return click.command("conceptmix")(f)


def run_conceptmix(ctx, concepts_dir, **options):
    """ConceptMix: sample k+1 concepts, write a prompt and questions, make an image, grade it with a VLM.

    Every option but --concepts is a field of the run's settings (ConceptMixConfig), stored with the run.

    \b
    Example (offline):
      skillweave run conceptmix --k 1..3 --n 4 --model local --image-model render --grader fake
      skillweave run conceptmix --k 1..7 --n 300 --model openai:gpt-4o \\
          --image-model openai-images:dall-e-3 --grader openai:gpt-4o
    """
    from skillweave.cli.options import config_from_options
    from skillweave.cli.run import start_run
    from skillweave.pipelines.conceptmix import ConceptMixConfig

    _check_specs(options["model"], options["image_model"], options["grader"])
    catalog = load_concept_catalog(concepts_dir)
    config = config_from_options(ConceptMixConfig, {**options, "source": "generate"})
    source = concepts_dir or "bundled"
    start_run(ctx, "conceptmix", config, {"concepts": (source, "concepts", catalog.to_entries(), source)})


def _create_prompt_run(ctx: click.Context, config, prompts: list[dict]) -> str:
    """A run whose items are ready prompts (imported or copied); the graph enters at the image step."""
    from skillweave.providers.reply_cache import cache_path

    store = open_store(ctx)
    catalog = load_concept_catalog()
    config.concepts_catalog = store.save_catalog("bundled", "concepts", catalog.to_entries(), source="bundled")
    config.reply_cache = cache_path(config.reply_cache)  # --reply-cache, else $SKILLWEAVE_REPLY_CACHE
    run_id = store.create_run("conceptmix", config.model_dump(), command=shlex.join(["skillweave", *sys.argv[1:]]))
    store.link_run_catalog(run_id, config.concepts_catalog, "concepts")
    for index, p in enumerate(prompts):
        store.ensure_item(run_id, KIND, index, 0, k=p["k"], skills=p["skills"], status="prompted",
                          payload={key: v for key, v in p.items() if key not in ("k",)})
    click.echo(f"run {run_id}: {len(prompts)} prompts", err=True)
    return run_id


def _import_conceptmix_command() -> click.Command:
    """`import conceptmix` (built when first asked for: its options come from ConceptMixConfig)."""
    f = click.pass_context(import_conceptmix)
    f = click.option("--no-run", is_flag=True, help="Only import; run later with `skillweave resume RUN_ID`.")(f)
    f = click.option("--limit", default=None, type=click.IntRange(min=1),
                     help="Only the first N prompts of each file.")(f)
    f = _grading_options(f)
    f = click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))(f)
    return click.command("conceptmix")(f)


def import_conceptmix(ctx, files, limit, no_run, **options):
    """Import official prompt sets (`{N}_sentences_k={k}.json`), then make and grade an image per prompt.

    A sibling `{N}_refined_config_k={k}.json` is read when present (the render backend draws it); empty
    questions in the file are kept in place and skipped when grading.

    \b
    Example:
      skillweave import conceptmix sentence_collection/300_sentences_k=1.json --limit 20 \\
          --image-model render --grader fake
    """
    _check_specs(None, options["image_model"], options["grader"])
    prompts = []
    for file in files:
        k, records = load_sentence_file(file)
        for r in records[:limit]:
            concepts, fallback_config = config_from_concepts(r["categories"], r["skills"])
            prompts.append({"k": k, "index": r["index"], "file": Path(file).name, "sentence": r["sentence"],
                            "categories": r["categories"], "skills": r["skills"], "questions": r["question"],
                            "concepts": concepts, "refined_config": r.get("config") or fallback_config,
                            "config_source": "file" if r.get("config") else "rebuilt", "questions_source": "file"})
    config = _prompt_run_config(options, source="import", files=[str(f) for f in files])
    run_id = _create_prompt_run(ctx, config, prompts)
    if not no_run:
        _execute(ctx, run_id, config.concurrency)


@click.group("conceptmix", cls=LazyGroup)
def conceptmix_group() -> None:
    """ConceptMix helpers: inspect the catalog and sampler, re-grade prompt sets, reports, export."""


@conceptmix_group.command("sample")
@click.option("--k", "k_value", default="1..3", show_default=True, help="Difficulty: 1, 1,3 or 1..7.")
@click.option("--n", default=3, show_default=True, type=click.IntRange(min=1), help="Samples per k.")
@click.option("--seed", default=0, show_default=True, help="Sampling seed (same as `run conceptmix --seed`).")
@click.option("--p-extra-object", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that each of the k slots is another object.")
@_catalog_option
@json_option
def sample_command(k_value, n, seed, p_extra_object, concepts_dir, as_json):
    """Show the concept sets the sampler draws (no model involved); identical to a run's attempt 0.

    \b
    Example:
      skillweave conceptmix sample --k 1..3 --n 2 --seed 0
    """
    from skillweave.cli.run import parse_k

    catalog = load_concept_catalog(concepts_dir)
    rows, index = [], 0
    for k in parse_k(k_value):
        for _ in range(n):
            s = sample_record(catalog, k, seed, index, 0, p_extra_object=p_extra_object)
            rows.append({"index": index, "k": k, "categories": s.categories, "skills": s.skills, "config": s.config,
                         "properties": [describe_concept(catalog, c, s.config) for c in s.concepts]})
            index += 1
    if as_json:
        echo_json(rows)
    else:
        echo_table([{**r, "concepts": "; ".join(f"{c}={v}" for c, v in zip(r["categories"], r["skills"],
                                                                           strict=True))} for r in rows],
                   ["index", "k", "concepts"])


@conceptmix_group.command("catalog")
@_catalog_option
@json_option
def catalog_command(concepts_dir, as_json):
    """List the concept categories, their templates and values (bundled, or an official config/ folder).

    \b
    Example:
      skillweave conceptmix catalog
      skillweave conceptmix catalog --concepts conceptmix/config --json
    """
    catalog = load_concept_catalog(concepts_dir)
    rows = [{"category": c.name, "values": len(c.values), "description": c.description,
             "question": c.question_template(), "examples": ", ".join(list(c.values)[:6])}
            for c in catalog.categories.values()]
    if as_json:
        echo_json([{**r, "values": dict(catalog.categories[r["category"]].values)} for r in rows])
    else:
        echo_table(rows, ["category", "values", "description", "examples"])


def _evaluate_command() -> click.Command:
    """`conceptmix evaluate` (built when first asked for: its options come from ConceptMixConfig)."""
    f = _grading_options(click.pass_context(evaluate_command))
    return click.command("evaluate")(click.argument("source_run")(f))


def evaluate_command(ctx, source_run, **options):
    """Make and grade new images for the prompts of an earlier run (compare image models on one prompt set).

    \b
    Example:
      skillweave conceptmix evaluate latest --image-model openai-images:gpt-image-1 --grader openai:gpt-4o
    """
    _check_specs(None, options["image_model"], options["grader"])
    store = open_store(ctx)
    source = store.get_run(source_run)
    keep = ("index", "file", "sentence", "categories", "skills", "questions", "concepts", "refined_config",
            "config", "config_source", "questions_source")
    prompts = [{"k": it["k"], "skills": it["skills"], **{key: it["payload"][key] for key in keep if key in it["payload"]}}
               for it in store.items(source["id"], kind=KIND) if it["payload"].get("questions")]
    if not prompts:
        raise UsageError(f"run '{source['id']}' has no finished prompts to evaluate")
    config = _prompt_run_config(options, source="run", source_run=source["id"])
    run_id = _create_prompt_run(ctx, config, prompts)
    _execute(ctx, run_id, config.concurrency)


@conceptmix_group.command("report")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--breakdown-k", default=1, show_default=True, type=click.IntRange(min=0),
              help="k of the per-category breakdown (0: all k pooled).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the score against k (one line per run) to this PNG.")
@json_option
@click.pass_context
def report_command(ctx, run_ids, breakdown_k, plot_path, as_json):
    """ConceptMix score (all questions yes) per k with 95% CI, concept accuracy, and the category breakdown.

    \b
    Example:
      skillweave conceptmix report latest --plot conceptmix.png
    """
    from skillweave.metrics.conceptmix import plot_scores, run_report

    store = open_store(ctx)
    reports = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        if run["pipeline"] != "conceptmix":
            raise UsageError(f"run '{run['id']}' is a {run['pipeline']} run, not conceptmix")
        reports.append((run, run_report(store, run, breakdown_k=breakdown_k or None)))
    if plot_path:
        plot_scores({f"{r['id']} ({rep['label']})": rep["scores"] for r, rep in reports}, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
    if as_json:
        echo_json([{"run": r["id"], **{k: v for k, v in rep.items() if "columns" not in k}} for r, rep in reports])
        return
    for run, rep in reports:
        click.echo(f"conceptmix run {run['id']} ({run['status']}): {rep['label']}")
        echo_table(rep["table"], rep["columns"], empty="(no graded prompts)")
        click.echo(f"\nby category (k={breakdown_k or 'all'}):")
        echo_table(rep["category_table"], rep["category_columns"], empty="(none)")
        if rep["fallbacks_and_resamples"]:
            click.echo("\nfallbacks/resamples: " + ", ".join(f"{k} {v}" for k, v in
                                                              rep["fallbacks_and_resamples"].items()))
        click.echo(f"images: {image_folder(store.path)}")


@conceptmix_group.command("export")
@click.argument("run_id")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.pass_context
def export_command(ctx, run_id, out_dir):
    """Write a run's prompts in the official layout: `{N}_sentences_k={k}.json` and `{N}_refined_config_k={k}.json`.

    \b
    Example:
      skillweave conceptmix export latest prompts/
    """
    store = open_store(ctx)
    run = store.get_run(run_id)
    by_k: dict[int, list[dict]] = defaultdict(list)
    for it in store.items(run["id"], kind=KIND):
        if it["payload"].get("questions"):
            by_k[it["k"]].append(it)
    if not by_k:
        raise UsageError(f"run '{run['id']}' has no finished prompts to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, items in sorted(by_k.items()):
        sentences, configs = [], []
        for i, it in enumerate(items, start=1):
            p = it["payload"]
            sentences.append({"index": i, "sentence": p["sentence"], "categories": p["categories"],
                              "skills": it["skills"], "question": p["questions"]})
            configs.append({**(p.get("refined_config") or p.get("config") or {}), "index": i})
        n = len(items)
        (out / f"{n}_sentences_k={k}.json").write_text(json.dumps(sentences, indent=2, ensure_ascii=False))
        (out / f"{n}_refined_config_k={k}.json").write_text(json.dumps(configs, indent=2, ensure_ascii=False))
        click.echo(f"wrote {out / f'{n}_sentences_k={k}.json'}", err=True)


conceptmix_group.lazy["evaluate"] = _evaluate_command


def register(root: click.Group) -> None:
    root.commands["run"].lazy["conceptmix"] = _run_conceptmix_command  # cli/run.py: built when first asked for
    import_group = root.commands.get("import")
    if import_group is None:
        import_group = LazyGroup("import", help="Import official data files into the store.")
        root.add_command(import_group)
    if hasattr(import_group, "lazy"):
        import_group.lazy["conceptmix"] = _import_conceptmix_command
    else:  # an `import` group of another kind: built now
        import_group.add_command(_import_conceptmix_command())
    root.add_command(conceptmix_group)
