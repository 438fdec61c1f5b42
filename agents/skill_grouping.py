"""Pre-grouping of large fine-label sets before LLM clustering (clustering step of
docs/methods.md#skill-labelling-steps, optional).

When one subject has more fine labels than fit in one clustering call (`cluster_batch`), the labels must be
split into batches. Sorted-name batches (`alpha`, the default) keep `gcd_computation` and `greatest_common_divisor`
apart; `embed` puts semantically close labels in the same batch so the LLM can merge them: labels are embedded
with the bundled all-MiniLM-L6-v2 (underscores read as spaces), grouped by seeded spherical k-means with
k = ceil(n / batch), and groups larger than a batch are cut into batch-sized pieces. Batches that return the
same coarse name are merged afterwards anyway, so pre-grouping only changes which labels the LLM sees together.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Embed = Callable[[list[str]], np.ndarray]


def minilm_embed(texts: list[str]) -> np.ndarray:
    from skillweave.providers.local_model import embed_texts

    return embed_texts(texts)


def batch_labels(
    labels: list[str],
    batch_size: int,
    method: str = "alpha",
    *,
    embed: Embed | None = None,
    seed: int = 0,
    iterations: int = 20,
) -> list[list[str]]:
    """Split labels into batches of at most `batch_size` (`alpha`: sorted names; `embed`: similar together)."""
    labels = sorted(set(labels))
    if len(labels) <= batch_size or method == "alpha":
        return [labels[i : i + batch_size] for i in range(0, len(labels), batch_size)]
    if method != "embed":
        raise ValueError(f"unknown pre-grouping '{method}'; expected alpha or embed")
    vectors = np.asarray(
        (embed or minilm_embed)([label.replace("_", " ") for label in labels]), dtype=np.float64
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    k = math.ceil(len(labels) / batch_size)
    rng = np.random.default_rng(seed)
    centres = vectors[rng.choice(len(labels), size=k, replace=False)]
    assign = np.zeros(len(labels), dtype=int)
    for _ in range(iterations):
        new = np.argmax(vectors @ centres.T, axis=1)
        if _ and np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = vectors[assign == c]
            if len(members):
                centre = members.sum(0)
                centres[c] = centre / max(np.linalg.norm(centre), 1e-12)
    batches: list[list[str]] = []
    for c in range(k):
        group = [labels[i] for i in np.flatnonzero(assign == c)]
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return [b for b in batches if b]
