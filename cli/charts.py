"""Chart commands: `run chart-eval` and the `charts` group (synth, questions, report, export)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from skillweave.cli.common import echo_json, echo_table, emit_report, json_option, open_store
from skillweave.errors import UsageError


def _chart_eval_command() -> click.Command:
    """`run chart-eval`: one option per ChartEvalConfig field (built when first asked for)."""
    from skillweave.cli.options import config_options
    from skillweave.pipelines.chart_eval import ChartEvalConfig

    f = config_options(ChartEvalConfig, overrides={
        "data": {"type": click.Path(file_okay=False)},
        "split": {"default": None},  # the release decides: its only split, else val
        "model": {"default": None, "required": True},  # no offline default: `local` cannot see images
    })(click.pass_context(run_chart_eval))
    return click.command("chart-eval")(f)


def run_chart_eval(ctx, **options):
    """CharXiv-style chart evaluation: ask a multimodal model about each chart, grade with a judge.

    Every option is a field of the run's settings (ChartEvalConfig), stored with the run.

    \b
    Example (offline, synthetic charts with exact answers):
      skillweave charts synth --out charts-syn --n 20
      skillweave run chart-eval --data charts-syn --model fake --judge fake
      skillweave run chart-eval --data CharXiv --split val --model openai:gpt-4o --judge openai:gpt-4o-2024-05-13
    """
    from skillweave.charts.charxiv import load_release
    from skillweave.cli.options import config_from_options
    from skillweave.cli.run import check_model, start_run
    from skillweave.pipelines.chart_eval import ChartEvalConfig

    check_model("--model", options["model"])
    check_model("--judge", options["judge"] or options["model"])
    release = load_release(options["data"], options["split"])  # a bad folder fails here, before a run exists
    config = config_from_options(ChartEvalConfig, {
        **options, "data": str(Path(options["data"]).resolve()), "split": release.split,
        "judge": options["judge"] or options["model"]})
    start_run(ctx, "chart-eval", config, {})


@click.group("charts")
def charts_group() -> None:
    """CharXiv-style chart data: synthetic sets with exact answers, question listings, reports."""


@charts_group.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--n", default=20, show_default=True, type=click.IntRange(min=1), help="Number of charts.")
@click.option("--seed", default=0, show_default=True, help="Seed; chart i depends only on (seed, i).")
@click.option("--split", default="val", show_default=True, help="Split name in the file names.")
@click.option("--dpi", default=100, show_default=True, type=click.IntRange(min=30), help="Image resolution.")
@json_option
def synth_command(out, n, seed, split, dpi, as_json):
    """Draw line/bar/scatter charts and write their questions with exact answers (CharXiv layout).

    \b
    Example:
      skillweave charts synth --out charts-syn --n 20 --seed 0
    """
    from skillweave.charts.synthetic import generate_synthetic_set

    summary = generate_synthetic_set(out, n, seed=seed, split=split, dpi=dpi)
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {summary['charts']} charts, {summary['descriptive_questions']} descriptive and "
                   f"{summary['reasoning_questions']} reasoning questions to {out}")


@charts_group.command("questions")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split (default: the only one present, else val).")
@click.option("--summary", is_flag=True, help="Counts per template / answer type instead of the questions.")
@json_option
def questions_command(data_dir, split, summary, as_json):
    """List the questions a folder yields (the exact text the model will see, minus the image).

    \b
    Example:
      skillweave charts questions charts-syn --summary
    """
    from skillweave.charts.charxiv import load_release

    questions = load_release(data_dir, split, require_images=False).questions()
    if summary:
        counts = Counter((q.mode, f"Q{q.qid}" if q.mode == "descriptive" else q.group) for q in questions)
        def order(entry):  # Q2 before Q10
            (mode, kind), _ = entry
            return mode, int(kind[1:]) if kind[1:].isdigit() else 99, kind

        rows = [{"mode": m, "type": t, "count": c} for (m, t), c in sorted(counts.items(), key=order)]
        echo_json(rows) if as_json else echo_table(rows, ["mode", "type", "count"])
        return
    rows = [{"key": q.key, "mode": q.mode, "type": f"Q{q.qid}" if q.mode == "descriptive" else q.group,
             "question": q.question, "answer": q.answer} for q in questions]
    if as_json:
        echo_json([q.to_dict() for q in questions])
    else:
        echo_table(rows, ["key", "mode", "type", "question", "answer"])


@charts_group.command("report")
@click.argument("run_id")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Also draw a PNG.")
@json_option
@click.pass_context
def report_command(ctx, run_id, plot_path, as_json):
    """Accuracy of a chart-eval run overall and by group, answer type, source, subject, year, #subplots.

    \b
    Example:
      skillweave charts report latest --plot charts.png
    """
    from skillweave.pipelines.chart_eval.report import plot_report, run_report

    store = open_store(ctx)
    run = store.get_run(run_id)
    if run["pipeline"] != "chart-eval":
        raise UsageError(f"run '{run['id']}' is a {run['pipeline']} run, not chart-eval")
    report = run_report(store, run)
    agree = ", ".join(f"{m}: {a['agree']}/{a['n']}" for m, a in report["agreement"].items())
    emit_report(report, headline=f"chart-eval run {run['id']} ({run['status']}), model {report['model']}, "
                f"judge {report['judge']}; judge/programmatic agreement {agree}",
                plotter=plot_report, plot_path=plot_path, as_json=as_json, empty="(no graded questions)")


@charts_group.command("export")
@click.argument("run_id")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the result files.")
@click.pass_context
def export_command(ctx, run_id, out):
    """Write CharXiv-named result files: gen-, scores- and stats-{model}-{mode}_{split}.json.

    \b
    Example:
      skillweave charts export latest --out results
    """
    from skillweave.pipelines.chart_eval.report import export_results

    store = open_store(ctx)
    run = store.get_run(run_id)
    for path in export_results(store, run, out):
        click.echo(str(path))


def register(root: click.Group) -> None:
    root.commands["run"].lazy["chart-eval"] = _chart_eval_command  # cli/run.py: built when first asked for
    root.add_command(charts_group)
