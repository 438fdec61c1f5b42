"""Built-in pipelines are discovered, and one folder under `pipelines/` plus its prompts is a whole pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skillweave.errors import ConfigError
from skillweave.pipelines import BUILTIN, all_pipelines, discover, find_pipeline

PACKAGE = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


SPEC = """
from skillweave.pipeline import Pipeline, PipelineConfig

class C(PipelineConfig):
    pass

{assign}
"""


def test_builtins_are_every_pipeline_module_in_module_name_order():
    assert list(BUILTIN) == ["chart-eval", "conceptmix", "instruct-skillmix", "math2", "math2-eval",
                             "extract-skills", "solve", "skillmix"]
    assert BUILTIN["chart-eval"].graph == "skillweave.pipelines.chart_eval.graph"  # the folder-layout example
    assert all(all_pipelines()[name] is spec for name, spec in BUILTIN.items())


def test_discover_reads_pipeline_and_pipelines_and_skips_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "found_pkg"
    _write(root / "__init__.py", "")
    _write(root / "zeta.py", SPEC.format(assign="PIPELINE = Pipeline(name='z', config=C)"))
    _write(root / "alpha" / "__init__.py", SPEC.format(
        assign="PIPELINES = (Pipeline(name='a2', config=C), Pipeline(name='a1', config=C))"))
    _write(root / "alpha" / "nodes.py", "raise RuntimeError('a folder\\'s other files are not imported')\n")
    _write(root / "helpers.py", "X = 1\n")                        # no PIPELINE: not a pipeline
    _write(root / "_private.py", "raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("found_pkg", [str(root)])
    assert list(found) == ["a2", "a1", "z"]                        # module names sorted; a tuple keeps its order
    assert "found_pkg.alpha.nodes" not in sys.modules

    _write(root / "beta.py", SPEC.format(assign="PIPELINE = Pipeline(name='z', config=C)"))
    with pytest.raises(ConfigError, match="'z' is defined twice"):
        discover("found_pkg", [str(root)])
    (root / "beta.py").unlink()
    _write(root / "gamma.py", "PIPELINE = 'not a spec'\n")
    with pytest.raises(ConfigError, match="found_pkg.gamma defines a pipeline that is not"):
        discover("found_pkg", [str(root)])


def test_listing_pipelines_imports_no_langgraph_torch_nodes_or_graphs():
    code = ("import sys, skillweave.pipelines as p; p.all_pipelines(); "
            "print(sorted(m for m in sys.modules if m in ('torch', 'langgraph', 'transformers') "
            "or m.startswith(('skillweave.agents', 'skillweave.graphs', 'skillweave.providers')) "
            "or m.endswith(('.nodes', '.graph', '.report'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# A whole pipeline, as docs/extending.md lays it out: pipelines/shout/ and prompts/shout/.
SHOUT = {
    "pipelines/shout/__init__.py": '''
        """Shout: each word said loudly by the model (settings + spec: core layer)."""
        from pydantic import Field

        from skillweave.pipeline import Pipeline, PipelineConfig


        class ShoutConfig(PipelineConfig):
            words: list[str] = Field(["hello", "world"], description="One thread per word.")
            model: str = Field("fake", description="Model spec that answers.")
            answer_template: str = Field("shout/answer", description="Prompt template that asks for the word.")


        PIPELINE = Pipeline(name="shout", config=ShoutConfig, graph="skillweave.pipelines.shout.graph",
                            report="skillweave.pipelines.shout.report:run_report",
                            description="Shout: each word said loudly by the model.")
        ''',
    "pipelines/shout/nodes.py": '''
        """Node functions (roles layer)."""
        from typing import TypedDict

        from skillweave.agents.llm import RunContext, ThreadSpec, call_template
        from skillweave.errors import ModelCallError


        class ShoutState(TypedDict, total=False):
            item_id: str
            status: str


        def plan_threads(ctx: RunContext) -> list[ThreadSpec]:
            threads = []
            for index, word in enumerate(ctx.config.words):
                item_id = ctx.store.ensure_item(ctx.run_id, "shout.word", index, 0, payload={"word": word})
                threads.append(ThreadSpec(f"{ctx.run_id}:{index}", {"item_id": item_id}))
            return threads


        async def answer(state: ShoutState, runtime) -> dict:
            ctx: RunContext = runtime.context
            item = ctx.store.get_item(state["item_id"])
            try:
                reply = await call_template(ctx, item_id=item["id"], role="model", template=ctx.config.answer_template,
                                            values={"word": item["payload"]["word"]}, model=ctx.config.model)
            except ModelCallError as exc:
                return ctx.fail(item["id"], "answer", exc)
            ctx.store.update_item(item["id"], status="done", payload_update={"reply": reply.text})
            return {"status": "done"}
        ''',
    "pipelines/shout/graph.py": '''
        """Wiring and plan (graphs layer)."""
        from langgraph.graph import END, START, StateGraph

        from skillweave.agents.llm import RunContext
        from skillweave.pipelines.shout.nodes import ShoutState, answer, plan_threads

        plan = plan_threads


        def build_graph(checkpointer=None):
            graph = StateGraph(ShoutState, context_schema=RunContext)
            graph.add_node("answer", answer)
            graph.add_edge(START, "answer")
            graph.add_edge("answer", END)
            return graph.compile(checkpointer=checkpointer)
        ''',
    "pipelines/shout/report.py": '''
        """The report (graphs layer)."""


        def run_report(store, run: dict, **_options) -> dict:
            rows = [{"word": i["payload"]["word"], "reply": i["payload"].get("reply"), "status": i["status"]}
                    for i in store.items(run["id"])]
            return {"columns": ["word", "reply", "status"], "table": sorted(rows, key=lambda r: r["word"])}
        ''',
    "prompts/shout/answer.yaml": '''
        description: Ask the model to say one word loudly.
        variables: [word]
        prompt: |
          Say the word "{{ word }}" loudly.
        fake_replies:
          - "{{ word | upper }}!"
        ''',
}

DRIVER = '''
import contextlib, io, json, sys
import skillweave
import skillweave.pipelines
from skillweave.cli import main

db = sys.argv[1]

def cli(*args):
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            main(["--db", db, *args])
        except SystemExit as exc:
            code = exc.code or 0
    return [code, out.getvalue()]

from skillweave.providers.core import FakeProvider, register_provider

down = {"on": True}

def outage(request):
    if down["on"]:
        raise RuntimeError("provider down")
    return request.meta["fake_reply"]

handle = skillweave.run("shout", words=["abc", "de"], db=db)
register_provider("fake:outage", FakeProvider("outage", script=outage), max_concurrency=4)
result = {"package": skillweave.__file__, "api": [handle.status, handle.metrics["table"]],
          "help": cli("run", "shout", "--help"),
          "run": cli("run", "shout", "--words", "xyz", "--model", "fake:outage", "--max-attempts", "1",
                 "--concurrency", "4")}
down["on"] = False
result["resume"] = cli("resume", "latest", "--retry-failed")
result["report"] = cli("report", "latest")
print(json.dumps(result))
'''


def test_one_folder_plus_prompts_is_a_whole_pipeline(tmp_path):
    """A copy of the package gains `pipelines/shout/` and `prompts/shout/` and nothing else: `run shout` (Python
    API and CLI, options from its settings), `resume` and `report` work, and the folder obeys the layers."""
    assert find_pipeline("shout") is None
    copy = tmp_path / "site" / "skillweave"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns(
        ".git", "tests", "docs", "benchmarks", "__pycache__", "*.egg-info", "build", "dist", ".venv"))
    for rel, text in SHOUT.items():
        _write(copy / rel, text)

    from test_layers import cycles, import_graph, inversions
    graph = import_graph(copy)
    assert {"skillweave.pipelines.shout.nodes", "skillweave.pipelines.shout.graph"} <= set(graph)
    assert inversions(graph) == [] and cycles(graph) == []

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    out = subprocess.run([sys.executable, str(driver), str(tmp_path / "x.db")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(copy.parent), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(copy))
    assert got["api"] == ["done", [{"word": "abc", "reply": "ABC!", "status": "done"},
                                        {"word": "de", "reply": "DE!", "status": "done"}]]
    code, text = got["help"]
    assert code == 0 and "--words" in text and "One thread per word." in text and "--answer-template" in text
    assert got["run"][0] == 3                      # the provider was down: the item failed, the run exits 3
    assert got["resume"][0] == 0                     # resume --retry-failed asks again
    code, text = got["report"]
    assert code == 0 and "shout run shout-" in text and "(done)" in text
    assert [line.split() for line in text.splitlines() if "xyz" in line] == [["xyz", "XYZ!", "done"]]
