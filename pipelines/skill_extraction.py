"""Skill extraction (question set or domain) and the exemplar-retrieval solver: settings and specs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from skillweave.pipeline import Pipeline, PipelineConfig


class ExtractSkillsConfig(PipelineConfig):
    shard_refused: ClassVar[str] = "its plan is one thread (labelling, clustering and review of the whole set)"

    model: str = Field("local", description="Labelling/clustering model spec.")
    reviewer: str = Field("auto", description="human, llm:<model> or auto.")
    bank_name: str | None = Field(None, description="Name of the bank the run saves.")
    relabel: str = Field("map", description="How questions get their final skill.")
    cluster_batch: int = Field(80, ge=1, description="Skill labels per clustering call.")
    cluster_ratio: float = Field(0.25, gt=0, description="Target clusters per label.")
    show_solution: bool = Field(True, description="Show the solution when labelling a question.")
    cluster_max_tokens: int = Field(2048, ge=1, description="Clustering max new tokens.")
    pregroup: str = Field("alpha", description="How labels are grouped before clustering.")
    propose_max_tokens: int = Field(2048, ge=1, description="Proposal max new tokens (domain mode).")
    parse_retries: int = Field(2, ge=0, description="Extra tries of a reply that does not parse.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature.")
    review_max_tokens: int = Field(256, ge=1, description="LLM reviewer max new tokens.")
    label_template: str = Field("skill_extraction/label", description="Prompt template.")
    cluster_template: str = Field("skill_extraction/cluster", description="Prompt template.")
    relabel_template: str = Field("skill_extraction/relabel", description="Prompt template.")
    dataset: str | None = Field(None, description="Question set: 'bundled' or a JSONL/CSV file (dataset mode).")
    split: str | None = Field(None, description="Split of the question set.")
    limit: int | None = Field(None, ge=1, description="At most this many questions.")
    dataset_catalog: str | None = Field(None, description="Stored question catalog id (filled in by the CLI).")
    domain: str | None = Field(None, description="Domain to propose skills for (domain mode).")
    n_topics: int | None = Field(None, ge=1, description="Topics proposed (domain mode).")
    skills_per_topic: int | None = Field(None, ge=1, description="Skills per topic (domain mode).")
    n_query_types: int | None = Field(None, ge=1, description="Query types proposed (domain mode).")
    proposals: int | None = Field(None, ge=1, description="Proposal calls (domain mode).")
    skills_template: str | None = Field(None, description="Prompt template (domain mode).")
    query_types_template: str | None = Field(None, description="Prompt template (domain mode).")


class SolveConfig(PipelineConfig):
    model: str = Field("local", description="Solver model spec.")
    judge: str | None = Field(None, description="Judge model spec (default: programmatic answer match).")
    methods: list[str] = Field(["skill", "random", "fixed"], description="Exemplar selection methods.")
    k: int = Field(4, ge=0, description="Exemplars per question.")
    seed: int = Field(0, description="Sampling seed.")
    skill_list: str = Field("all", description="Skills offered to the skill picker.")
    max_tokens: int = Field(384, ge=1, description="Max new tokens.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature.")
    parse_retries: int = Field(1, ge=0, description="Extra tries of a reply that does not parse.")
    bank_catalog: str = Field(..., description="Stored skill bank id.")
    dataset: str | None = Field(None, description="Question set.")
    split: str | None = Field(None, description="Split of the question set.")
    dataset_catalog: str | None = Field(None, description="Stored question catalog id.")
    retrieval_file: str | None = Field(None, description="AdaptMI retrieval file the skill method took each "
                                                         "question's skill from (instead of the skill picker).")
    pick_template: str = Field("solve/pick_skill", description="Prompt template.")
    solve_template: str = Field("solve/cot", description="Prompt template.")
    judge_template: str = Field("solve/judge", description="Prompt template.")


PIPELINE = Pipeline(
    name="extract-skills", config=ExtractSkillsConfig, graph="skillweave.graphs.skill_extraction",
    report="skillweave.agents.skill_extraction:run_report",
    description="Skill extraction: label questions, cluster labels into skills, build an exemplar bank.")

SOLVE_PIPELINE = Pipeline(
    name="solve", config=SolveConfig, graph="skillweave.graphs.solve", report="skillweave.agents.solver:run_report",
    description="Exemplar-retrieval solver evaluation (skill-based, random or fixed exemplars).")
