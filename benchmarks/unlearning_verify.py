"""Verification experiments T1, T2, T4, T5 of docs/methods.md#verification-unlearning for topic-model unlearning
(T3: unlearning_cost.py); recorded results in docs/results/unlearning.md.

Planted separable model: n = 200 words, r = 5 topics, anchor probability p = 0.05, Dirichlet(0.1) topic
prior, documents of L = 2 words. Every number is measured in this run; nothing is asserted.

    .venv/bin/python benchmarks/unlearning_verify.py            # all sections (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/unlearning_verify.py t2 t4      # some sections
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from skillweave.errors import UsageError
from skillweave.trainers.unlearning.topic_model import TopicModelConfig, fit, planted_topics, sample_documents
from skillweave.trainers.unlearning.unlearn import (
    UnlearnConfig,
    fit_head,
    matched_l1,
    model_distance,
    release,
    topic_posteriors,
    two_sample_accuracy,
    unlearn_base,
    unlearn_head,
)

OPEN = 1e9  # utility threshold that never refuses: these experiments measure, the CLI enforces

N, R, P, M = 200, 5, 0.05, 200_000
A_TRUE, ANCHORS = planted_topics(N, R, anchor_prob=P, seed=0)


def corpus(m: int, seed: int = 1):
    return sample_documents(A_TRUE, m, length=2, alpha=0.1, seed=seed)


def config(m: int) -> TopicModelConfig:
    return TopicModelConfig(n_topics=R, anchor_min_docs=max(1, m // 200))


def t1() -> None:
    print("T1  anchor recovery and permutation-matched column l1 error of A (mean over columns)")
    print(f"{'m':>9}  {'anchors recovered':>17}  {'l1 error':>9}  {'error*sqrt(m)':>13}")
    errs, ms, good = [], [20_000, 50_000, 200_000, 500_000, 1_000_000], []
    for m in ms:
        docs, _ = corpus(m)
        model = fit(docs, config(m), n_words=N)
        err, _ = matched_l1(model.A, A_TRUE)
        errs.append(err)
        ok = sorted(model.anchors.tolist()) == ANCHORS.tolist()
        good.append(ok)
        print(f"{m:>9,d}  {str(ok):>17}  {err:9.4f}  {err * np.sqrt(m):13.1f}")
    idx = [i for i, ok in enumerate(good) if ok]
    slope = np.polyfit(np.log(np.array(ms)[idx]), np.log(np.array(errs)[idx]), 1)[0]
    print(f"log-log slope of error vs m where all anchors are recovered: {slope:.3f}  (1/sqrt(m) = -0.5)\n")


def t2() -> None:
    print(f"T2  unlearned vs retrained, m = {M:,d} (random forget sets)")
    docs, _ = corpus(M)
    model = fit(docs, config(M), n_words=N)
    rng = np.random.default_rng(0)
    print(f"{'m_f':>7}  {'anchors change':>14}  {'exact |A_U-A_R|_1':>17}  {'kept anchors |.|_1':>18}  "
          f"{'newton-only |.|_1':>17}  {'measured Delta':>14}  {'capacity eps=1':>14}")
    for m_f in (10, 100, 1000, 10_000):
        forget = rng.choice(M, m_f, replace=False)
        keep = np.setdiff1d(np.arange(M), forget)
        retrained = fit(docs[keep], config(M), n_words=N)
        res = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True))
        kept = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True, keep_anchors=True)).model
        newton = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True, newton_only=True)).model
        print(f"{m_f:>7,d}  {str(res.stats['anchors_changed']):>14}  {np.abs(res.model.A - retrained.A).sum():17.2e}  "
              f"{np.abs(kept.A - retrained.A).sum():18.2e}  {np.abs(newton.A - retrained.A).sum():17.2e}  "
              f"{res.sensitivity:14.2e}  {res.stats['capacity']:>14}")
    # with noise: U(S_f, A(S)) vs U(empty, A(S \\ S_f)), 200 releases each, logistic two-sample test
    m_f = 1000
    forget = rng.choice(M, m_f, replace=False)
    retrained = fit(docs[np.setdiff1d(np.arange(M), forget)], config(M), n_words=N)
    for label, newton_only in (("exact", False), ("newton-only", True)):
        for sens in (None, 1e-4, 1e-6):
            runs = [unlearn_base(model, docs[forget], UnlearnConfig(newton_only=newton_only, sensitivity=sens,
                                                                   utility_threshold=OPEN, seed=s)) for s in range(200)]
            ours = np.array([r.released["A"].ravel() for r in runs])
            theirs = np.array([release(retrained, runs[0].sigma, seed=10_000 + s)["A"].ravel() for s in range(200)])
            print(f"noisy, m_f={m_f}, {label:>11}, sigma={runs[0].sigma:.2e} ({'measured' if sens is None else 'given'} "
                  f"Delta): two-sample classifier accuracy {two_sample_accuracy(ours, theirs):.3f}")
    print()


def t4(threshold: float = 0.01, trials: int = 10) -> None:
    print(f"T4  deletion capacity (released A, delta=1e-5, measured sensitivity; excess = matched l1 error minus "
          f"that of the noiseless retrained model; grid capacity = largest m_f with 90% of {trials} trials under "
          f"{threshold}; reported = the capacity the unlearner states at utility threshold 0.1)")
    predicted = M / (R**2 * np.sqrt(N * R))
    docs, _ = corpus(M)
    model = fit(docs, config(M), n_words=N)
    rng = np.random.default_rng(1)
    for epsilon in (1.0, 100.0):
        capacity = 0
        print(f"  epsilon={epsilon:g}")
        print(f"  {'m_f':>7}  {'sigma':>9}  {'excess q90':>10}  {'reported capacity (median)':>26}")
        for m_f in (1, 3, 10, 30, 100, 300, 1000):
            excess, reported = [], []
            for t in range(trials):
                forget = rng.choice(M, m_f, replace=False)
                res = unlearn_base(model, docs[forget], UnlearnConfig(epsilon=epsilon, seed=t, utility_threshold=OPEN))
                cap = unlearn_base(model, docs[forget], UnlearnConfig(epsilon=epsilon, noiseless=True)).stats["capacity"]
                reported.append(cap if cap is not None else np.inf)
                best = matched_l1(res.model.A, A_TRUE)[0]  # exact unlearning = the retrained model here
                excess.append(matched_l1(res.released["A"], A_TRUE)[0] - best)
            q90 = float(np.quantile(excess, 0.9))
            if q90 <= threshold:
                capacity = m_f
            print(f"  {m_f:>7,d}  {res.sigma:9.2e}  {q90:10.4f}  {np.median(reported):26g}")
        print(f"  capacity (grid) at epsilon={epsilon:g}: {capacity}   (the paper's m/(r^2 sqrt(nr)) = {predicted:.0f})")
    # adversarial deletion: every document that contains anchor s_1
    anchor = int(model.anchors[0])
    hit = np.flatnonzero((docs == anchor).any(axis=1))
    print(f"  adversarial: {len(hit)} documents contain anchor word {anchor}")
    try:
        unlearn_base(model, docs[hit], UnlearnConfig(noiseless=True, keep_anchors=True))
        print("  Ubase with fixed anchors accepted the deletion")
    except UsageError as exc:
        print(f"  Ubase with fixed anchors refuses: {exc}")
    keep = np.setdiff1d(np.arange(M), hit)
    retrained = fit(docs[keep], config(M), n_words=N)
    res = unlearn_base(model, docs[hit], UnlearnConfig(noiseless=True))
    print(f"  re-searched anchors {res.model.anchors.tolist()}, retrained {retrained.anchors.tolist()} (true "
          f"{ANCHORS.tolist()}), |A_U - A_R|_1 = {np.abs(res.model.A - retrained.A).sum():.2e}; matched l1 error "
          f"{matched_l1(retrained.A, A_TRUE)[0]:.3f} vs {matched_l1(model.A, A_TRUE)[0]:.3f} before")
    for frac in (0.5, 0.9, 0.99):
        part = hit[: int(frac * len(hit))]
        kept = unlearn_base(model, docs[part], UnlearnConfig(noiseless=True, keep_anchors=True))
        exact = unlearn_base(model, docs[part], UnlearnConfig(noiseless=True))
        rt = fit(docs[np.setdiff1d(np.arange(M), part)], config(M), n_words=N)
        print(f"  delete {frac:.0%} of them: anchor mass left {kept.stats['anchor_mass_left']:.2f}, retrain keeps "
              f"anchors {np.array_equal(rt.anchors, model.anchors)}, fixed anchors |A_U - A_R|_1 = "
              f"{model_distance(kept.model.A, rt.A)['l1']:.2e}, re-searched {np.abs(exact.model.A - rt.A).sum():.2e}")
    print()


def t5() -> None:
    print("T5  head unlearning: labels 1[theta_1 > 0.5], ridge head on topic posteriors, release B = A w; "
          "compared with retraining base and head")
    docs, theta = corpus(M)
    model = fit(docs, config(M), n_words=N)
    labels = (theta[:, 0] > 0.5).astype(float)
    head = fit_head(docs, labels, model.C)
    digest = hashlib.sha256(model.A.tobytes()).hexdigest()
    print(f"  head accuracy on its training data {(head.predict(topic_posteriors(docs, model.C)) == labels).mean():.3f} "
          f"(majority class {max(labels.mean(), 1 - labels.mean()):.3f})")
    for m_f in (100, 1000, 10_000):
        forget, keep = np.arange(m_f), np.arange(m_f, M)
        cfg = UnlearnConfig(seed=0, utility_threshold=OPEN)
        res = unlearn_head(model, head, docs[forget], cfg, head_forget_docs=docs[forget],
                           head_forget_labels=labels[forget])
        base_r = fit(docs[keep], config(M), n_words=N)
        B_r = base_r.A @ fit_head(docs[keep], labels[keep], base_r.C).w
        B_u = res.base.A @ res.model.w
        head_only = model.A @ fit_head(docs[keep], labels[keep], model.C).w
        base = unlearn_base(model, docs[forget], cfg)
        stated = UnlearnConfig(noiseless=True)  # the capacity each would state at the default utility threshold
        cap_head = unlearn_head(model, head, docs[forget], stated, head_forget_docs=docs[forget],
                                head_forget_labels=labels[forget]).stats["capacity"]
        cap_base = unlearn_base(model, docs[forget], stated).stats["capacity"]
        rel_b = np.linalg.norm(res.released["B"] - B_r) / np.linalg.norm(B_r)
        print(f"  m_f={m_f:>6,d}: |B_U - B_retrain|_inf = {np.abs(B_u - B_r).max():.1e} (head-only refit: "
              f"{np.abs(head_only - B_r).max():.1e}), A bit-identical "
              f"{hashlib.sha256(model.A.tobytes()).hexdigest() == digest}, sigma head {res.sigma:.2e} vs base "
              f"{base.sigma:.2e} (ratio {res.sigma / base.sigma:.2f}), capacity head {cap_head} vs base {cap_base}, "
              f"released B relative error {rel_b:.2f}")
    print()


if __name__ == "__main__":
    sections = {"t1": t1, "t2": t2, "t4": t4, "t5": t5}
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    unknown = [a for a in sys.argv[1:] if a not in sections]
    if unknown:
        print(f"Error: unknown section {unknown[0]!r}; give some of {', '.join(sections)} (or none for all)",
              file=sys.stderr)
        sys.exit(2)
    for name in sys.argv[1:] or list(sections):
        sections[name]()
