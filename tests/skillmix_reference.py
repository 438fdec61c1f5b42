"""Independent references for the Skill-Mix samplers, their random calls spelled out (not imported from the code
under test, which draws on catalog indices in agents/compactplan.py).

`official_*`: a line-by-line transcription of the official driver's (`query_random.py` in LeoYu/skill-mix)
sampling calls on the module-level `random` generator. `interleaved_draws`: skillweave's earlier default order,
written out on two `random.Random` generators. Every function works on names (strings) and shuffles the lists it
is given in place, as the originals do: pass copies.
"""

import random
from itertools import combinations


def official_sample(skills, topics, k, num, seed, num_topics=1):
    """query_random.main's draw: every combination first, then one topic shuffle per combination."""
    random.seed(seed)
    if num > 0:
        comb_list = []
        for _ in range(num):
            random.shuffle(skills)
            comb_list.append(skills[:k])
    else:
        comb_list = [list(c) for c in sorted(combinations(skills, k))]  # upstream keeps tuples (see docs)
    topics_list = []
    for _ in comb_list:
        random.shuffle(topics)
        topics_list.append(topics[:num_topics])
    return comb_list, topics_list


def official_orders(comb_list, topics_list, exp_path):
    """query_random.main's generation loop: re-seeded with the experiment path, each combination shuffled in
    place once per topic; the (skills in prompt order, topic) pairs in generation order."""
    random.seed(exp_path)
    pairs = []
    for comb, comb_topics in zip(comb_list, topics_list, strict=True):
        for topic in comb_topics:
            random.shuffle(comb)
            pairs.append((list(comb), topic))
    return pairs


def official_draws(skills, topics, k, num, seed, exp_path="test", num_topics=1):
    """The whole official sampling: `official_sample` then `official_orders`."""
    return official_orders(*official_sample(skills, topics, k, num, seed, num_topics), exp_path)


def interleaved_draws(skills, topics, k, n, seed, reshuffle_key=None, num_topics=1):
    """The interleaved order: per draw one skill shuffle then one topic shuffle on one generator; afterwards a
    second generator seeded with `reshuffle_key` shuffles each combination once. n = -1: every combination in
    catalog order, each with `sample` topics, and no reshuffle."""
    rng = random.Random(seed)
    if n == -1:
        return [(list(c), rng.sample(topics, num_topics)) for c in combinations(skills, k)]
    draws = []
    for _ in range(n):
        rng.shuffle(skills)
        rng.shuffle(topics)
        draws.append((skills[:k], topics[:num_topics]))
    if reshuffle_key is not None:
        inner = random.Random(reshuffle_key)
        for combo, _ in draws:
            inner.shuffle(combo)
    return draws
