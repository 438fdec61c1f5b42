"""Skill-Mix evaluation: settings and spec."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from skillweave.pipeline import Pipeline, PipelineConfig


class SkillMixConfig(PipelineConfig):
    cli_exclude: ClassVar[frozenset[str]] = frozenset(
        {"skills_catalog", "topics_catalog", "imported_from", "student", "grader", "temperatures", "rejudge_of"})
    legacy_defaults: ClassVar[dict] = {"sampler": "interleaved"}  # runs stored before the official sampler

    k: list[int] = Field([2], description="Skills per combination: 2, 2,3 or 2..4.")
    n: int = Field(5, ge=-1, description="Combinations per k (-1 enumerates all C(N,k)).")
    rounds: int | list[int] = Field(
        3, description="Generation rounds per combination (same combinations; the best round counts). "
                       "Imported runs store the list of rounds found.")
    seed: int = Field(10, description="Sampling seed (the reference default is 10).")
    model: str = Field("local", description="Student model spec: local, fake, openai:<m>, anthropic:<m>, a name "
                                            "from the models file, or replay:<recordings> (replay:store=old.db, "
                                            "replay:skillmix=DIR,student=NAME; see docs/skillmix.md).")
    judge: str | None = Field(None, description="Judge model spec (default: same as --model); replay:... answers "
                                                "from recorded grades.")
    grading_samples: int = Field(3, ge=1, description="Judge samples per text; rubric items are decided by majority vote.")
    concurrency: int = Field(8, ge=1, description="Combinations in flight at once.")
    split: Literal["all", "train", "heldout"] = Field(
        "all", description="Use only the train or held-out part of the category split (Zhao et al.).")
    train_categories: str = Field("literary,rhetorical", description="Skill categories in the train split (comma-separated).")
    temperature: float = Field(0.7, ge=0, description="Student sampling temperature.")
    temperatures: list[float] | None = Field(None, description="One student temperature per round (overrides temperature).")
    judge_temperature: float = Field(0.7, ge=0, description="Judge sampling temperature.")
    max_tokens: int = Field(512, ge=1, description="Student max new tokens per turn.")
    judge_max_tokens: int | None = Field(None, ge=1, description="Judge max new tokens (default: 120 + 20 k).")
    student_template: str = Field("skillmix/student", description="Student prompt template.")
    judge_template: str = Field("skillmix/judge", description="skillmix/judge (table) or skillmix/judge_points (point list).")
    filter_explicit_name: bool = Field(False, description="Zero a skill's point when its name appears verbatim.")
    shorten: bool = Field(False, description="Turn 1 also asks to shorten (the weaker-model variant).")
    reshuffle: bool = Field(True, description="interleaved sampler: reshuffle the order inside each combination.")
    sampler: Literal["official", "interleaved"] = Field(
        "official", description="official: query_random.py's order (all combinations, then one topic each, then the "
                                "in-prompt reshuffle seeded by --exp-path); interleaved: skillweave's earlier order "
                                "(a combination and its topic per draw); the two give different pairs for one seed.")
    exp_path: str = Field("test", description="official sampler: the experiment path string that seeds the skill "
                                              "order inside each prompt (query_random.py's --exp_path).")
    skills_catalog: str | None = Field(None, description="Stored skill catalog id (filled in by the CLI).")
    topics_catalog: str | None = Field(None, description="Stored topic catalog id (filled in by the CLI).")
    imported_from: str | None = Field(None, description="Imported run: the official output folder.")
    student: str | None = Field(None, description="Imported run: the student model's name.")
    grader: str | None = Field(None, description="Imported run: the grader's name.")
    rejudge_of: str | None = Field(None, description="Re-judged run: the run whose texts are graded again.")

    @field_validator("k", mode="before")
    @classmethod
    def _k_forms(cls, value):
        """k as 2, [2, 3], "2,3" or "2..4"."""
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            if ".." in value:
                lo, _, hi = value.partition("..")
                return list(range(int(lo), int(hi) + 1))
            return [int(v) for v in value.split(",") if v.strip()]
        return value

    @field_validator("k")
    @classmethod
    def _k_positive(cls, value):
        if not value or min(value) < 1:
            raise ValueError("k must name at least one k >= 1")
        return value

    @model_validator(mode="after")
    def _judge_defaults_to_model(self):
        if self.judge is None and self.imported_from is None:
            self.judge = self.model
        return self


PIPELINE = Pipeline(
    name="skillmix", config=SkillMixConfig, graph="skillweave.graphs.skillmix",
    report="skillweave.metrics.skillmix:run_report", plot="skillweave.metrics.skillmix:plot_report",
    export="skillweave.export:_skillmix_example", inputs="skillweave.agents.skillmix:input_catalogs",
    description="Skill-Mix: k skills + a topic, two student turns, judged with the k+3 rubric.")
