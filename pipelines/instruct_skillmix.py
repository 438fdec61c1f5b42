"""Instruct-SkillMix SFT data: settings and spec."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from skillweave.pipeline import Pipeline, PipelineConfig


class InstructSkillMixConfig(PipelineConfig):
    cli_exclude: ClassVar[frozenset[str]] = frozenset({"skills_catalog", "query_types_catalog"})
    legacy_defaults: ClassVar[dict] = {"sampler": "types-first"}  # runs stored before the official sampler
    shard_refused: ClassVar[str] = (
        "its near-duplicate filter compares each instruction with those already kept in the whole run, so which "
        "items a shard keeps would depend on the other shards")

    n: int = Field(5, ge=1, description="Data points to generate.")
    k: int = Field(2, ge=1, description="Skills per data point.")
    set: Literal["train", "heldout"] = Field("train", description="Which skill/query split and seed convention.")
    seed: int = Field(42, description="Sampling seed.")
    sampler: Literal["official", "types-first"] = Field(
        "official", description="official: 1_generate_data.py's order (skill pairs first, then the query-type list "
                                "doubled, shuffled and truncated); types-first: skillweave's earlier order.")
    model: str = Field("local", description="Generator model spec.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    max_tokens: int = Field(256, ge=1, description="Max new tokens per generation.")
    parse_retries: int = Field(3, ge=0, description="Extra tries of a reply that does not parse.")
    shirker_fraction: float = Field(0.0, ge=0, le=1, description="Fraction of data points answered by a shirker.")
    shirker_selection: str = Field("first", description="Which data points get shirker responses.")
    brevity: bool = Field(False, description="Ask for brief responses.")
    dedup: str = Field("minhash", description="Near-duplicate filter for instructions.")
    dedup_threshold: float | None = Field(None, description="Similarity above which an instruction is a duplicate.")
    generate_template: str = Field("instruct_skillmix/generate", description="Generation prompt template.")
    shirker_template: str = Field("instruct_skillmix/shirker", description="Shirker prompt template.")
    skills_catalog: str | None = Field(None, description="Stored skill catalog id (filled in by the CLI).")
    query_types_catalog: str | None = Field(None, description="Stored query-type catalog id (filled in by the CLI).")


PIPELINE = Pipeline(
    name="instruct-skillmix", config=InstructSkillMixConfig, graph="skillweave.graphs.instruct_skillmix",
    report="skillweave.metrics.instruct_skillmix:run_report", export="skillweave.export:_instruct_example",
    description="Instruct-SkillMix: (instruction, response) pairs from k random skills and a query type.")
