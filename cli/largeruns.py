"""Large runs: `rejudge` (grade a run's texts again) and `merge` (join shards or stores).

Exit statuses and the checks before a run starts live in cli/outcome.py.
"""

from __future__ import annotations

import shlex
import sys

import click

from skillweave.cli.common import echo_json, open_store
from skillweave.cli.outcome import preflight, progress_every_option


# ---- rejudge -------------------------------------------------------------------------------------------
@click.command("rejudge")
@click.argument("run_id")
@click.option("--judge", required=True, help="Judge model spec for the new grades (fake, openai:<m>, ...).")
@click.option("--judge-template", default=None, help="Judge template (default: the source run's).")
@click.option("--grading-samples", default=None, type=click.IntRange(min=1),
              help="Judge samples per text (default: the source run's).")
@click.option("--concurrency", default=None, type=click.IntRange(min=1), help="Threads in flight at once.")
@click.option("--reply-cache", type=click.Path(dir_okay=False), default=None,
              help="Reuse judge replies to identical requests from this file (or SKILLWEAVE_REPLY_CACHE).")
@progress_every_option
@click.pass_context
def rejudge(ctx, run_id, judge, judge_template, grading_samples, concurrency, reply_cache):
    """Grade an existing run's outputs again into a new run linked to it; the student is never called.

    Supports Skill-Mix runs made by `skillweave run skillmix`. Each new item points to the item it re-grades
    (`parent_id`), and the new run's config names the source run (`rejudge_of`).

    \b
    Example:
      skillweave rejudge latest --judge openai:gpt-4o --grading-samples 5
      skillweave rejudge skillmix-20261126-101500-ab12cd --judge fake --judge-template skillmix/judge_points
    """
    from skillweave.agents.rejudge import copy_items, rejudge_config
    from skillweave.cli.common import prompts_dir
    from skillweave.cli.run import check_model, execute_and_report
    from skillweave.prompts import load_template

    store = open_store(ctx)
    source = store.get_run(run_id)
    check_model("--judge", judge)
    config = rejudge_config(source, judge=judge, judge_template=judge_template, grading_samples=grading_samples,
                            concurrency=concurrency, reply_cache=reply_cache)
    load_template(config.judge_template, prompts_dir(ctx))
    preflight({"judge": judge})
    from skillweave.providers.reply_cache import cache_path

    config.reply_cache = cache_path(config.reply_cache)
    new_id = store.create_run(source["pipeline"], config.model_dump(), command=shlex.join(["skillweave", *sys.argv[1:]]))
    for role, catalog_id in store.run_catalogs(source["id"]).items():
        store.link_run_catalog(new_id, catalog_id, role)
    try:
        with store.transaction():  # the copied items appear together or not at all
            copied, missing = copy_items(store, source["id"], new_id)
    except BaseException as exc:
        store.set_run_status(new_id, "failed", error=f"copying the source items: {type(exc).__name__}: {exc}")
        raise
    click.echo(f"run {new_id}: re-judging {copied} texts of run {source['id']}"
               + (f" ({missing} items have no text and stay failed)" if missing else ""), err=True)
    execute_and_report(ctx, source["pipeline"], new_id, config.concurrency)


# ---- merge ---------------------------------------------------------------------------------------------
@click.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--into", "target", required=True, type=click.Path(dir_okay=False),
              help="Store to merge into (created when absent; its own records are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print what was merged as JSON.")
def merge(sources, target, as_json):
    """Combine stores (the shards of a run, or any other stores) into one, with their lineage.

    Records with the same id must agree; an item planned but never started in one shard yields to the shard
    that ran it. Any other disagreement stops the merge with an error and leaves the target unchanged.

    \b
    Example:
      skillweave merge shard1.db shard2.db shard3.db --into all.db
      skillweave --db all.db report latest
    """
    from skillweave.store.merge import merge_stores

    result = merge_stores(list(sources), target)
    result["images"] = _merge_images(sources, target)
    if as_json:
        echo_json(result)
        return
    for run in result["runs"]:
        click.echo(f"run {run['id']} ({run['status']}): {run['items']} items"
                   + (f", shards {', '.join(run['shards'])}" if run["shards"] else ""))
    added = ", ".join(f"{n} {t}" for t, n in [*result["added"].items(), ("images", result["images"])] if n)
    click.echo(f"merged {len(sources)} stores into {target}: {added or 'nothing new'}", err=True)


def _merge_images(sources, target) -> int:
    """Copy the images each source keeps beside it (`<db stem>-images/`, ConceptMix) into the target's folder.
    Files are named by their content hash, so a file already there is the same image and is left alone."""
    import shutil

    from skillweave.providers.images import image_folder

    copied, into = 0, image_folder(str(target))
    for source in sources:
        folder = image_folder(str(source))
        if not folder.is_dir() or folder == into:
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.endswith(".tmp") and not (into / path.name).exists():
                into.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, into / f"{path.name}.tmp")
                (into / f"{path.name}.tmp").replace(into / path.name)
                copied += 1
    return copied


def register(root: click.Group) -> None:
    root.add_command(rejudge)
    root.add_command(merge)
