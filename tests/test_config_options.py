"""Every pipeline's command-line options come from its settings model (cli/options.py): one option per field
(or a reasoned exclusion), the field's description as help, the field's default, range and choices; a bad
value is one `Error:` line and exit 2, before anything is stored."""

from __future__ import annotations

import typing

import click
import pytest

from skillweave.cli import cli
from skillweave.cli.options import _bounds
from skillweave.pipeline import PipelineConfig
from skillweave.pipelines import all_pipelines

# the command that starts each pipeline's runs (default: `run <name>`)
COMMAND_PATHS = {"math2-eval": ("eval", "math2"), "solve": ("eval", "solve")}

# settings the run commands offer under other names, added to every `run` command (cli/run.py)
ELSEWHERE = {"retry": ("--timeout", "--max-attempts", "--max-retry-wait"), "max_cost": ("--max-cost",),
             "batch": ("--batch",)}

# settings a command does not offer, and why (besides each model's `cli_exclude`: catalog ids the command fills in)
EXCLUDED = {
    ("eval", "math2"): {
        "shard": "its runner evaluates the whole set in one process: no plan to split",
        "retry": "eval commands take no retry options (they are not `run` commands)",
        "max_cost": "eval commands take no budget", "batch": "eval commands do not use batch APIs"},
    ("eval", "solve"): {
        "bank_catalog": "--bank stores the bank and fills in its id",
        "dataset_catalog": "--dataset stores the questions and fills in their id",
        "shard": "it stores and runs its run itself, in one process",
        "retry": "eval commands take no retry options (they are not `run` commands)",
        "max_cost": "eval commands take no budget", "batch": "eval commands do not use batch APIs"},
}

# settings no command offers
EVERYWHERE_EXCLUDED = {"merged_shards": "written by `skillweave merge` into the merged run"}

# command-line defaults that differ from the model's on purpose (they depend on other options, or the model's
# default serves the Python API and imported runs), each kept from the hand-written commands
CLI_DEFAULTS = {
    ("run", "chart-eval"): {"split": "the release's only split, else val", "model": "required: no offline default"},
    ("run", "conceptmix"): {"k": "1..3 (unset for imported prompts)", "n": "4 (unset for imported prompts)",
                            "model": "local (unset for imported prompts)", "grader": "required: fake answers Yes"},
    ("run", "instruct-skillmix"): {"n": "5, or 100 with --set heldout", "seed": "42, or 4242 with --set heldout",
                                   "max_tokens": "4096 for API models, 256 for local/fake",
                                   "shirker_fraction": "0.2, applied with --shirkers only"},
    ("run", "extract-skills"): {"reviewer": "human on the command line; auto from the Python API"},
    ("run", "math2"): {"bank": "bundled", "criteria": "a file; none: the model's default criteria"},
    ("run", "skillmix"): {"k": "a string (2, 2,3 or 2..4) parsed by its callback"},
    ("eval", "math2"): {"models": "none given: local", "judge": "the first --model"},
    ("eval", "solve"): {"dataset": "bundled", "methods": "a comma-separated string"},
}


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"no command 'skillweave {' '.join(path)}'"
    return command


def _cases():
    for name, spec in sorted(all_pipelines().items()):
        if spec.graph is None and name not in COMMAND_PATHS:
            continue  # no command starts it
        yield name, spec.config_model, COMMAND_PATHS.get(name, ("run", name))


CASES = list(_cases())
IDS = [" ".join(path) for _, _, path in CASES]


def test_every_registered_pipeline_has_a_command():
    assert {name for name, _, _ in CASES} >= {"skillmix", "math2", "math2-eval", "conceptmix", "instruct-skillmix",
                                                 "extract-skills", "solve", "chart-eval"}


@pytest.mark.parametrize("name, model, path", CASES, ids=IDS)
def test_every_setting_is_an_option_with_its_description(name, model, path):
    command = _command(path)
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    flags = {opt for p in options.values() for opt in p.opts}
    excluded = {**dict.fromkeys(model.cli_exclude, "cli_exclude"), **EVERYWHERE_EXCLUDED, **EXCLUDED.get(path, {})}
    for field, info in model.model_fields.items():
        assert (info.description or "").strip(), f"{model.__name__}.{field} has no description"
        if field in excluded:
            assert field not in options or field in ELSEWHERE, f"{field} is excluded but offered by {path}"
            continue
        if field in ELSEWHERE:  # offered under its own option names
            assert set(ELSEWHERE[field]) <= flags, f"'skillweave {' '.join(path)}' lacks {ELSEWHERE[field]}"
            continue
        assert field in options, f"'skillweave {' '.join(path)}' has no option for {model.__name__}.{field}"
        assert options[field].help == info.description, f"{path} --{field}: help is not the field's description"


def _field_default(info):
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.is_required() else info.default


@pytest.mark.parametrize("name, model, path", CASES, ids=IDS)
def test_option_defaults_ranges_and_choices_are_the_fields(name, model, path):
    """No drift: an option's default, range and choices are its field's, except the reasoned CLI_DEFAULTS."""
    command = _command(path)
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    for field, info in model.model_fields.items():
        option = options.get(field)
        if option is None or field in ELSEWHERE:
            continue
        if field not in CLI_DEFAULTS.get(path, {}):
            default, expected = option.default, _field_default(info)
            if option.multiple:
                default, expected = list(default or ()), list(expected or [])
            assert default == expected or (option.is_flag and bool(default) == bool(expected)), \
                f"{path} --{field}: default {default!r}, the field's {expected!r}"
        low, high, low_open, high_open = _bounds(info)
        if isinstance(option.type, click.IntRange | click.FloatRange):
            got_low, got_high = option.type.min, option.type.max
            if isinstance(option.type, click.IntRange):  # an open integer bound is the closed one next to it
                low = None if low is None else low + low_open
                high = None if high is None else high - high_open
            else:
                assert (option.type.min_open, option.type.max_open) == (low_open, high_open), (path, field)
            assert (got_low, got_high) == (low, high), f"{path} --{field}: range {got_low}..{got_high}"
        elif low is not None or high is not None:
            assert field in CLI_DEFAULTS.get(path, {}), f"{path} --{field}: the field's range is not checked"
        choices = [a for a in typing.get_args(info.annotation) if isinstance(a, str)]
        if typing.get_origin(info.annotation) is typing.Literal:
            assert isinstance(option.type, click.Choice) and list(option.type.choices) == choices, (path, field)


def _bad_values():
    """(command path, required arguments, option, a value its field refuses) for every bounded or choice field."""
    required = {("run", "chart-eval"): ["--data", ".", "--model", "fake"], ("run", "conceptmix"): ["--grader", "fake"]}
    for _, model, path in CASES:
        command = _command(path)
        for p in command.params:
            if not isinstance(p, click.Option) or p.name not in model.model_fields or p.multiple:
                continue
            bad = None
            if isinstance(p.type, click.Choice):
                bad = "no-such-choice"
            elif isinstance(p.type, click.IntRange) and p.type.min is not None:
                bad = str(p.type.min - 1)
            elif isinstance(p.type, click.FloatRange) and p.type.min is not None:
                bad = str(p.type.min if p.type.min_open else p.type.min - 0.5)
            elif isinstance(p.type, click.FloatRange) and p.type.max is not None:
                bad = str(p.type.max + 0.5)
            if bad is not None:
                yield path, required.get(path, []), p.opts[0], bad


BAD = list(_bad_values())


@pytest.mark.parametrize("path, required, option, value", BAD, ids=[f"{' '.join(b[0])} {b[2]} {b[3]}" for b in BAD])
def test_out_of_range_or_unknown_value_is_one_error_line(cli_run, db_path, path, required, option, value):
    code, out, err = cli_run(*path, *required, option, value)
    assert code == 2, (code, out, err)
    assert err.startswith("Error: ") and err.count("\n") == 1 and option in err, err
    assert "Traceback" not in err
    import os

    assert not os.path.exists(db_path) or not _runs(db_path), "a run was stored"


def _runs(db_path):
    from skillweave.store import Store

    store = Store(db_path)
    try:
        return store.list_runs(limit=5)
    finally:
        store.close()


@pytest.mark.parametrize("args", [
    ("run", "math2", "--max-round", "5"),  # a typo'd option name
    ("run", "extract-skills", "--reviwer", "auto"),
    ("eval", "solve", "--exemplar", "skill"),
    ("run", "chart-eval", "--data", ".", "--model", "fake", "--grading", "judge-only"),
    ("run", "instruct-skillmix", "--set", "test"),
    ("eval", "math2", "--x-limit", "0"),
])
def test_typo_is_one_error_line_exit_2(cli_run, args):
    code, _, err = cli_run(*args)
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1, err


def test_today_option_names_still_work(cli_run):
    """Names users' scripts use, kept where the generated name would differ."""
    names = {p: {o for param in _command(p).params for o in (*param.opts, *param.secondary_opts)}
             for p in (("run", "math2"), ("run", "extract-skills"), ("eval", "solve"), ("eval", "math2"),
                       ("run", "instruct-skillmix"))}
    assert {"--exemplars", "--criteria", "--pair-check"} <= names[("run", "math2")]
    assert {"--no-solution", "--reviewer", "--cluster-batch"} <= names[("run", "extract-skills")]
    assert {"--exemplars", "--retrieval", "--bank", "--limit"} <= names[("eval", "solve")]
    assert {"--source", "--model", "--resume", "--plot"} <= names[("eval", "math2")]
    assert {"--set", "--shirkers", "--skills-catalog", "--queries-catalog", "--from-run"} <= \
        names[("run", "instruct-skillmix")]


def test_a_plugin_pipeline_gets_its_options_for_free():
    """`run <name>` for a pipeline without a hand-written command: every field an option, help included."""
    from pydantic import Field

    from skillweave.cli.run import generic_run_command
    from skillweave.pipeline import Pipeline

    class ToyConfig(PipelineConfig):
        words: list[str] = Field(["a"], description="One thread per word.")
        rate: float = Field(0.5, gt=0, lt=1, description="A rate strictly between 0 and 1.")
        mode: typing.Literal["x", "y"] = Field("x", description="Which mode.")

    command = generic_run_command(Pipeline(name="toy", config=ToyConfig, graph="toy"))
    options = {p.name: p for p in command.params}
    assert options["words"].multiple and options["words"].help == "One thread per word."
    assert (options["rate"].type.min, options["rate"].type.max) == (0, 1)
    assert options["rate"].type.min_open and options["rate"].type.max_open
    assert list(options["mode"].type.choices) == ["x", "y"]


@pytest.mark.parametrize("path", [("import", "conceptmix"), ("conceptmix", "evaluate")], ids=" ".join)
def test_prompt_set_commands_take_their_settings_from_the_model(cli_run, path):
    """The other commands that start ConceptMix runs (over ready prompts) generate their options too."""
    from skillweave.cli.conceptmix import GRADING_FIELDS
    from skillweave.pipelines.conceptmix import ConceptMixConfig

    options = {p.name: p for p in _command(path).params}
    for field in GRADING_FIELDS:
        assert options[field].help == ConceptMixConfig.model_fields[field].description, field
    code, _, err = cli_run(*path, "x", "--grader", "fake", "--grader-max-tokens", "0")
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1 and "--grader-max-tokens" in err, err


def test_a_run_stores_the_models_defaults_for_options_not_given(cli_run, db_path):
    """End to end: the options not given reach the stored settings as the model's defaults (a file option
    left out, --criteria, keeps the model's default list)."""
    from skillweave.pipelines.math2 import Math2Config
    from skillweave.store import Store

    code, _, err = cli_run("run", "math2", "--model", "fake", "--n", "1", "--temperature", "0.3")
    assert code == 0, err
    store = Store(db_path)
    stored = store.get_run(store.list_runs(limit=1, pipeline="math2")[0]["id"])["config"]
    store.close()
    expected = Math2Config(bank_catalog=stored["bank_catalog"], model="fake", n=1, temperature=0.3, bank="bundled")
    assert stored["solve_temperature"] == 0.3  # follows --temperature, as the hand-written command did
    given = {"bank_catalog", "reply_cache", "shard"}
    assert {k: v for k, v in stored.items() if k not in given} == \
        {k: v for k, v in expected.model_dump().items() if k not in given}


def test_conceptmix_evaluate_regrades_a_generated_run(cli_run, db_path):
    """`conceptmix evaluate` over a run made by `run conceptmix` (its items keep their skills as a column)."""
    from skillweave.store import Store

    assert cli_run("run", "conceptmix", "--k", "1", "--n", "2", "--model", "fake", "--grader", "fake")[0] == 0
    store = Store(db_path)
    source = store.list_runs(limit=1, pipeline="conceptmix")[0]["id"]
    store.close()
    code, _, err = cli_run("conceptmix", "evaluate", source, "--grader", "fake")
    assert code == 0, err
    store = Store(db_path)
    new = store.list_runs(limit=1, pipeline="conceptmix")[0]
    assert new["id"] != source and store.get_run(new["id"])["config"]["source_run"] == source
    assert len(list(store.items(new["id"]))) == 2
    store.close()


@pytest.mark.parametrize("path", [p for _, _, p in CASES if p[0] == "run"], ids=" ".join)
def test_a_bad_shard_stops_while_parsing(cli_run, db_path, path):
    """--shard is checked before a command stores anything (run math2 stored its bank first)."""
    import os

    code, _, err = cli_run(*path, "--shard", "bogus")
    assert code == 2 and err.startswith("Error: --shard 'bogus'") and err.count("\n") == 1, err
    assert not os.path.exists(db_path)
