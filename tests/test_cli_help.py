"""Every command has help text and a worked example; `--json` where a command lists records."""

import click
import pytest

from skillweave.cli import cli


def _walk(command, path=()):
    yield path, command
    if isinstance(command, click.Group):  # list/get_command: `run` builds its generated commands on demand
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(_walk(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "skillweave" for p, _ in COMMANDS])
def test_command_has_help_and_example(path, command):
    assert (command.help or "").strip(), f"'skillweave {' '.join(path)}' has no help text"
    if not isinstance(command, click.Group):
        assert "Example" in command.help, f"'skillweave {' '.join(path)}' has no worked example in its help"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name not in ("help", "version"):
            assert (param.help or "").strip(), f"option {param.opts} of 'skillweave {' '.join(path)}' has no help"


def test_listing_commands_take_json():
    for path in (("runs", "list"), ("runs", "show"), ("report",), ("logs",), ("items", "list"), ("prompts", "list")):
        command = cli
        for name in path:
            command = command.commands[name]
        assert any(p.name == "as_json" for p in command.params), path


def test_help_and_version_exit_zero(cli_run):
    code, out, _ = cli_run("--help")
    assert code == 0 and "Example" in out
    code, out, _ = cli_run("--version")
    assert code == 0 and "skillweave" in out


def test_unknown_command_is_a_usage_error(cli_run):
    code, _, err = cli_run("frobnicate")
    assert code == 2 and err.startswith("Error: No such command 'frobnicate'") and err.count("\n") == 1


def test_building_the_cli_imports_neither_torch_nor_langgraph():
    """`skillweave --help` stays quick: heavy libraries load in the commands that use them."""
    import subprocess
    import sys

    code = "import sys, skillweave.cli; print(sorted(m for m in ('torch', 'langgraph', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
