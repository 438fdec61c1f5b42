"""Training entry point for the anchor-word topic model: on store text (through lineage) or a planted corpus.

It sits above `topic_model`, `lineage` and `unlearn`, so none of those imports back into another's caller.
"""

from __future__ import annotations

from pydantic import Field

from skillweave.trainers.settings import TopicModelConfig, TrainerSettings
from skillweave.trainers.unlearning.topic_model import fit, planted_topics, sample_documents


class RunConfig(TrainerSettings):
    """Train a topic model on store text (`db` set) or on a planted synthetic corpus (`db` empty)."""

    db: str = Field("", description="Store file to train on; empty = planted synthetic corpus.")
    model: TopicModelConfig = Field(default_factory=TopicModelConfig, description="Learner options.")
    vocab_size: int = Field(500, ge=2, description="Store text: keep this many most frequent words.")
    min_df: int = Field(2, ge=1, description="Store text: minimum document frequency of a word.")
    selectors: list[str] = Field(default_factory=list, description="Store text: train only on these items.")
    name: str = Field("store", description="Store text: model family name.")
    planted_docs: int = Field(200_000, ge=1, description="Planted corpus: documents m.")
    planted_words: int = Field(200, ge=2, description="Planted corpus: vocabulary n.")
    planted_length: int = Field(2, ge=2, description="Planted corpus: words per document L.")


def run(config: RunConfig) -> dict:
    """Train and return a summary (store: the saved version; planted: anchors and matched l1 error)."""
    if config.db:
        from skillweave.store import Store
        from skillweave.trainers.unlearning.lineage import train_store_model

        store = Store(config.db)
        try:
            return train_store_model(store, config.model, selectors=config.selectors or None,
                                     vocab_size=config.vocab_size, min_df=config.min_df, name=config.name)
        finally:
            store.close()
    from skillweave.trainers.unlearning.unlearn import matched_l1

    A_true, anchors = planted_topics(config.planted_words, config.model.n_topics, seed=config.model.seed)
    docs, _ = sample_documents(A_true, config.planted_docs, length=config.planted_length, seed=config.model.seed + 1)
    model = fit(docs, config.model, n_words=config.planted_words)
    return {"anchors": model.anchors.tolist(), "anchors_recovered": sorted(model.anchors.tolist()) == anchors.tolist(),
            "matched_l1": matched_l1(model.A, A_true)[0], "m": model.m}
