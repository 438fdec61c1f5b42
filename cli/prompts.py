"""`skillweave prompts list|show|render|path`: the editable prompt templates."""

from __future__ import annotations

import json
import sys

import click

from skillweave.cli.common import echo_json, echo_table, json_option, prompts_dir
from skillweave.errors import TemplateError, UsageError
from skillweave.prompts import load_template, search_dirs


@click.group("prompts")
def prompts_group() -> None:
    """List, show and render prompt templates (a template's version is its content hash)."""


@prompts_group.command("list")
@json_option
@click.pass_context
def prompts_list(ctx, as_json):
    """Every template with its version and source (package or your --prompts-dir).

    \b
    Example:
      skillweave prompts list
    """
    rows, broken = [], []
    for name in _template_names(prompts_dir(ctx)):
        try:  # one broken file (bad YAML, not UTF-8) is named, the rest still listed
            t = load_template(name, prompts_dir(ctx))
        except TemplateError as exc:
            broken.append(str(exc))
            continue
        rows.append({"name": t.name, "version": t.version, "source": t.source, "variables": ", ".join(t.variables),
                     "description": t.description})
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["name", "version", "source", "variables", "description"])
    for message in broken:
        click.echo(f"Error: {message}", err=True)
    if broken:
        sys.exit(1)


def _template_names(folder: str | None) -> list[str]:
    return sorted({f"{p.parent.name}/{p.stem}" for d in search_dirs(folder) for p in d.glob("*/*.yaml")})


@prompts_group.command("show")
@click.argument("name")
@click.pass_context
def prompts_show(ctx, name):
    """Print a template file as it is on disk.

    \b
    Example:
      skillweave prompts show skillmix/student
    """
    template = load_template(name, prompts_dir(ctx))
    click.echo(f"# {template.name} {template.version} ({template.path})")
    click.echo(template.text.rstrip())


@prompts_group.command("render")
@click.argument("name")
@click.option("--var", "variables", multiple=True, metavar="NAME=JSON",
              help="A variable value, JSON or plain text (repeatable).")
@click.option("--vars-file", type=click.File(), default=None, help="A JSON object of variable values.")
@json_option
@click.pass_context
def prompts_render(ctx, name, variables, vars_file, as_json):
    """Render a template with given variables; missing or unknown variables are an error.

    \b
    Example:
      skillweave prompts render skillmix/judge --var topic=Sewing --var k=1 \\
        --var sentence_limit='"one sentence"' --var text='"A stitch in time."' \\
        --var skills='[{"name":"metaphor","definition":"d","example":"e"}]'
    """
    values = json.load(vars_file) if vars_file else {}
    for pair in variables:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"--var '{pair}' must look like NAME=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    rendered = load_template(name, prompts_dir(ctx)).render_all(values)
    if as_json:
        echo_json(rendered)
        return
    if rendered["system"]:
        click.echo(f"--- system\n{rendered['system']}")
    for i, turn in enumerate(rendered["turns"]):
        click.echo(f"--- turn {i}\n{turn}")


@prompts_group.command("path")
@click.argument("name", required=False)
@click.pass_context
def prompts_path(ctx, name):
    """Where a template lives (or the folders searched, user first). Copy a file to your folder to edit it.

    \b
    Example:
      mkdir -p my-prompts/skillmix && cp "$(skillweave prompts path skillmix/judge)" my-prompts/skillmix/
      skillweave --prompts-dir my-prompts prompts list
    """
    if name:
        click.echo(load_template(name, prompts_dir(ctx)).path)
    else:
        for folder in search_dirs(prompts_dir(ctx)):
            click.echo(folder)


@prompts_group.command("import-skillmix")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--generation", default="default", show_default=True,
              help="Which prompts/generation/<name>.json to convert (the student's two turns).")
@click.option("--grading", default="gpt", show_default=True,
              help="Which prompts/grade/<name>.json to convert (the grader's prompt; its name picks the rubric "
                   "wording as upstream does).")
@click.option("--force", is_flag=True, help="Overwrite OUT/skillmix/student.yaml and judge.yaml if they exist.")
@click.pass_context
def prompts_import_skillmix(ctx, folder, out, generation, grading, force):
    """Convert the official Skill-Mix prompt JSON files of a LeoYu/skill-mix checkout (FOLDER, or its prompts/
    folder) into a prompts folder OUT (skillmix/student.yaml, skillmix/judge.yaml) that renders the same text.

    \b
    Example:
      skillweave prompts import-skillmix skill-mix official-prompts
      skillweave --prompts-dir official-prompts run skillmix --skills skill-mix/skills.csv \\
        --topics skill-mix/topics.txt --k 3 --n 5 --model replay:skill-mix/test --judge replay:skill-mix/test
    """
    from skillweave.prompts.skillmix_import import import_skillmix_prompts

    for path in import_skillmix_prompts(folder, out, generation=generation, grading=grading, force=force):
        click.echo(f"wrote {path}")


def register(root: click.Group) -> None:
    root.add_command(prompts_group)
