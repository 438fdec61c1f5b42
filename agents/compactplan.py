"""Skill-Mix's drawn sample held compactly: skill and topic indices in flat arrays, not lists of objects.

A lazy plan (agents/lazyplan.py) keeps the whole drawn sample while its threads are produced. As a list of
`(list of Skill, topic)` pairs that costs about 150 bytes per combination (a k-element list, a tuple, the
list slot); here each combination is k skill indices in one `array` and its topic index in another, 2 bytes
per index for catalogs under 65,536 entries (4 above), so about 2(k + 1) bytes per combination.

The draws are the samplers' own, call for call: `random.Random.shuffle` and `.sample` consume the generator
according to the length of the sequence only, never its contents, so shuffling a list of indices draws
exactly what shuffling the catalog itself draws; the index lists are mapped back to the catalog entries when
a thread is produced. The n <= 0 enumeration sorts by the same key (the skills' names), so ties keep the same
order too.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from itertools import combinations


def _typecode(size: int) -> str:
    return "H" if size <= 0xFFFF else "I"


class CompactCombos:
    """`len(self)` combinations of `k` skills, each with one topic, as indices into `skills` and `topics`."""

    __slots__ = ("k", "skills", "topics", "skill_idx", "topic_idx")

    def __init__(self, k: int, skills: list, topics: list):
        self.k, self.skills, self.topics = k, skills, topics
        self.skill_idx, self.topic_idx = array(_typecode(len(skills))), array(_typecode(len(topics)))

    def __len__(self) -> int:
        return len(self.topic_idx)

    def __iter__(self) -> Iterator[tuple[list, str]]:
        """`(list of skills in prompt order, topic)` per combination, in plan order, built as it is taken."""
        k, skills, topics, idx = self.k, self.skills, self.topics, self.skill_idx
        for i, t in enumerate(self.topic_idx):
            yield [skills[j] for j in idx[i * k:(i + 1) * k]], topics[t]

    def nbytes(self) -> int:
        """Bytes held by the two index arrays."""
        return self.skill_idx.itemsize * len(self.skill_idx) + self.topic_idx.itemsize * len(self.topic_idx)


def _name(skill) -> str:
    return getattr(skill, "name", skill)


def _enumerated(skills: list, k: int) -> Iterator[tuple[int, ...]]:
    """Every k-combination of catalog indices, sorted by the skills' names (as `draw_combinations` sorts)."""
    names = [_name(s) for s in skills]
    return iter(sorted(combinations(range(len(skills)), k), key=lambda c: tuple(names[i] for i in c)))


def official_compact(skills: list, topics: list, k: int, n: int, seed: int, exp_path: str) -> CompactCombos:
    """The official plan (`sample_official`, then `official_prompt_orders` with one topic each) as indices."""
    if k > len(skills):
        raise ValueError(f"k={k} exceeds the {len(skills)} skills in the catalog")
    out = CompactCombos(k, skills, topics)
    rng, reorder = random.Random(seed), random.Random(exp_path)
    skill_idx, reshuffle = out.skill_idx, reorder.shuffle
    # `reorder` is a generator of its own, taken once per combination in plan order: the order inside the
    # prompt is set as each combination is drawn, not in a second pass
    count = 0
    if n > 0:  # every combination is drawn before any topic
        pool, shuffle, count = list(range(len(skills))), rng.shuffle, n
        for _ in range(n):
            shuffle(pool)
            combo = pool[:k]
            reshuffle(combo)
            skill_idx.extend(combo)
    else:
        for combo in _enumerated(skills, k):
            combo = list(combo)
            reshuffle(combo)
            skill_idx.extend(combo)
            count += 1
    topic_pool, topic_idx = list(range(len(topics))), out.topic_idx
    for _ in range(count):
        rng.shuffle(topic_pool)
        topic_idx.append(topic_pool[0])
    return out


def interleaved_compact(skills: list, topics: list, k: int, n: int, seed: int,
                        reshuffle_key: str | None = None) -> CompactCombos:
    """The interleaved plan (`sample_skill_combinations`, first topic of each draw) as indices."""
    if k > len(skills):
        raise ValueError(f"k={k} exceeds the {len(skills)} skills in the catalog")
    out = CompactCombos(k, skills, topics)
    rng = random.Random(seed)
    skill_idx, topic_idx = out.skill_idx, out.topic_idx
    if n == -1:  # every combination in catalog order, one `rng.sample` topic each; no reshuffle on this path
        topic_range = range(len(topics))
        for combo in combinations(range(len(skills)), k):
            skill_idx.extend(combo)
            topic_idx.append(rng.sample(topic_range, 1)[0])
        return out
    pool, topic_pool = list(range(len(skills))), list(range(len(topics)))
    inner = random.Random(reshuffle_key).shuffle if reshuffle_key is not None else None  # a generator of its own
    for _ in range(n):
        rng.shuffle(pool)
        rng.shuffle(topic_pool)
        combo = pool[:k]
        if inner is not None:
            inner(combo)
        skill_idx.extend(combo)
        topic_idx.append(topic_pool[0])
    return out
