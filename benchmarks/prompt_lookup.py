"""Prompt lookup (n-gram drafts) simulated offline on recorded greedy outputs: how many decode steps it saves.

Input: the JSON written by `benchmarks/local_model.py --variants "engine fp16" --dump FILE` (each request's
prompt and output token ids). For every output, replay greedy decoding: the first token comes from the
prefill; at each later step, the last n tokens of prompt + output so far (n from `--max-n` down to `--min-n`)
are looked up earlier in that sequence, the up to K tokens that followed the match are the draft, and one
step then produces the longest prefix of the draft that equals the recorded continuation plus one more token
(the verification's own). Printed per (n range, K, which match): decode steps against plain decoding, the share
saved, the tokens accepted per step, and the positions verified (the work a step does for its drafts).

    python benchmarks/prompt_lookup.py /tmp/fp16.json
    PYTHONPATH=... python benchmarks/prompt_lookup.py /tmp/fp16.json --gate --k 4   # the engine's gate, modelled
"""

from __future__ import annotations

import argparse
import json


def draft(context: list[int], max_n: int, min_n: int, k: int, latest: bool) -> list[int]:
    """Up to k tokens that followed an earlier occurrence of the context's last n tokens (largest n first);
    `latest`: the most recent occurrence, else the first."""
    size = len(context)
    for n in range(max_n, min_n - 1, -1):
        if size <= n:
            continue
        tail = context[-n:]
        starts = range(size - n - 1, -1, -1) if latest else range(0, size - n)
        for start in starts:
            if context[start: start + n] == tail:
                follow = context[start + n: start + n + k]
                if follow:
                    return follow
    return []


def simulate(records: list[dict], max_n: int, min_n: int, k: int, latest: bool) -> dict:
    steps = plain = accepted = verified = drafted_steps = 0
    for record in records:
        prompt, out = record["prompt"], record["output"]
        if len(out) < 2:
            continue
        plain += len(out) - 1
        i = 1  # out[0] came from the prefill
        while i < len(out):
            guess = draft(prompt + out[:i], max_n, min_n, k, latest)
            guess = guess[: len(out) - i - 1]  # no draft past the recorded end
            a = 0
            while a < len(guess) and guess[a] == out[i + a]:
                a += 1
            steps += 1
            drafted_steps += bool(guess)
            verified += 1 + len(guess)
            accepted += a
            i += a + 1
    return {"steps": steps, "plain": plain, "saved": 1 - steps / max(plain, 1), "accepted": accepted,
            "verified": verified, "drafted_steps": drafted_steps}


def simulate_gated(records: list[dict], k: int, scale: float, overhead: float) -> dict:
    """The engine's drafts and gate (`Engine._draft`: n-grams LOOKUP_NGRAMS, latest match, `lookup_draft_length`
    on each row's running estimate and length, `lookup_learn`, the withheld draft's first token checked) replayed
    on the recorded outputs, with the engine's cost model (LOOKUP_COSTS, CPU ms at the row's length): a step costs
    one row's one-token step, plus a verified position per drafted token (times `scale`) and `overhead`
    one-token steps when the row drafts. Returns the steps, drafted and kept tokens, and the modelled cost against
    plain decoding's (a one-token step per token after the first)."""
    from skillweave.providers import local_engine
    from skillweave.providers.local_engine import LOOKUP_NGRAMS, lookup_draft_length, lookup_learn

    a, b, c, d = local_engine.LOOKUP_COSTS
    steps = accepted = drafted = 0
    cost = plain = 0.0
    for record in records:
        prompt, out = record["prompt"], record["output"]
        if len(out) < 2:
            continue
        plain += sum(c + d * (len(prompt) + i) for i in range(1, len(out)))
        kept, shadow = local_engine.LOOKUP_PRIOR, -1
        i = 1  # out[0] came from the prefill
        while i < len(out):
            context = prompt + out[:i]
            if shadow >= 0:
                kept = lookup_learn(kept, int(shadow == out[i - 1]), shadow != out[i - 1])
                shadow = -1
            guess = draft(context, max(LOOKUP_NGRAMS), min(LOOKUP_NGRAMS), k, True)
            guess = guess[: len(out) - i - 1]  # no draft past the recorded end
            length = lookup_draft_length(kept, len(guess), len(context)) if guess else 0
            if guess and not length:
                shadow = guess[0]
            guess = guess[:length]
            hit = 0
            while hit < len(guess) and guess[hit] == out[i + hit]:
                hit += 1
            if guess:
                kept = lookup_learn(kept, hit, hit < len(guess))
            steps += 1
            drafted += len(guess)
            accepted += hit
            step = c + d * len(context)
            cost += step + scale * (a + b * len(context)) * len(guess) + (overhead * step if guess else 0)
            i += hit + 1
    return {"steps": steps, "plain": plain, "accepted": accepted, "drafted": drafted, "cost": cost}


def gate_table(records: list[dict], k: int, scale: float) -> None:
    """The gate against drafting every match (the gate switched off), both under the same cost model."""
    from skillweave.providers import local_engine

    for label, gated in (("every match drafted", False), ("the engine's gate", True)):
        saved = local_engine.lookup_position_cost, local_engine.LOOKUP_DRAFT_COST
        if not gated:  # a draft length of `room` whatever the estimate
            local_engine.lookup_position_cost, local_engine.LOOKUP_DRAFT_COST = (lambda columns: 0.0), -1.0
        try:
            r = simulate_gated(records, k, scale, saved[1])
        finally:
            local_engine.lookup_position_cost, local_engine.LOOKUP_DRAFT_COST = saved
        print(f"K {k}, {label}: {r['steps']} row-steps; {r['accepted']} of {r['drafted']} drafted tokens kept; "
              f"modelled CPU {r['cost'] / 1000:.1f} s against {r['plain'] / 1000:.1f} s without drafts: "
              f"{r['plain'] / max(r['cost'], 1):.2f}x the tokens per CPU second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", help="JSON from benchmarks/local_model.py --dump")
    parser.add_argument("--k", default="2,4,6,8", help="draft lengths to try (comma-separated)")
    parser.add_argument("--gate", action="store_true",
                        help="instead: the engine's gate (providers/local_engine.py) against drafting every match, "
                             "with K from --k, under the engine's cost model")
    parser.add_argument("--position-scale", type=float, default=1.0,
                        help="--gate's model: a verified position's cost times this (default 1), to see how the "
                             "gate fares if drafts cost more or less than the engine assumes")
    args = parser.parse_args()
    records = json.load(open(args.dump))
    if args.gate:
        for k in (int(x) for x in args.k.split(",")):
            gate_table(records, k, args.position_scale)
        return
    tokens = sum(len(r["output"]) for r in records)
    print(f"{len(records)} outputs, {tokens} output tokens, {sum(len(r['prompt']) for r in records)} prompt tokens")
    for max_n, min_n in ((3, 1), (3, 2), (2, 1), (1, 1), (3, 3)):
        for k in (int(x) for x in args.k.split(",")):
            for latest in (True, False):
                r = simulate(records, max_n, min_n, k, latest)
                print(f"n {min_n}..{max_n}, K {k}, {'latest' if latest else 'first '} match: {r['steps']} decode "
                      f"steps against {r['plain']} ({100 * r['saved']:.1f}% fewer); {r['accepted']} draft tokens "
                      f"accepted in {r['drafted_steps']} steps with a draft; {r['verified']} positions verified "
                      f"({r['verified'] / max(r['steps'], 1):.2f} per step)")


if __name__ == "__main__":
    main()
