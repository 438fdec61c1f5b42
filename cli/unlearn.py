"""`skillweave topic-model ...`, `skillweave unlearn` and `skillweave export-forget`: lineage-driven unlearning."""

from __future__ import annotations

import click

from skillweave.cli.common import echo_json, echo_table, json_option, open_store
from skillweave.cli.settings_command import SettingsCommand

SETTINGS = "skillweave.trainers.settings:"  # the settings models of `topic-model train|head` and `unlearn`

SELECTOR_HELP = ("Store records to forget: run:<id|latest>, skill:<name>, template:<version or name>, "
                 "item:<id>[,<id>...]. Repeat to take the union; derived items (parent_id) follow their sources.")


@click.group("topic-model")
def topic_model() -> None:
    """Anchor-word topic models trained on store text (the models `skillweave unlearn` edits)."""


@topic_model.command("train", cls=SettingsCommand, settings=SETTINGS + "TopicTrainConfig")
@json_option
@click.pass_context
def train(ctx, as_json, **options) -> None:
    """Train a topic model on the generated text in the store and save it as version 1.

    \b
    Example:
      skillweave topic-model train --topics 5 --vocab 500
    """
    from skillweave.trainers.unlearning.lineage import train_store_model

    config = ctx.command.settings(options)
    summary = train_store_model(open_store(ctx), config.learner(), selectors=config.selectors or None,
                                vocab_size=config.vocab_size, min_df=config.min_df, name=config.name)
    _print_model(summary, as_json)


@topic_model.command("list")
@json_option
@click.pass_context
def list_cmd(ctx, as_json) -> None:
    """List topic model versions (unlearned versions point at their parent and request).

    \b
    Example:
      skillweave topic-model list --json
    """
    from skillweave.trainers.unlearning.lineage import list_models

    rows = list_models(open_store(ctx))
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["id", "kind", "name", "version", "parent_id", "request_id", "n_docs", "anchors"],
                   empty="(no topic models; run `skillweave topic-model train`)")


@topic_model.command("show")
@click.argument("model_id", default="latest")
@json_option
@click.pass_context
def show(ctx, model_id, as_json) -> None:
    """Show a model version: anchors and the top words of each topic (MODEL_ID or 'latest').

    \b
    Example:
      skillweave topic-model show latest
    """
    from skillweave.trainers.unlearning.lineage import model_summary

    _print_model(model_summary(open_store(ctx), model_id), as_json)


@topic_model.command("head", cls=SettingsCommand, settings=SETTINGS + "TopicHeadConfig")
@click.option("--label", "label_selectors", multiple=True, required=True,
              help="Items labelled 1 (same selector syntax as unlearn --forget); the model's other items are 0.")
@click.option("--model", "model_id", default="latest", show_default=True, help="Topic model version to build on.")
@json_option
@click.pass_context
def head(ctx, label_selectors, model_id, as_json, **options) -> None:
    """Train a linear classification head on topic posteriors (released as B = A w); `skillweave unlearn
    --head` later forgets items through it (base statistics downdated privately, head refit), leaving the
    topic model row bit-identical.

    \b
    Example:
      skillweave topic-model head --label skill:metaphor
    """
    from skillweave.trainers.unlearning.lineage import train_store_head

    config = ctx.command.settings(options)
    report = train_store_head(open_store(ctx), list(label_selectors), model_id=model_id, ridge=config.ridge)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"head {report['id']} on model {report['model_id']}: {report['n_docs']} items, "
                   f"{report['positives']} positive, training accuracy {report['train_accuracy']:.3f}")


@topic_model.command("requests")
@json_option
@click.pass_context
def requests(ctx, as_json) -> None:
    """List recorded unlearning requests with their forget-set sizes and noise.

    \b
    Example:
      skillweave topic-model requests --json
    """
    from skillweave.trainers.unlearning.lineage import list_requests

    rows = list_requests(open_store(ctx))
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["id", "mode", "model_id", "new_model_id", "selectors", "n_forget", "n_forget_in_model",
                          "sigma", "created_at"], empty="(no unlearning requests)")


def _print_model(summary: dict, as_json: bool) -> None:
    if as_json:
        echo_json(summary)
        return
    click.echo(f"model {summary['id']}  {summary['name']} v{summary['version']}  docs={summary['n_docs']} "
               f"words={summary['n_words']} topics={summary['n_topics']}")
    if summary.get("parent_id"):
        click.echo(f"unlearned from {summary['parent_id']} by request {summary['request_id']}")
    for k, (anchor, words) in enumerate(zip(summary["anchors"], summary["top_words"], strict=True)):
        click.echo(f"  topic {k}: anchor={anchor}  top: {' '.join(map(str, words))}")


@click.command("unlearn", cls=SettingsCommand, settings=SETTINGS + "UnlearnConfig")
@click.option("--forget", "selectors", multiple=True, required=True, help=SELECTOR_HELP)
@click.option("--model", "model_id", default="latest", show_default=True, help="Topic model version to unlearn from.")
@click.option("--head", "head_id", default=None,
              help="Unlearn through this downstream head ('latest' or an id): the base statistics are downdated "
                   "privately, the head refit and B = A w released; the topic model row is not modified.")
@click.option("--verify", is_flag=True,
              help="Also retrain from scratch on the retained items (base, and head with --head) and report the "
                   "largest absolute difference of the noiseless releases and whether the anchors agree.")
@click.option("--dry-run", is_flag=True, help="Only resolve and print the forget set.")
@json_option
@click.pass_context
def unlearn(ctx, selectors, model_id, head_id, verify, dry_run, as_json, **options) -> None:
    """Forget store records from a topic model: the forget set is built through lineage, the model is
    downdated and its anchors re-searched (cost independent of the retained data), noise calibrated, and the
    request, forget set and new version recorded.

    \b
    Example:
      skillweave topic-model train --topics 5
      skillweave unlearn --forget skill:irony --forget item:3f2a... --verify
    """
    from skillweave.trainers.unlearning.lineage import unlearn_store, unlearn_store_head

    config = ctx.command.settings(options)
    if head_id:
        report = unlearn_store_head(open_store(ctx), list(selectors), head_id=head_id, config=config,
                                    dry_run=dry_run, verify=verify)
    else:
        report = unlearn_store(open_store(ctx), list(selectors), model_id=model_id, config=config, dry_run=dry_run,
                               verify=verify)
    if as_json:
        echo_json(report)
        return
    target = f"head {report['head_id']}" if head_id else f"model {report['model_id']}"
    click.echo(f"forget set: {report['forget_items']} items ({report['forget_items_in_model']} in {target})")
    if dry_run:
        for item_id in report["items"]:
            click.echo(f"  {item_id}")
        return
    s = report["stats"]
    capacity_text = "unbounded" if s["capacity"] is None else str(s["capacity"])
    anchors = f"anchors {s['anchor_search']}{', changed' if s['anchors_changed'] else ', unchanged'}"
    if head_id:
        click.echo(f"new head {report['new_head_id']} (request {report['request_id']}): topic model "
                   f"{report['model_id']} unchanged, base downdated privately ({anchors}), head retained "
                   f"{s['head_retained']}")
    else:
        click.echo(f"new model {report['new_model_id']} (request {report['request_id']}): retained docs "
                   f"{s['retained_docs']}, {anchors}, smallest old-anchor mass left {s['anchor_mass_left']:.2f}, "
                   f"Newton-exact words {s['newton_exact']}, re-solved {s['resolved']}")
    click.echo(f"noise: Delta {report['sensitivity']:.4g} ({s['sensitivity_source']}), sigma {report['sigma']:.4g}; "
               f"deletion capacity {capacity_text} at epsilon={config.epsilon:g}, delta={config.delta:g} "
               f"({s['deleted_since_training']} deleted since training); {s['seconds'] * 1000:.1f} ms")
    if verify:
        v = report["verify"]
        click.echo(f"verify: retrained on {v['retrained_docs']} items in {v['retrain_seconds']:.3f} s; largest "
                   f"|unlearned - retrained| (noiseless release) {v['max_abs_diff']:.3g}; anchors agree "
                   f"{'yes' if v['anchors_agree'] else 'no'}")


@click.command("export-forget")
@click.option("--forget", "selectors", multiple=True, required=True, help=SELECTOR_HELP)
@click.option("--retain", "retain_selectors", multiple=True,
              help="Restrict the retain set to these records (default: every other item with text).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for forget.jsonl and retain.jsonl.")
@json_option
@click.pass_context
def export_forget_cmd(ctx, selectors, retain_selectors, out_dir, as_json) -> None:
    """Write forget/retain question-answer sets (OpenUnlearning's QA shape) for LLM unlearning tools.

    \b
    Example:
      skillweave export-forget --forget skill:metaphor --out forget-metaphor/
    """
    from skillweave.trainers.unlearning.lineage import export_forget

    report = export_forget(open_store(ctx), list(selectors), out_dir, retain_selectors=list(retain_selectors) or None)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"wrote {report['forget']} forget and {report['retain']} retain records to {report['out_dir']} "
                   f"({report['skipped_without_text']} items without text skipped)")


def register(root: click.Group) -> None:
    root.add_command(topic_model)
    root.add_command(unlearn)
    root.add_command(export_forget_cmd)
