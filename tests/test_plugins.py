"""Third-party pipelines and providers through entry points: the worked example of docs/extending.md
(tests/fixtures/plugin_example) installed into a temporary site folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import skillweave
from skillweave.errors import ConfigError
from skillweave.pipelines import get_pipeline, refresh
from skillweave.providers import plugins as provider_plugins
from skillweave.providers.core import parse_spec

EXAMPLE = Path(__file__).parent / "fixtures" / "plugin_example"


def install(site: Path) -> Path:
    """What `pip install tests/fixtures/plugin_example --target site` leaves: the package and its dist-info
    with the entry points of its pyproject.toml."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "skillweave_echo", site / "skillweave_echo")
    info = site / "skillweave_echo-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: skillweave-echo\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[skillweave.pipelines]\necho = skillweave_echo:PIPELINE\n\n"
        "[skillweave.providers]\necho = skillweave_echo:EchoProvider\n")
    return site


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    refresh()
    provider_plugins.refresh()
    yield site
    sys.modules.pop("skillweave_echo", None)
    refresh()
    provider_plugins.refresh()


def test_without_the_package_echo_is_unknown():
    refresh()
    provider_plugins.refresh()
    with pytest.raises(ConfigError, match="unknown pipeline 'echo'"):
        get_pipeline("echo")
    with pytest.raises(ConfigError, match="unknown model spec 'echo:x'"):
        parse_spec("echo:x")


def test_an_installed_package_adds_a_pipeline_and_a_provider(installed, tmp_path):
    spec = get_pipeline("echo")
    assert spec.source == "skillweave-echo"
    assert parse_spec("echo:x") == ("echo", "x")
    handle = skillweave.run("echo", words=["abc", "de"], db=str(tmp_path / "p.db"))
    assert handle.status == "done"
    assert [(r["word"], r["reply"]) for r in handle.metrics["table"]] == [("abc", "ABC"), ("de", "DE")]


def test_the_command_line_offers_run_echo_from_the_settings_model(installed, cli_run):
    from skillweave.cli.run import run_group

    try:  # `run` finds registered pipelines when asked for one, so installing the package is enough
        code, out, _err = cli_run("run", "--help")
        assert code == 0 and "echo" in out
        code, out, _err = cli_run("run", "echo", "--help")
        assert code == 0 and "--words" in out and "One thread per word." in out
        code, _out, err = cli_run("run", "echo", "--words", "xy", "--words", "z")
        assert code == 0, err
        code, out, err = cli_run("report", "latest")
        assert code == 0 and "XY" in out and "Z" in out, err
        code, _out, err = cli_run("run", "echo", "--wrods", "q")
        assert code == 2 and err.startswith("Error: No such option '--wrods'")
    finally:
        run_group.commands.pop("echo", None)


@pytest.mark.slow
def test_the_command_line_runs_resumes_and_reports_a_plugin_pipeline(installed, tmp_path):
    """A fresh interpreter: discovery through entry points alone."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), str(Path(skillweave.__file__).parents[1])])}
    db = str(tmp_path / "cli.db")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "skillweave", "--db", db, *args], env=env, capture_output=True,
                              text=True, timeout=120)

    help_text = cli("run", "echo", "--help")
    assert help_text.returncode == 0 and "--words" in help_text.stdout and "One thread per word." in help_text.stdout
    ran = cli("run", "echo", "--words", "xy", "--words", "z")
    assert ran.returncode == 0, ran.stderr
    assert cli("resume", "latest").returncode == 0
    report = cli("report", "latest", "--json")
    assert report.returncode == 0, report.stderr
    extra = json.loads(report.stdout)  # every field of the echo report is its table; report adds the run's
    assert extra["parse_failures"] == [] and extra["spend"]["calls"] == 0  # parse failures and spend
    table = cli("report", "latest")
    assert "XY" in table.stdout and "Z" in table.stdout
