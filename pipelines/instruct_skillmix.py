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

    n: int = Field(5, ge=1, description="Data points to generate (the command line's default: 5, or 100 with "
                                        "--set heldout).")
    k: int = Field(2, ge=1, description="Skills per data point.")
    set: Literal["train", "heldout"] = Field(
        "train", description="heldout: the separately seeded validation set (default seed 4242, n 100).")
    seed: int = Field(42, description="Sampling seed (the command line's default: 42 for train, 4242 for heldout).")
    sampler: Literal["official", "types-first"] = Field(
        "official", description="official: 1_generate_data.py's order (skill pairs first, then the query-type list "
                                "doubled, shuffled and truncated); types-first: skillweave's earlier order.")
    model: str = Field("local", description="Generator model spec: local, fake, openai:<m>, anthropic:<m>.")
    temperature: float = Field(0.7, ge=0, description="Generator sampling temperature.")
    max_tokens: int = Field(256, ge=16, description="Max new tokens per turn (the command line's default: 4096 for "
                                                    "API models as upstream, 256 for local/fake).")
    parse_retries: int = Field(3, ge=0, description="Times the last turn is asked again when the fields do not "
                                                    "parse, before the point fails.")
    shirker_fraction: float = Field(
        0.0, ge=0, le=1, description="Fraction of data points whose response is replaced by a deliberately unhelpful "
                                     "one (on the command line: with --shirkers, default 0.2).")
    shirker_selection: Literal["first", "random"] = Field(
        "first", description="Which points become shirkers: the first ones (as upstream) or a seeded random subset.")
    brevity: bool = Field(False, description="Ablation: the generation prompt limits the response to one paragraph.")
    dedup: Literal["minhash", "embedding", "none"] = Field(
        "minhash", description="Near-duplicate control on instructions: MinHash word shingles, MiniLM embeddings, "
                               "or none.")
    dedup_threshold: float | None = Field(
        None, gt=0, le=1, description="Reject at similarity >= this (default: Jaccard 0.7 for minhash, cosine 0.9 "
                                      "for embedding).")
    generate_template: str = Field("instruct_skillmix/generate", description="Five-turn generation prompt template.")
    shirker_template: str = Field("instruct_skillmix/shirker", description="Prompt template of a shirker's response.")
    skills_catalog: str | None = Field(None, description="Stored skill catalog id (filled in by the CLI).")
    query_types_catalog: str | None = Field(None, description="Stored query-type catalog id (filled in by the CLI).")


PIPELINE = Pipeline(
    name="instruct-skillmix", config=InstructSkillMixConfig, graph="skillweave.graphs.instruct_skillmix",
    report="skillweave.metrics.instruct_skillmix:run_report", export="skillweave.export:_instruct_example",
    description="Instruct-SkillMix: (instruction, response) pairs from k random skills and a query type.")
