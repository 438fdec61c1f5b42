"""Skill extraction (question set or domain) and the exemplar-retrieval solver: settings and specs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from skillweave.pipeline import Pipeline, PipelineConfig

# domain mode (no dataset): what a run proposes unless told otherwise
DOMAIN_DEFAULTS = {"domain": "helpful instruction following", "n_topics": 8, "skills_per_topic": 6,
                   "n_query_types": 12, "proposals": 1, "skills_template": "skill_extraction/propose_skills",
                   "query_types_template": "skill_extraction/propose_query_types"}


class ExtractSkillsConfig(PipelineConfig):
    cli_exclude: ClassVar[frozenset[str]] = frozenset({"dataset_catalog"})
    shard_refused: ClassVar[str] = "its plan is one thread (labelling, clustering and review of the whole set)"

    model: str = Field("local", description="Model spec: local, fake, openai:<m>, anthropic:<m>.")
    reviewer: Literal["human", "auto"] = Field(
        "auto", description="human: pause after clustering for `skillweave review skills`; auto: no pause (the "
                            "command line's default: human).")
    bank_name: str | None = Field(None, description="Name of the stored bank / catalogs (default: the run id).")
    relabel: Literal["map", "llm"] = Field(
        "map", description="map: each question takes its fine label's coarse skill; llm: the model picks for every "
                           "question.")
    cluster_batch: int = Field(80, ge=2, description="Fine labels per clustering call (per subject).")
    cluster_ratio: float = Field(0.25, ge=0.01, le=1, description="Target coarse/fine ratio suggested to the "
                                                                  "clustering model (MATH: ~117/5000; unverified).")
    show_solution: bool = Field(True, description="Show each question's solution to the labeller (--no-solution: "
                                                  "do not).")
    cluster_max_tokens: int = Field(2048, ge=16, description="Max new tokens of a clustering reply (and of a "
                                                             "skill-list / query-type reply, unless "
                                                             "--propose-max-tokens).")
    pregroup: Literal["alpha", "embed"] = Field(
        "alpha", description="How labels beyond --cluster-batch are split into clustering calls: sorted names, or "
                             "MiniLM similarity.")
    propose_max_tokens: int | None = Field(None, ge=16, description="Without a dataset: max new tokens of a "
                                                                    "skill-list / query-type reply (default: "
                                                                    "--cluster-max-tokens).")
    parse_retries: int = Field(2, ge=0, description="Fresh calls after a reply that does not parse.")
    temperature: float = Field(0.0, ge=0, description="First-try temperature (retries use 0.7).")
    review_max_tokens: int = Field(256, ge=1, description="LLM reviewer max new tokens.")
    label_template: str = Field("skill_extraction/label", description="Prompt template that labels a question "
                                                                      "with a fine skill.")
    cluster_template: str = Field("skill_extraction/cluster", description="Prompt template that clusters fine "
                                                                          "labels into coarse skills.")
    relabel_template: str = Field("skill_extraction/relabel", description="Prompt template that picks a "
                                                                          "question's coarse skill.")
    dataset: str | None = Field(None, description="Questions (JSONL or CSV with question, answer, optional subject "
                                                  "and solution) or 'bundled'. Without it: direct prompting for "
                                                  "skills and query types.")
    split: str | None = Field("all", description="Use only rows with this `split` value (all = every row).")
    limit: int | None = Field(None, ge=1, description="Use only the first N questions.")
    dataset_catalog: str | None = Field(None, description="Stored question catalog id (filled in by the CLI).")
    domain: str | None = Field(None, description="Without a dataset: the domain to enumerate skills for (default: "
                                                 f"{DOMAIN_DEFAULTS['domain']}).")
    n_topics: int | None = Field(None, ge=1, description="Without a dataset: topics to ask for (default: "
                                                         f"{DOMAIN_DEFAULTS['n_topics']}).")
    skills_per_topic: int | None = Field(None, ge=1, description="Without a dataset: skills per topic (default: "
                                                                 f"{DOMAIN_DEFAULTS['skills_per_topic']}).")
    n_query_types: int | None = Field(None, ge=1, description="Without a dataset: query types to ask for (default: "
                                                              f"{DOMAIN_DEFAULTS['n_query_types']}).")
    proposals: int | None = Field(None, ge=1, description="Without a dataset: skill-list calls whose union is "
                                                          f"deduplicated (default: {DOMAIN_DEFAULTS['proposals']}).")
    skills_template: str | None = Field(None, description="Without a dataset: the skill-list prompt template "
                                                          f"(default: {DOMAIN_DEFAULTS['skills_template']}).")
    query_types_template: str | None = Field(None, description="Without a dataset: the query-type prompt template "
                                                               "(default: "
                                                               f"{DOMAIN_DEFAULTS['query_types_template']}).")

    @model_validator(mode="after")
    def _mode_defaults(self):
        """Without a dataset (domain mode) the proposal settings take their defaults; with one they stay unset."""
        if self.dataset is None and self.dataset_catalog is None:
            for name, value in DOMAIN_DEFAULTS.items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
        if self.propose_max_tokens is None:
            self.propose_max_tokens = self.cluster_max_tokens
        return self


class SolveConfig(PipelineConfig):
    model: str = Field("local", description="Solver model spec.")
    judge: str | None = Field(None, description="Also grade with an LLM judge (model spec); the report then uses it "
                                                "(default: programmatic answer match only).")
    methods: list[str] = Field(["skill", "random", "fixed"], min_length=1,
                               description="Exemplar methods to compare, comma-separated: skill, random, fixed, "
                                           "subject (same-subject baseline).")
    k: int = Field(4, ge=0, description="Exemplars per question.")
    seed: int = Field(0, description="Seed of the exemplar draws.")
    skill_list: Literal["all", "subject"] = Field(
        "all", description="Skills shown to the picker: all, or only the question's subject's skills.")
    max_tokens: int = Field(384, ge=1, description="Solver max new tokens.")
    temperature: float = Field(0.0, ge=0, description="Solver sampling temperature.")
    parse_retries: int = Field(1, ge=0, description="Fresh skill-pick calls after an unparseable pick.")
    bank_catalog: str = Field(..., description="Stored skill bank id.")
    dataset: str | None = Field(None, description="Questions (JSONL/CSV) or 'bundled' (the command line's default).")
    split: str | None = Field(None, description="Rows with this `split` value (the command line's default: test "
                                                "for bundled, else all).")
    dataset_catalog: str | None = Field(None, description="Stored question catalog id.")
    retrieval_file: str | None = Field(
        None, description="AdaptMI retrieval file ({\"question2skill\": ...}): the skill method takes each question's "
                          "skill from it (matched by question text) instead of asking the model.")
    pick_template: str = Field("solve/pick_skill", description="Prompt template that picks a question's skill.")
    solve_template: str = Field("solve/cot", description="Chain-of-thought solver prompt template.")
    judge_template: str = Field("solve/judge", description="Judge prompt template (with --judge).")


PIPELINE = Pipeline(
    name="extract-skills", config=ExtractSkillsConfig, graph="skillweave.graphs.skill_extraction",
    report="skillweave.agents.skill_extraction:run_report",
    description="Skill extraction: label questions, cluster labels into skills, build an exemplar bank.")

SOLVE_PIPELINE = Pipeline(
    name="solve", config=SolveConfig, graph="skillweave.graphs.solve", report="skillweave.agents.solver:run_report",
    description="Exemplar-retrieval solver evaluation (skill-based, random or fixed exemplars).")

PIPELINES = (PIPELINE, SOLVE_PIPELINE)
