"""Prompt lookup (n-gram drafts) simulated offline on recorded greedy outputs: how many decode steps it saves.

Input: the JSON written by `benchmarks/local_model.py --variants "engine fp16" --dump FILE` (each request's
prompt and output token ids). For every output, replay greedy decoding: the first token comes from the
prefill; at each later step, the last n tokens of prompt + output so far (n from `--max-n` down to `--min-n`)
are looked up earlier in that sequence, the up to K tokens that followed the match are the draft, and one
step then produces the longest prefix of the draft that equals the recorded continuation plus one more token
(the verification's own). Printed per (n range, K, which match): decode steps against plain decoding, the share
saved, the tokens accepted per step, and the positions verified (the work a step does for its drafts).

    python benchmarks/prompt_lookup.py /tmp/fp16.json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", help="JSON from benchmarks/local_model.py --dump")
    parser.add_argument("--k", default="2,4,6,8", help="draft lengths to try (comma-separated)")
    args = parser.parse_args()
    records = json.load(open(args.dump))
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
