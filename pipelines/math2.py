"""MATH² question generation and its evaluation: settings and specs."""

from __future__ import annotations

from typing import ClassVar, Literal

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

    bank: str | None = Field(None, description="Skill bank: 'bundled', an AdaptMI bank JSON file, or a stored bank "
                                                "id/name (the command line's default: bundled).")
    bank_catalog: str = Field(..., description="Stored skill bank id.")
    n: int = Field(5, ge=1, description="Target questions (one thread each).")
    model: str = Field("local", description="Question generator (and default for every role).")
    solver: str | None = Field(None, description="Model for the adversarial attempt and the consistency re-solves "
                                                  "(default: --model).")
    critic: str | None = Field(None, description="Model for the critic/validator (default: --model).")
    reviewer: str = Field("auto", description="human (pause for a person), llm:<model>, or auto.")
    max_rounds: int = Field(3, ge=1, description="Critic rounds per question (a failing question is refined until "
                                                 "this many).")
    max_pairs: int = Field(3, ge=1, description="Pairs a thread may draw: each drop draws a new pair until this many.")
    consistency_samples: int = Field(3, ge=1, description="Independent re-solves; a majority of them must agree with "
                                                          "the attempt's answer.")
    exemplars_per_skill: int = Field(2, ge=0, description="Exemplars shown per skill to the generator.")
    pair_check: Literal["rule", "llm", "off"] = Field(
        "rule", description="Reject near-duplicate (rule) or incompatible (llm) pairs before generating, or off.")
    pair_similarity: float = Field(0.6, ge=0, le=1, description="Rule pair check: a pair whose names are more "
                                                                "similar than this is rejected.")
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), min_length=1,
                                description="Critic criteria; on the command line a file, one criterion per line "
                                            "(default: the 8 criteria of docs/methods.md#math2-pipeline).")
    parse_retries: int = Field(1, ge=0, description="Re-asks when a reply lacks the expected field.")
    seed: int = Field(0, description="Pair sampling seed.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature for generation (and for solving, unless "
                                                      "--solve-temperature).")
    solve_temperature: float | None = Field(None, ge=0, description="Sampling temperature of the attempt and the "
                                                                    "re-solves (default: --temperature).")
    max_tokens: int = Field(512, ge=1, description="Max new tokens per call.")
    review_max_tokens: int = Field(256, ge=1, description="LLM reviewer max new tokens.")
    pair_check_template: str = Field("math2/pair_check", description="Prompt template of the llm pair check.")
    qgen_template: str = Field("math2/qgen", description="Prompt template that writes a question from two skills.")
    attempt_template: str = Field("math2/attempt", description="Prompt template of the solver's attempt.")
    validate_template: str = Field("math2/validate", description="Prompt template of the critic/validator.")
    refine_template: str = Field("math2/refine", description="Prompt template that refines a failing question.")
    solve_template: str = Field("math2/solve", description="Prompt template of the consistency re-solves.")
    review_template: str = Field("math2/review", description="Prompt template of the llm reviewer.")

    @model_validator(mode="after")
    def _roles_default_to_model(self):
        self.solver = self.solver or self.model
        self.critic = self.critic or self.model
        if self.solve_temperature is None:
            self.solve_temperature = self.temperature
        return self


class Math2EvalConfig(PipelineConfig):
    models: list[str] = Field(["local"], min_length=1, description="Model(s) to evaluate; repeat the option for "
                                                                   "several (default: local).")
    judge: str = Field(..., description="Judge model (the command line's default: the first --model).")
    source_runs: list[str] = Field([], description="MATH² run(s) whose accepted questions form the Y set (the "
                                                   "command line's default: the newest math2 run).")
    x_questions: str = Field("bundled", description="Source questions for X: 'bundled' (test split), a JSONL/CSV "
                                                    "question file, or 'none'.")
    x_limit: int | None = Field(None, ge=1, description="At most this many source questions.")
    limit: int | None = Field(None, ge=1, description="At most this many MATH² questions.")
    temperature: float = Field(0.0, ge=0, description="Solver sampling temperature.")
    max_tokens: int = Field(512, ge=1, description="Solver max new tokens.")
    judge_max_tokens: int = Field(384, ge=1, description="Judge max new tokens.")
    solve_template: str = Field("math2/solve", description="Solver prompt template.")
    judge_template: str = Field("math2/judge", description="Judge prompt template (grades steps and answer).")


PIPELINE = Pipeline(
    name="math2", config=Math2Config, graph="skillweave.graphs.math2",
    report="skillweave.metrics.math2:run_report", plot="skillweave.metrics.math2:plot_report",
    export="skillweave.export:_math2_example",
    description="MATH²: two-skill questions through generator, solver, critic and review.")

EVAL_PIPELINE = Pipeline(
    name="math2-eval", config=Math2EvalConfig, runner="skillweave.agents.math2_eval:evaluate",
    report="skillweave.metrics.math2:eval_report", plot="skillweave.metrics.math2:plot_eval_report",
    description="MATH² evaluation: accuracy on source (X) and MATH² (Y) questions, judged by an LLM.")

PIPELINES = (PIPELINE, EVAL_PIPELINE)
