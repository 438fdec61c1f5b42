"""Skill-Mix's drawn sample held compactly: skill and topic indices in flat arrays, not lists of objects.

A lazy plan (agents/lazyplan.py) keeps the whole drawn sample while its threads are produced. As a list of
`(list of Skill, topic)` pairs that costs about 150 bytes per combination (a k-element list, a tuple, the
list slot); here each combination is k skill indices in one `array` and its topic index in another, 2 bytes
per index for catalogs under 65,536 entries (4 above), so about 2(k + 1) bytes per combination.

This module is the samplers' one drawing code: the list forms in agents/skillmix.py (`sample_official`,
`official_prompt_orders`, `sample_skill_combinations`) map its indices back to catalog entries. The draws are
made on index lists, call for call as on the catalog itself: `random.Random.shuffle` and `.sample` consume the
generator according to the length of the sequence only, never its contents, so shuffling a list of indices
draws exactly what shuffling the catalog draws. The n <= 0 enumeration sorts by the same key (the skills'
names), so ties keep the same order too.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Iterator
from itertools import combinations

from skillweave.catalog import iter_combinations


def _typecode(size: int) -> str:
    return "H" if size <= 0xFFFF else "I"


class CompactCombos:
    """`len(self)` rows of `k` skills and `per` topics each (the plan: one topic), as indices into `skills` and
    `topics`."""

    __slots__ = ("k", "per", "skills", "topics", "skill_idx", "topic_idx")

    def __init__(self, k: int, skills: list, topics: list, per: int = 1):
        self.k, self.per, self.skills, self.topics = k, per, skills, topics
        self.skill_idx, self.topic_idx = array(_typecode(len(skills))), array(_typecode(len(topics)))

    def __len__(self) -> int:
        return len(self.skill_idx) // self.k

    def __iter__(self) -> Iterator[tuple[list, str]]:
        """`(list of skills in prompt order, first topic)` per row, in plan order, built as it is taken."""
        k, per, skills, topics, idx, tidx = self.k, self.per, self.skills, self.topics, self.skill_idx, self.topic_idx
        for i in range(len(self)):
            yield [skills[j] for j in idx[i * k:(i + 1) * k]], topics[tidx[i * per]]

    def draws(self) -> Iterator[tuple[list, list]]:
        """`(list of skills, list of its `per` topics)` per row: the samplers' list form."""
        k, per, skills, topics, idx, tidx = self.k, self.per, self.skills, self.topics, self.skill_idx, self.topic_idx
        for i in range(len(self)):
            yield [skills[j] for j in idx[i * k:(i + 1) * k]], [topics[t] for t in tidx[i * per:(i + 1) * per]]

    def nbytes(self) -> int:
        """Bytes held by the two index arrays."""
        return self.skill_idx.itemsize * len(self.skill_idx) + self.topic_idx.itemsize * len(self.topic_idx)


def _name(skill) -> str:
    return getattr(skill, "name", skill)


def _check(skills: list, k: int, num_topics: int) -> None:
    if k < 1:
        raise ValueError(f"k={k}: at least one skill per combination")
    if k > len(skills):
        raise ValueError(f"k={k} exceeds the {len(skills)} skills in the catalog")
    if num_topics < 1:
        raise ValueError(f"num_topics={num_topics}: at least one topic per combination")


def reorder_into(shuffle, combos: Iterable[list], times: int, emit) -> None:
    """The official in-prompt order: each of `combos` shuffled in place by `shuffle` (the generator seeded with
    the experiment path) once per topic (`times`), in order, and handed to `emit` after each shuffle (the same
    list each time: copy it to keep it)."""
    if times == 1:  # the plan's case, without a loop per combination
        for combo in combos:
            shuffle(combo)
            emit(combo)
        return
    for combo in combos:
        for _ in range(times):
            shuffle(combo)
            emit(combo)


def official_compact(skills: list, topics: list, k: int, n: int, seed: int, exp_path: str | None = None,
                     num_topics: int = 1) -> CompactCombos:
    """The official draw as indices: one `random.Random(seed)` draws every combination (`iter_combinations`:
    n > 0 shuffles of the catalog, first k each; n <= 0 every combination sorted by names), then per
    combination in order one topic shuffle, keeping the first `num_topics`.

    With `exp_path` the rows are the plan's (combination, topic) pairs: a second generator seeded with
    `exp_path` shuffles each combination in place once per topic, in plan order, and each row holds the order
    after its topic's shuffle (`reorder_into`; that generator is taken in plan order, so it is applied as each
    combination is drawn, not in a second pass). Without it the rows are the drawn combinations, each with its
    topics (`sample_official`)."""
    _check(skills, k, num_topics)
    per = min(num_topics, len(topics))  # topics[:num_topics]: fewer when the catalog is shorter
    rng = random.Random(seed)
    out = CompactCombos(k, skills, topics, per=1 if exp_path is not None else per)
    skill_idx = out.skill_idx
    names = [_name(s) for s in skills]
    combos = iter_combinations(rng, range(len(skills)), k, n, key=lambda c: tuple(names[i] for i in c))
    if exp_path is None:
        for combo in combos:
            skill_idx.extend(combo)
        count = len(skill_idx) // k
    else:
        reorder_into(random.Random(exp_path).shuffle, combos, per, skill_idx.extend)  # a generator of its own
        count = len(skill_idx) // (k * per) if per else 0  # no topics: no topic draws either
    topic_pool, topic_idx, shuffle = list(range(len(topics))), out.topic_idx, rng.shuffle
    for _ in range(count):
        shuffle(topic_pool)
        if per == 1:  # the plan's case: one index, no slice
            topic_idx.append(topic_pool[0])
        else:
            topic_idx.extend(topic_pool[:num_topics])
    return out


def interleaved_compact(skills: list, topics: list, k: int, n: int, seed: int, reshuffle_key: str | None = None,
                        num_topics: int = 1) -> CompactCombos:
    """The interleaved draw as indices, one row per draw with its `num_topics` topics (the plan takes the
    first): one `random.Random(seed)`, per draw a skill shuffle then a topic shuffle, the first k skills and the
    first `num_topics` topics; with `reshuffle_key` a second generator seeded with it shuffles each combination
    once, in plan order. n = -1 gives every combination in catalog order with `rng.sample` topics instead (no
    reshuffle on that path); any other n <= 0 gives none."""
    _check(skills, k, num_topics)
    rng = random.Random(seed)
    if n == -1:
        out = CompactCombos(k, skills, topics, per=num_topics)
        skill_idx, topic_idx, topic_range, sample = out.skill_idx, out.topic_idx, range(len(topics)), rng.sample
        for combo in combinations(range(len(skills)), k):
            skill_idx.extend(combo)
            topic_idx.extend(sample(topic_range, num_topics))
        return out
    per = min(num_topics, len(topics))
    out = CompactCombos(k, skills, topics, per=per)
    skill_idx, topic_idx, shuffle = out.skill_idx, out.topic_idx, rng.shuffle
    pool, topic_pool = list(range(len(skills))), list(range(len(topics)))
    inner = random.Random(reshuffle_key).shuffle if reshuffle_key is not None else None  # a generator of its own
    for _ in range(n):
        shuffle(pool)
        shuffle(topic_pool)
        combo = pool[:k]
        if inner is not None:
            inner(combo)
        skill_idx.extend(combo)
        if per == 1:
            topic_idx.append(topic_pool[0])
        else:
            topic_idx.extend(topic_pool[:num_topics])
    return out
