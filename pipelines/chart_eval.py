"""CharXiv-style chart evaluation: settings and spec."""

from __future__ import annotations

from pydantic import Field

from skillweave.pipeline import Pipeline, PipelineConfig


class ChartEvalConfig(PipelineConfig):
    data: str = Field(..., description="Chart data folder (CharXiv release layout or `charts synth` output).")
    split: str = Field("val", description="Split of the release.")
    model: str = Field("local", description="Model that answers (multimodal).")
    judge: str | None = Field(None, description="Judge model spec (default: same as --model).")
    mode: str = Field("both", description="Questions asked: descriptive, reasoning or both.")
    limit: int | None = Field(None, ge=1, description="At most this many charts.")
    grading: str = Field("both", description="Programmatic, judge or both.")
    batch_size: int = Field(5, ge=1, description="Descriptive answers graded per judge call.")
    judge_retries: int = Field(10, ge=0, description="Extra judge tries for a reply that does not parse.")
    judge_max_tokens: int = Field(256, ge=1, description="Judge max new tokens (grows with retries).")
    judge_max_tokens_cap: int = Field(1024, ge=1, description="Upper bound of the growing judge budget.")
    max_tokens: int = Field(1024, ge=1, description="Answer max new tokens.")
    blind: bool = Field(False, description="Ask without the image (a text-only baseline).")
    temperature: float = Field(0.0, ge=0, description="Answer sampling temperature.")
    ask_template: str = Field("chart_eval/ask", description="Question prompt template.")
    judge_descriptive_template: str = Field("chart_eval/judge_descriptive", description="Descriptive judge template.")
    judge_reasoning_template: str = Field("chart_eval/judge_reasoning", description="Reasoning judge template.")


PIPELINE = Pipeline(
    name="chart-eval", config=ChartEvalConfig, graph="skillweave.graphs.chart_eval",
    report="skillweave.charts.report:run_report", plot="skillweave.charts.report:plot_report",
    description="CharXiv-style chart evaluation: answer chart questions, grade with a judge.")
