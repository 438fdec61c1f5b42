"""CharXiv-style chart evaluation, a pipeline in one folder: this module holds the settings and the spec (core
layer: it imports nothing above `skillweave.pipeline`); `nodes.py` the node functions (roles layer), `graph.py`
the wiring and plan (graphs layer), `report.py` the report, plot and official-format export; the prompt templates
are in `prompts/chart_eval/`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skillweave.pipeline import Pipeline, PipelineConfig


class ChartEvalConfig(PipelineConfig):
    data: str = Field(..., description="A CharXiv-format folder: the official release layout or one written by "
                                       "`charts synth`.")
    split: str = Field("val", description="Split to evaluate (the command line's default: the only split present, "
                                          "else val).")
    model: str = Field("local", description="Model that answers: openai:<vision model>, anthropic:<model>, fake, "
                                            "or local with --blind (required on the command line).")
    judge: str | None = Field(None, description="Judge model spec (default: same as --model).")
    mode: Literal["both", "descriptive", "reasoning"] = Field("both", description="Which question sets to ask.")
    limit: int | None = Field(None, ge=1, description="Only the first N charts (by figure id).")
    grading: Literal["both", "judge", "programmatic"] = Field(
        "both", description="both: judge every question and also check exact answers programmatically; "
                            "programmatic: skip the judge where the answer is exact; judge: the judge only.")
    batch_size: int = Field(5, ge=1, description="Descriptive answers per judge call (same template).")
    judge_retries: int = Field(10, ge=1, description="Judge calls per batch before its questions score -1 (invalid).")
    judge_max_tokens: int = Field(256, ge=16, description="Judge budget; doubled on a truncated JSON reply, up to "
                                                          "--judge-max-tokens-cap.")
    judge_max_tokens_cap: int = Field(1024, ge=16, description="Largest judge budget the doubling reaches.")
    max_tokens: int = Field(1024, ge=1, description="Answer budget of the model.")
    blind: bool = Field(False, description="Send questions without the image: a text-only baseline (works with "
                                           "--model local).")
    temperature: float = Field(0.0, ge=0, description="Answer sampling temperature.")
    ask_template: str = Field("chart_eval/ask", description="Prompt template that asks a chart question.")
    judge_descriptive_template: str = Field("chart_eval/judge_descriptive",
                                            description="Judge template for descriptive questions.")
    judge_reasoning_template: str = Field("chart_eval/judge_reasoning",
                                          description="Judge template for reasoning questions.")


PIPELINE = Pipeline(
    name="chart-eval", config=ChartEvalConfig, graph="skillweave.pipelines.chart_eval.graph",
    report="skillweave.pipelines.chart_eval.report:run_report",
    plot="skillweave.pipelines.chart_eval.report:plot_report",
    description="CharXiv-style chart evaluation: answer chart questions, grade with a judge.")
