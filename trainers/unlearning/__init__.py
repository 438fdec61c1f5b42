"""Provable unlearning for anchor-word topic models and their downstream heads (docs/unlearning.md).

`topic_model` is the learner (co-occurrence statistics, FastAnchorWords, RecoverL2), `unlearn` the
unlearners (Ubase, Uhead), noise calibration and metrics, `lineage` turns store selectors into forget sets
and keeps model versions in the store.
"""
