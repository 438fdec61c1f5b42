"""ConceptMix text-to-image benchmark: settings and spec."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from skillweave.pipeline import Pipeline, PipelineConfig


class ConceptMixConfig(PipelineConfig):
    cli_exclude: ClassVar[frozenset[str]] = frozenset({"concepts_catalog", "source", "files", "source_run"})

    source: Literal["generate", "import", "run"] = Field(
        "generate", description="Where prompts come from: sampled here, imported files, or another run.")
    k: list[int] | None = Field(None, description="Difficulty: concepts beyond the base object; 1, 1,3 or 1..7 "
                                                  "(the command line's default: 1..3).")
    n: int | None = Field(None, ge=1, description="Prompts per k (the command line's default: 4).")
    seed: int = Field(0, description="Sampling seed (each record hashes it with k and index).")
    model: str | None = Field(None, description="Model for refine/caption/verify/questions: local, fake, "
                                                "openai:<m>, anthropic:<m> (the command line's default: local).")
    image_model: str = Field("render", description="Text-to-image backend: render (offline drawings), "
                                                   "openai-images:<model> or diffusers:<local folder>.")
    grader: str = Field("fake", description="VLM grader: openai:<vision model>, anthropic:<model>, or fake (always "
                                            "answers Yes; dry runs only). Required on the command line.")
    grader_max_tokens: int = Field(1, ge=1, description="Reply length for the grader (the paper uses 1: Yes or No).")
    grader_temperature: float = Field(0.0, ge=0, description="Grader sampling temperature.")
    refine: Literal["auto", "llm", "rule"] = Field(
        "auto", description="Complete configurations with the LLM (auto: fall back to rules, recorded).")
    questions: Literal["auto", "llm", "template"] = Field(
        "auto", description="Write questions with the LLM (auto: fall back to catalog templates, recorded).")
    max_resamples: int = Field(3, ge=0, description="Resamples of a record after conflicts before it is marked failed.")
    parse_retries: int = Field(1, ge=0, description="Extra tries of an LLM step whose reply does not parse.")
    p_extra_object: float = Field(0.25, ge=0, le=1, description="Probability that each of the k slots is another object.")
    max_style: int = Field(1, ge=0, description="Styles per prompt, at most.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of the LLM steps.")
    max_tokens: int = Field(400, ge=1, description="Max new tokens per LLM step.")
    concepts_catalog: str | None = Field(None, description="Stored concept catalog id (filled in by the CLI).")
    files: list[str] | None = Field(None, description="Imported run: the sentence files read.")
    source_run: str | None = Field(None, description="Run whose prompts this run evaluates (source 'run').")


PIPELINE = Pipeline(
    name="conceptmix", config=ConceptMixConfig, graph="skillweave.graphs.conceptmix",
    report="skillweave.metrics.conceptmix:run_report", plot="skillweave.metrics.conceptmix:plot_report",
    description="ConceptMix: k+1 concepts -> prompt and questions -> image -> VLM grades.")
