"""MATH² question generation and its evaluation: settings and specs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from skillweave.pipeline import Pipeline, PipelineConfig

DEFAULT_CRITERIA = [
    "The problem has exactly one final answer.",
    "The answer is exact; no approximation or rounding is needed.",
    "Both skills are genuinely required to solve it.",
    "It is clear and complete: no missing data and no ambiguity.",
    "All information given is relevant.",
    "It is realistic, logically consistent and solvable.",
    "Its syntax and grammar are correct.",
    "It is computationally tractable by hand (no heavy brute force).",
]


class Math2Config(PipelineConfig):
    cli_exclude: ClassVar[frozenset[str]] = frozenset({"bank_catalog"})

    bank: str | None = Field(None, description="Skill bank as given on the command line.")
    bank_catalog: str = Field(..., description="Stored skill bank id.")
    n: int = Field(5, ge=1, description="Questions to produce.")
    model: str = Field("local", description="Generator model spec.")
    solver: str | None = Field(None, description="Solver model spec (default: --model).")
    critic: str | None = Field(None, description="Critic model spec (default: --model).")
    reviewer: str = Field("auto", description="human, llm:<model> or auto.")
    max_rounds: int = Field(3, ge=1, description="Attempt/critic/refine rounds per question, at most.")
    max_pairs: int = Field(3, ge=1, description="Skill pairs tried per question before it fails.")
    consistency_samples: int = Field(3, ge=1, description="Final solutions sampled for the consistency check.")
    exemplars_per_skill: int = Field(2, ge=0, description="Exemplars shown per skill.")
    pair_check: str = Field("rule", description="How a skill pair is checked: rule, llm or none.")
    pair_similarity: float = Field(0.6, ge=0, le=1, description="Rule pair check: names more similar are rejected.")
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), description="Question criteria.")
    parse_retries: int = Field(1, ge=0, description="Extra tries of a reply that does not parse.")
    seed: int = Field(0, description="Sampling seed.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    solve_temperature: float = Field(0.7, ge=0, description="Solver sampling temperature.")
    max_tokens: int = Field(512, ge=1, description="Max new tokens per call.")
    review_max_tokens: int = Field(256, ge=1, description="LLM reviewer max new tokens.")
    pair_check_template: str = Field("math2/pair_check", description="Prompt template.")
    qgen_template: str = Field("math2/qgen", description="Prompt template.")
    attempt_template: str = Field("math2/attempt", description="Prompt template.")
    validate_template: str = Field("math2/validate", description="Prompt template.")
    refine_template: str = Field("math2/refine", description="Prompt template.")
    solve_template: str = Field("math2/solve", description="Prompt template.")
    review_template: str = Field("math2/review", description="Prompt template.")

    @model_validator(mode="after")
    def _roles_default_to_model(self):
        self.solver = self.solver or self.model
        self.critic = self.critic or self.model
        return self


class Math2EvalConfig(PipelineConfig):
    models: list[str] = Field(["local"], min_length=1, description="Models to evaluate.")
    judge: str = Field(..., description="Judge model spec.")
    source_runs: list[str] = Field([], description="MATH² runs whose accepted questions form the Y set.")
    x_questions: str = Field("bundled", description="Source questions for X: 'bundled', a file, or 'none'.")
    x_limit: int | None = Field(None, ge=1, description="At most this many source questions.")
    limit: int | None = Field(None, ge=1, description="At most this many MATH² questions.")
    temperature: float = Field(0.0, ge=0, description="Solver sampling temperature.")
    max_tokens: int = Field(512, ge=1, description="Solver max new tokens.")
    judge_max_tokens: int = Field(384, ge=1, description="Judge max new tokens.")
    solve_template: str = Field("math2/solve", description="Solver prompt template.")
    judge_template: str = Field("math2/judge", description="Judge prompt template.")


PIPELINE = Pipeline(
    name="math2", config=Math2Config, graph="skillweave.graphs.math2",
    report="skillweave.metrics.math2:run_report", plot="skillweave.metrics.math2:plot_report",
    export="skillweave.export:_math2_example",
    description="MATH²: two-skill questions through generator, solver, critic and review.")

EVAL_PIPELINE = Pipeline(
    name="math2-eval", config=Math2EvalConfig, runner="skillweave.agents.math2_eval:evaluate",
    report="skillweave.metrics.math2:eval_report", plot="skillweave.metrics.math2:plot_eval_report",
    description="MATH² evaluation: accuracy on source (X) and MATH² (Y) questions, judged by an LLM.")
