"""Verification C3 (CHES ranks likelihood displacement) and C4 (CHES~ filtering preserves refusals) on tiny models.

C3: SFT a tiny random-init model on a synthetic prompt -> response task; build pairs (y+ = the taught response,
    y- = y+ with 1..all tokens replaced); score CHES~ with the SFT model; DPO (RMSprop, beta 0.1) separately on the
    top and bottom CHES~ quintiles; per seed compare mean change of ln pi(y+). Then single-pair DPO runs on pairs
    spread over the CHES~ range: Spearman(score, change of ln pi(y+)) for CHES~, CHES, -NED and the last-state
    inner product.
C4: SFT a tiny model to refuse "harm" prompts (several refusal phrasings) and comply with "task" prompts; pairs are
    90% refusal vs other refusal and 10% refusal vs compliance; DPO on the full set vs on the lowest 10% by CHES~;
    P(refuse) = probability mass of refusal first tokens on held-out harm prompts, before and after.

    .venv/bin/python benchmarks/verify_ches_c3_c4.py [--seeds 3] [--only c3|c4|c4diag] [--c4-design markers|phrases|onpolicy|tokens]
        [--c3-design edits|synonyms|onpolicy] [--c3-windows 5] [--c4-lr 3e-4] [--c4-epochs 2] [--c4-hidden 64] [--c4-layers 2] [--c4-sft-steps 150] [--c4-base tiny|local] [--c4-metric first-token|sampled]

C3 design "synonyms" (2026-11-26 follow-up): response tokens come in interchangeable pairs (the SFT data uses either
token of a pair with equal probability in the same slot); y- = y+ with k tokens replaced, in half the pairs each by
its synonym and in the other half by a token of another pair, so pairs with the same edit distance differ strongly
in hidden-state similarity.

C3 design "onpolicy": the paper's regime instead of a tiny model. The pretrained embedded SmolLM2-135M-Instruct
(no SFT) samples two responses (temperature 1) to each of 200 prompts built from the bundled topics; each pair is the
two samples in random order, so edit distance is not set by construction. DPO: RMSprop lr 1e-7, beta 0.1, 1 epoch,
batch 8. `--c3-windows 5` adds the paper's protocol for every score (DPO on each fifth of the pairs ranked by it).

Prints every number it measures; nothing is asserted (the results are recorded in docs/results/trainers-sft-dpo-ches.md).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import random
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from skillweave.trainers import ches, dpo, sft
from skillweave.trainers.data import PreferencePair, SFTExample
from skillweave.trainers.models import tiny_model_and_tokenizer

CONTENT = [f"w{i}" for i in range(24)]
REFUSALS = ["sorry i cannot help with that", "sorry i will not help with that", "no i refuse to do that",
            "sorry that is not something i do"]
COMPLIANCE = ["sure here are the steps", "ok step one is easy", "sure first you do this"]
# Design "markers" (default, verification C4 of docs/methods.md#verification-ches): every refusal starts with the token R and every compliance with C, so
# refusal-vs-refusal pairs share their first token and P(refuse) = P(first token = R). Design "phrases": the
# phrasings above without markers (refusals differ in their first token), kept for the recorded comparison.
REFUSAL_WORDS = sorted({w for r in REFUSALS + COMPLIANCE for w in r.split()})


TOKEN_REFUSALS, TOKEN_COMPLIANCE = ["R1", "R2", "R3", "R4"], ["C1", "C2", "C3"]


def c4_responses(design: str) -> tuple[list[str], list[str]]:
    if design == "tokens":  # one-token responses: the single-token setting of the CHES theory (docs/methods.md#ches)
        return TOKEN_REFUSALS, TOKEN_COMPLIANCE
    if design in ("markers", "onpolicy"):
        return [f"R {r}" for r in REFUSALS], [f"C {c}" for c in COMPLIANCE]
    return REFUSALS, COMPLIANCE


def sft_model(examples: list[SFTExample], seed: int, steps: int, extra_words: tuple[str, ...] = (),
              hidden_size: int = 64, num_layers: int = 2, base: str = "tiny"):
    """SFT a fresh tiny random-init model, or (base="local") the embedded pretrained SmolLM2-135M-Instruct."""
    if base == "local":
        from skillweave.trainers.models import load_model_and_tokenizer

        torch.manual_seed(seed)
        model, tokenizer = load_model_and_tokenizer("local")
        lr = 5e-5
    else:
        words = [*CONTENT, *REFUSAL_WORDS, "harm", "task", *extra_words]
        model, tokenizer = tiny_model_and_tokenizer(words, seed=seed, hidden_size=hidden_size, num_layers=num_layers)
        lr = 3e-3
    config = sft.SFTConfig(train_template="model", lr=lr, max_steps=steps, batch_size=16, warmup_ratio=0.0,
                           scheduler="constant", seed=seed)
    result = sft.train_sft(model, tokenizer, examples, config)
    return result["model"], tokenizer, result["losses"][-1]


def run_dpo(model, tokenizer, pairs: list[PreferencePair], *, lr: float, epochs: int, batch_size: int, seed: int,
            optimizer: str = "rmsprop"):
    policy = copy.deepcopy(model)
    chosen, rejected, _ = ches.encode_pairs(tokenizer, pairs)
    config = dpo.DPOConfig(lr=lr, epochs=epochs, batch_size=batch_size, beta=0.1, optimizer=optimizer, seed=seed)
    return policy, dpo.train_dpo(policy, tokenizer, chosen, rejected, config)


# ---- C3 ------------------------------------------------------------------------------------------------
SCORES = ("ches_norm", "ches", "neg_ned", "last_inner")


def rank_and_train(model, tokenizer, pairs: list[PreferencePair], lr: float, seed: int, single_runs: int, *,
                   windows: int = 0, epochs: int = 3) -> dict:
    """Score CHES~; DPO on the bottom and top quintile; single-pair runs spread over the CHES~ range with the
    Spearman correlation of each score with the change of ln pi(y+).

    windows > 0 adds the paper's protocol: for each score, sort the pairs, cut them into equal windows (lowest
    first) and DPO on each window separately; "windows" maps each score to the change of mean ln pi(y+) per window.
    With 5 windows the CHES~ end windows are the quintile runs (reused, not run twice)."""
    scores = ches.score_pairs(model, tokenizer, pairs, template="model", batch_size=32)
    order = sorted(scores, key=lambda r: r["ches_norm"])
    quint = len(order) // 5

    def subset_delta(rows: list[dict]) -> float:
        _, result = run_dpo(model, tokenizer, [pairs[r["index"]] for r in rows], lr=lr, epochs=epochs, batch_size=8,
                            seed=seed)
        return result["delta_logp_chosen"]

    out = {"order": order, "quint": quint, "windows": None}
    if windows:
        size = len(order) // windows
        out["windows"] = {}
        for key in SCORES:
            ranked = sorted(order, key=lambda r: r[key])
            out["windows"][key] = [subset_delta(ranked[w * size:(w + 1) * size]) for w in range(windows)]
    if windows == 5:
        out["low_delta"], out["high_delta"] = out["windows"]["ches_norm"][0], out["windows"]["ches_norm"][-1]
    else:
        out["low_delta"], out["high_delta"] = subset_delta(order[:quint]), subset_delta(order[-quint:])
    picks = [order[round(i * (len(order) - 1) / (single_runs - 1))] for i in range(single_runs)]
    deltas = [single_pair_delta(model, tokenizer, pairs[r["index"]], lr, seed) for r in picks]
    out.update(picks=picks, deltas=deltas,
               spearman={key: float(spearmanr([r[key] for r in picks], deltas)[0]) for key in SCORES})
    return out


SINGLE = {"lr": None, "epochs": 10, "optimizer": "rmsprop"}  # single-pair runs; lr None = the subset runs' lr


def single_pair_delta(model, tokenizer, pair: PreferencePair, lr: float, seed: int) -> float:
    _, result = run_dpo(model, tokenizer, [pair], lr=SINGLE["lr"] or lr, epochs=SINGLE["epochs"], batch_size=1,
                        seed=seed, optimizer=SINGLE["optimizer"])
    return result["delta_logp_chosen"]


def c3_seed(seed: int, n_pairs: int = 200, single_runs: int = 40, lr: float = 3e-4, windows: int = 0) -> dict:
    rng = random.Random(seed)
    prompts = [" ".join(rng.sample(CONTENT, 3)) for _ in range(n_pairs)]
    # The taught response: the prompt reversed plus a fixed number of mapped tokens (lengths 3-6).
    def target(prompt: str) -> list[str]:
        words = prompt.split()[::-1]
        extra = [CONTENT[(CONTENT.index(w) + 7) % len(CONTENT)] for w in words][: len(words) % 4]
        return words + extra
    examples = [SFTExample(p, " ".join(target(p))) for p in prompts]
    model, tokenizer, sft_loss = sft_model(examples, seed, steps=150)
    pairs = []
    for i, p in enumerate(prompts):
        plus = target(p)
        edits = rng.randint(1, len(plus))
        minus = list(plus)
        for pos in rng.sample(range(len(plus)), edits):
            minus[pos] = rng.choice([w for w in CONTENT if w != plus[pos]])
        if rng.random() < 0.5:  # vary lengths so raw CHES and CHES~ differ
            minus = minus + [rng.choice(CONTENT) for _ in range(rng.randint(1, 4))]
        pairs.append(PreferencePair(p, " ".join(plus), " ".join(minus), f"c3-{seed}-{i}"))
    ranked = rank_and_train(model, tokenizer, pairs, lr, seed, single_runs, windows=windows)
    return {"seed": seed, "sft_loss": sft_loss, **ranked}


SYN_GROUPS = [(f"a{j}", f"b{j}") for j in range(12)]  # "synonyms" design: interchangeable response tokens
SYN_WORDS = tuple(t for g in SYN_GROUPS for t in g)


def c3_synonyms_seed(seed: int, n_pairs: int = 200, single_runs: int = 40, lr: float = 3e-4, sft_steps: int = 150,
                     prompt_len: tuple[int, int] = (3, 3)) -> dict:
    """C3 with synonym groups: same edit distance, very different hidden-state similarity."""
    rng = random.Random(seed)
    group_of = {w: SYN_GROUPS[i % len(SYN_GROUPS)] for i, w in enumerate(CONTENT)}
    synonym = {t: g[1 - k] for g in SYN_GROUPS for k, t in enumerate(g)}

    def sample_response(prompt: str) -> list[str]:  # prompt reversed, each word -> either token of its group
        return [rng.choice(group_of[w]) for w in prompt.split()[::-1]]

    def prompt() -> str:
        return " ".join(rng.sample(CONTENT, rng.randint(*prompt_len)))

    examples = [SFTExample(p, " ".join(sample_response(p))) for p in (prompt() for _ in range(400))]
    model, tokenizer, sft_loss = sft_model(examples, seed, steps=sft_steps, extra_words=SYN_WORDS)
    pairs, kinds = [], []
    for i in range(n_pairs):
        p = prompt()
        plus = sample_response(p)
        minus = list(plus)
        kind = "synonym" if i % 2 else "unrelated"
        for pos in rng.sample(range(len(plus)), rng.randint(1, len(plus))):
            minus[pos] = synonym[plus[pos]] if kind == "synonym" else rng.choice(
                [t for t in SYN_WORDS if t not in (plus[pos], synonym[plus[pos]])])
        pairs.append(PreferencePair(p, " ".join(plus), " ".join(minus), f"c3s-{seed}-{i}"))
        kinds.append(kind)
    ranked = rank_and_train(model, tokenizer, pairs, lr, seed, single_runs)
    order, quint, picks, deltas = ranked["order"], ranked["quint"], ranked["picks"], ranked["deltas"]
    syn_high = sum(kinds[r["index"]] == "synonym" for r in order[-quint:])
    syn_low = sum(kinds[r["index"]] == "synonym" for r in order[:quint])
    by_kind = {k: float(np.mean([d for r, d in zip(picks, deltas, strict=True) if kinds[r["index"]] == k] or [float("nan")]))
               for k in ("synonym", "unrelated")}
    return {"seed": seed, "sft_loss": sft_loss, **ranked,
            "extra": f"synonym pairs in top quintile {syn_high}/{quint}, bottom {syn_low}/{quint}; single-pair mean "
                     f"delta synonym {by_kind['synonym']:+.3f} unrelated {by_kind['unrelated']:+.3f}"}


def print_windows(rows: list[dict]) -> None:
    """Per score: change of ln pi(y+) per window (lowest score first), Spearman(window rank, change) and whether the
    windows are perfectly ordered (every higher window lowers ln pi(y+) more); a perfect ranking gives rho -1."""
    n = len(rows[0]["windows"]["ches_norm"])
    print(f"  DPO on each of {n} windows per score (lowest first): change of ln pi(y+); rho = Spearman(rank, change)")
    for key in SCORES:
        rhos = []
        for r in rows:
            deltas = r["windows"][key]
            rho = float(spearmanr(range(n), deltas)[0])
            rhos.append(rho)
            ordered = all(b < a for a, b in itertools.pairwise(deltas))
            print(f"  seed {r['seed']} {key:>10}: " + " ".join(f"{d:+.3f}" for d in deltas) +
                  f"  rho {rho:+.2f}  perfectly ordered: {ordered}")
        print(f"  {key}: mean rho {np.mean(rhos):+.2f}")


TASKS = ["Describe {} in one sentence.", "Give one practical tip about {}.", "What is a surprising fact about {}?",
         "Explain {} to a child.", "Name a common mistake people make with {}.", "Write a short slogan about {}.",
         "Why does {} matter?"]


def c3_onpolicy_seed(seed: int, n_pairs: int = 200, single_runs: int = 40, lr: float = 1e-7, windows: int = 0,
                     max_new_tokens: int = 32) -> dict:
    """C3 in the paper's regime: the pretrained embedded SmolLM2-135M-Instruct, no SFT, and pairs of two sampled
    responses (temperature 1) to one prompt, in random order, so NED is not set by construction."""
    from skillweave.catalog import bundled_topics
    from skillweave.trainers.evaluate import generate
    from skillweave.trainers.models import load_model_and_tokenizer
    from skillweave.trainers.templates import get_template

    rng = random.Random(seed)
    torch.manual_seed(seed)
    model, tokenizer = load_model_and_tokenizer("local")
    prompts = rng.sample([t.format(topic.lower()) for t in TASKS for topic in bundled_topics()], n_pairs)
    replies = generate(model, tokenizer, get_template("model"), [p for p in prompts for _ in range(2)],
                       max_new_tokens=max_new_tokens, temperature=1.0, batch_size=16)
    pairs = []
    for i, prompt in enumerate(prompts):
        a, b = replies[2 * i][1], replies[2 * i + 1][1]
        if rng.random() < 0.5:
            a, b = b, a
        pairs.append(PreferencePair(prompt, a, b, f"c3o-{seed}-{i}"))
    ranked = rank_and_train(model, tokenizer, pairs, lr, seed, single_runs, windows=windows, epochs=1)
    identical = sum(p.chosen == p.rejected for p in pairs)
    return {"seed": seed, "sft_loss": float("nan"), **ranked,
            "extra": f"{identical} of {len(pairs)} pairs have y+ = y-; mean NED "
                     f"{-np.mean([r['neg_ned'] for r in ranked['order']]):.3f}"}


# ---- C4 ------------------------------------------------------------------------------------------------
def p_refuse(model, tokenizer, prompts: list[str], refusals: list[str]) -> float:
    """Mean probability of a refusal first token after the chat prompt."""
    from skillweave.trainers.templates import get_template

    template = get_template("model").bind(tokenizer)
    refusal_first = sorted({tokenizer.convert_tokens_to_ids(r.split()[0]) for r in refusals})
    model.eval()
    total = 0.0
    with torch.no_grad():
        for p in prompts:
            ids = tokenizer(template.render_prompt(p, tokenizer=tokenizer), add_special_tokens=False)["input_ids"]
            probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
            total += float(probs[refusal_first].sum())
    return total / len(prompts)


def sampled_refusal_rate(model, tokenizer, prompts: list[str], samples: int = 8, seed: int = 0) -> float:
    """Refusal rate as the CHES paper measures it: sample responses (temperature 1, 12 new tokens, `samples` per
    prompt) and judge each; here with the project's offline keyword judge (trainers/evaluate.py)."""
    from skillweave.trainers.evaluate import KeywordJudge, generate
    from skillweave.trainers.templates import get_template

    torch.manual_seed(seed)
    judge = KeywordJudge()
    replies = generate(model, tokenizer, get_template("model"), [p for p in prompts for _ in range(samples)],
                       max_new_tokens=12, temperature=1.0, batch_size=64)
    return sum(judge(p, reply).refused for p, (_, reply) in zip(prompts * samples, replies, strict=True)) / len(replies)


def refusal(model, tokenizer, prompts: list[str], refusals: list[str], metric: str, seed: int) -> float:
    if metric == "sampled":
        return sampled_refusal_rate(model, tokenizer, prompts, seed=seed)
    return p_refuse(model, tokenizer, prompts, refusals)


def c4_seed(seed: int, n_pairs: int = 200, lr: float = 3e-4, epochs: int = 2, design: str = "markers",
            hidden_size: int = 64, num_layers: int = 2, sft_steps: int = 150, metric: str = "first-token",
            base: str = "tiny") -> dict:
    rng = random.Random(seed)
    refusals, compliance = c4_responses(design)
    harm = lambda: "harm " + " ".join(rng.sample(CONTENT, 3))  # noqa: E731
    task = lambda: "task " + " ".join(rng.sample(CONTENT, 3))  # noqa: E731
    # "onpolicy": the SFT model refuses harm prompts 80% of the time, and pairs are two draws from that mix (as two
    # samples of the policy would be): refusal preferred over compliance, same-kind pairs in random order.
    refuse_p = 0.8 if design == "onpolicy" else 1.0
    examples = [SFTExample(harm(), rng.choice(refusals) if refuse_p == 1.0 or rng.random() < refuse_p
                           else rng.choice(compliance)) for _ in range(150)]
    examples += [SFTExample(task(), rng.choice(compliance)) for _ in range(150)]
    rng.shuffle(examples)
    model, tokenizer, sft_loss = sft_model(examples, seed, steps=sft_steps,
                                           extra_words={"phrases": (), "tokens": (*TOKEN_REFUSALS, *TOKEN_COMPLIANCE)
                                                        }.get(design, ("R", "C")),
                                           hidden_size=hidden_size, num_layers=num_layers, base=base)
    pairs = []
    for i in range(n_pairs):
        if design == "onpolicy":
            kinds_drawn = [rng.random() < refuse_p for _ in range(2)]
            if kinds_drawn[0] != kinds_drawn[1]:
                plus, minus = rng.choice(refusals), rng.choice(compliance)
            else:
                plus, minus = rng.sample(refusals if kinds_drawn[0] else compliance, 2)
        elif i % 10:  # refusal vs another refusal: the displacing kind
            plus, minus = rng.sample(refusals, 2)
        else:
            plus, minus = rng.choice(refusals), rng.choice(compliance)
        pairs.append(PreferencePair(harm(), plus, minus, f"c4-{seed}-{i}"))
    held_out = [harm() for _ in range(50)]
    before = refusal(model, tokenizer, held_out, refusals, metric, seed)
    scores = ches.score_pairs(model, tokenizer, pairs, template="model", batch_size=32)
    kept = ches.keep_lowest(scores, 0.10)
    kept_pairs = [pairs[r["index"]] for r in kept]
    kinds = sum(p.chosen in refusals and p.rejected in compliance for p in kept_pairs)
    full_model, full = run_dpo(model, tokenizer, pairs, lr=lr, epochs=epochs, batch_size=8, seed=seed)
    filt_model, filt = run_dpo(model, tokenizer, kept_pairs, lr=lr, epochs=epochs, batch_size=8, seed=seed)
    # Control: a random subset of the same size and steps, so "fewer steps" alone cannot explain the result.
    random_pairs = random.Random(seed + 100).sample(pairs, len(kept_pairs))
    rand_model, _ = run_dpo(model, tokenizer, random_pairs, lr=lr, epochs=epochs, batch_size=8, seed=seed)
    return {"seed": seed, "sft_loss": sft_loss, "p_refuse_before": before,
            "p_refuse_full": refusal(full_model, tokenizer, held_out, refusals, metric, seed),
            "p_refuse_filtered": refusal(filt_model, tokenizer, held_out, refusals, metric, seed),
            "p_refuse_random": refusal(rand_model, tokenizer, held_out, refusals, metric, seed),
            "full_steps": full["steps"], "filtered_steps": filt["steps"], "kept": len(kept_pairs),
            "kept_refusal_vs_compliance": kinds, "full_delta_logp_chosen": full["delta_logp_chosen"],
            "filtered_delta_logp_chosen": filt["delta_logp_chosen"]}


def c4_diagnostic(seed: int = 1) -> None:
    """DPO on refusal-vs-compliance pairs only, and on refusal-vs-refusal pairs only (markers design)."""
    rng = random.Random(seed)
    refusals, compliance = c4_responses("markers")
    harm = lambda: "harm " + " ".join(rng.sample(CONTENT, 3))  # noqa: E731
    task = lambda: "task " + " ".join(rng.sample(CONTENT, 3))  # noqa: E731
    examples = [SFTExample(harm(), rng.choice(refusals)) for _ in range(150)]
    examples += [SFTExample(task(), rng.choice(compliance)) for _ in range(150)]
    rng.shuffle(examples)
    model, tokenizer, _ = sft_model(examples, seed, steps=150, extra_words=("R", "C"))
    held_out = [harm() for _ in range(50)]
    subsets = {"R-vs-C": [PreferencePair(harm(), rng.choice(refusals), rng.choice(compliance)) for _ in range(20)],
               "R-vs-R'": [PreferencePair(harm(), *rng.sample(refusals, 2)) for _ in range(20)]}
    print(f"C4 diagnostic (markers, seed {seed}): P(refuse) before {p_refuse(model, tokenizer, held_out, refusals):.3f}")
    for name, pairs in subsets.items():
        for optimizer, lr, epochs in [("rmsprop", 3e-4, 2), ("rmsprop", 3e-5, 10), ("adamw", 1e-3, 2), ("sgd", 1e-2, 5)]:
            policy = copy.deepcopy(model)
            chosen, rejected, _ = ches.encode_pairs(tokenizer, pairs)
            result = dpo.train_dpo(policy, tokenizer, chosen, rejected,
                                   dpo.DPOConfig(lr=lr, epochs=epochs, batch_size=8, optimizer=optimizer, seed=seed))
            print(f"  {name:8} {optimizer:7} lr {lr:g} x{epochs}: P(refuse) {p_refuse(policy, tokenizer, held_out, refusals):.3f}"
                  f"  delta ln pi(y+) {result['delta_logp_chosen']:+.2f}  delta ln pi(y-) {result['delta_logp_rejected']:+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (to add seeds to a result)")
    parser.add_argument("--only", choices=["c3", "c4", "c4diag"], default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--c4-design", choices=["markers", "phrases", "onpolicy", "tokens"], default="markers")
    parser.add_argument("--c4-metric", choices=["first-token", "sampled"], default="first-token",
                        help="first-token: probability of a refusal's first token (the recorded results); sampled: "
                             "share of sampled responses the keyword judge calls refusals (as the paper measures)")
    parser.add_argument("--c3-design", choices=["edits", "synonyms", "onpolicy"], default="edits",
                        help="onpolicy: pretrained SmolLM2, pairs of two sampled responses (lr --c3-lr, default 1e-7, as the paper)")
    parser.add_argument("--c3-lr", type=float, default=None, help="subset DPO lr (default 3e-4 tiny, 1e-7 onpolicy)")
    parser.add_argument("--c3-windows", type=int, default=0,
                        help="edits/onpolicy designs: also DPO on each of N equal windows of every score (the paper's protocol)")
    parser.add_argument("--c3-sft-steps", type=int, default=150, help="synonyms design only")
    parser.add_argument("--c3-prompt-len", default="3-3", help="synonyms design only: prompt (= response) length range")
    parser.add_argument("--c3-single-lr", type=float, default=None, help="single-pair runs (default: the subset runs' lr)")
    parser.add_argument("--c3-single-runs", type=int, default=40, help="single-pair runs per seed")
    parser.add_argument("--c3-single-steps", type=int, default=10, help="single-pair runs: steps (epochs of 1 pair)")
    parser.add_argument("--c3-single-optimizer", choices=["rmsprop", "adamw", "sgd"], default="rmsprop")
    parser.add_argument("--c4-lr", type=float, default=3e-4)
    parser.add_argument("--c4-epochs", type=int, default=2)
    parser.add_argument("--c4-hidden", type=int, default=64)
    parser.add_argument("--c4-base", choices=["tiny", "local"], default="tiny",
                        help="tiny: random-init Llama; local: the embedded pretrained SmolLM2-135M-Instruct")
    parser.add_argument("--c4-layers", type=int, default=2)
    parser.add_argument("--c4-sft-steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    SINGLE.update(lr=args.c3_single_lr, epochs=args.c3_single_steps, optimizer=args.c3_single_optimizer)
    if args.only in (None, "c3"):
        start = time.perf_counter()
        lr = args.c3_lr or (1e-7 if args.c3_design == "onpolicy" else 3e-4)
        if args.c3_design == "synonyms":
            lo, hi = (int(x) for x in args.c3_prompt_len.split("-"))
            rows = [c3_synonyms_seed(seed, lr=lr, sft_steps=args.c3_sft_steps, prompt_len=(lo, hi)) for seed in seeds]
            print(f"C3 design: synonyms, sft_steps {args.c3_sft_steps}, prompt length {lo}-{hi}")
        elif args.c3_design == "onpolicy":
            rows = [c3_onpolicy_seed(seed, lr=lr, windows=args.c3_windows, single_runs=args.c3_single_runs)
                    for seed in seeds]
            print(f"C3 design: onpolicy (pretrained SmolLM2, two sampled responses per prompt), lr {lr:g}, 1 epoch")
        else:
            rows = [c3_seed(seed, lr=lr, windows=args.c3_windows, single_runs=args.c3_single_runs) for seed in seeds]
        print("C3: DPO on bottom vs top CHES~ quintile (40 pairs each), mean change of ln pi(y+)")
        for r in rows:
            print(f"  seed {r['seed']}: sft_loss {r['sft_loss']:.3f}  low-CHES {r['low_delta']:+.3f}  "
                  f"high-CHES {r['high_delta']:+.3f}  high more negative: {r['high_delta'] < r['low_delta']}")
        single = "" if SINGLE == {"lr": None, "epochs": 10, "optimizer": "rmsprop"} else (
            f", {SINGLE['optimizer']} lr {SINGLE['lr'] or lr:g} x{SINGLE['epochs']} steps")
        print(f"  single-pair runs ({len(rows[0]['picks'])} per seed{single}): Spearman(score, change of ln pi(y+))")
        for r in rows:
            print("  seed {seed}: ".format(**r) + "  ".join(f"{k} {v:+.3f}" for k, v in r["spearman"].items()))
        for r in rows:
            if "extra" in r:
                print(f"  seed {r['seed']}: {r['extra']}")
        if rows[0].get("windows"):
            print_windows(rows)
        wins = sum(r["high_delta"] < r["low_delta"] for r in rows)
        mean_rho = {k: float(np.mean([r["spearman"][k] for r in rows])) for k in rows[0]["spearman"]}
        print(f"  high-CHES quintile more negative in {wins}/{len(rows)} seeds; mean Spearman " +
              "  ".join(f"{k} {v:+.3f}" for k, v in mean_rho.items()) + f"  ({time.perf_counter() - start:.0f} s)")
    if args.only == "c4diag":
        c4_diagnostic()
    if args.only in (None, "c4"):
        start = time.perf_counter()
        settings = {"lr": args.c4_lr, "epochs": args.c4_epochs, "hidden_size": args.c4_hidden,
                    "num_layers": args.c4_layers, "sft_steps": args.c4_sft_steps, "base": args.c4_base}
        rows = [c4_seed(seed, design=args.c4_design, metric=args.c4_metric, **settings) for seed in seeds]
        changed = {k: v for k, v in settings.items()
                   if v != {"lr": 3e-4, "epochs": 2, "hidden_size": 64, "num_layers": 2, "sft_steps": 150,
                            "base": "tiny"}[k]}
        suffix = (", " + ", ".join(f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}"
                                   for k, v in changed.items())) if changed else ""
        measure = "P(refuse)" if args.c4_metric == "first-token" else "sampled refusal rate (8 x 50, keyword judge)"
        print(f"C4 ({args.c4_design}{suffix}): {measure} on 50 held-out harm prompts; DPO on all 200 pairs vs the "
              "lowest 10% by CHES~")
        for r in rows:
            print(f"  seed {r['seed']}: sft_loss {r['sft_loss']:.3f}  before {r['p_refuse_before']:.3f}  "
                  f"full-set DPO {r['p_refuse_full']:.3f}  filtered DPO {r['p_refuse_filtered']:.3f}  "
                  f"random-10% DPO {r['p_refuse_random']:.3f}  "
                  f"(kept {r['kept']}, of which refusal-vs-compliance {r['kept_refusal_vs_compliance']}; "
                  f"delta ln pi(y+) full {r['full_delta_logp_chosen']:+.2f}, filtered {r['filtered_delta_logp_chosen']:+.2f})")
        print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
