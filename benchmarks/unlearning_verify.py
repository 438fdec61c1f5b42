"""Verification experiments T1, T2, T4, T5 of METHODS.md for topic-model unlearning (T3: unlearning_cost.py).

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
    default_sensitivity,
    fit_head,
    gaussian_sigma,
    matched_l1,
    min_anchor_probability,
    model_distance,
    release,
    topic_posteriors,
    two_sample_accuracy,
    unlearn_base,
    unlearn_head,
)

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
    print(f"{'m_f':>7}  {'anchors same':>12}  {'exact |A_U-A_R|_1':>17}  {'newton-only |A_U-A_R|_1':>23}  "
          f"{'newton-only |.|_2':>17}  {'default Delta':>13}")
    for m_f in (10, 100, 1000, 10_000):
        forget = rng.choice(M, m_f, replace=False)
        keep = np.setdiff1d(np.arange(M), forget)
        retrained = fit(docs[keep], config(M), n_words=N)
        exact = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True)).model
        newton = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True, newton_only=True)).model
        same = sorted(retrained.anchors.tolist()) == sorted(model.anchors.tolist())
        d_exact, d_newton = model_distance(exact.A, retrained.A), model_distance(newton.A, retrained.A)
        delta = default_sensitivity("base", m_f, M, R, min_anchor_probability(model))
        print(f"{m_f:>7,d}  {str(same):>12}  {d_exact['l1']:17.2e}  {d_newton['l1']:23.2e}  {d_newton['l2']:17.2e}  "
              f"{delta:13.2e}")
    # with noise: U(S_f, A(S)) vs U(empty, A(S \\ S_f)), 200 releases each, logistic two-sample test
    m_f = 1000
    forget = rng.choice(M, m_f, replace=False)
    retrained = fit(docs[np.setdiff1d(np.arange(M), forget)], config(M), n_words=N)
    for label, newton_only in (("exact", False), ("newton-only", True)):
        for sens in (None, 1e-4, 1e-6):
            base = UnlearnConfig(newton_only=newton_only, sensitivity=sens, capacity=m_f)
            ours = np.array([unlearn_base(model, docs[forget], UnlearnConfig(**{**base.__dict__, "seed": s}))
                             .released["A"].ravel() for s in range(200)])
            theirs = np.array([release(retrained, UnlearnConfig(**{**base.__dict__, "seed": 10_000 + s}), m_f)
                               .released["A"].ravel() for s in range(200)])
            sigma = gaussian_sigma(1.0, 1e-5, sens if sens is not None else default_sensitivity(
                "base", m_f, M, R, min_anchor_probability(model)))
            print(f"noisy, m_f={m_f}, {label:>11}, sigma={sigma:.2e}: two-sample classifier accuracy "
                  f"{two_sample_accuracy(ours, theirs):.3f}")
    print()


def t4(threshold: float = 0.01, trials: int = 10) -> None:
    print(f"T4  deletion capacity (released A, epsilon=1, delta=1e-5, default sensitivity; excess = matched l1 "
          f"error minus that of the noiseless retrained model; capacity = largest m_f with 90% of {trials} trials "
          f"under {threshold})")
    predicted = M / (R**2 * np.sqrt(N * R))
    docs, _ = corpus(M)
    model = fit(docs, config(M), n_words=N)
    rng = np.random.default_rng(1)
    for epsilon in (1.0, 100.0):
        capacity = 0
        print(f"  epsilon={epsilon:g}")
        print(f"  {'m_f':>7}  {'sigma':>9}  {'excess q90':>10}")
        for m_f in (1, 3, 10, 30, 100, 300, 1000):
            excess = []
            for t in range(trials):
                forget = rng.choice(M, m_f, replace=False)
                res = unlearn_base(model, docs[forget], UnlearnConfig(epsilon=epsilon, seed=t))
                best = matched_l1(res.model.A, A_TRUE)[0]  # exact unlearning = the retrained model here
                excess.append(matched_l1(res.released["A"], A_TRUE)[0] - best)
            q90 = float(np.quantile(excess, 0.9))
            if q90 <= threshold:
                capacity = m_f
            print(f"  {m_f:>7,d}  {res.sigma:9.2e}  {q90:10.4f}")
        print(f"  capacity (grid) at epsilon={epsilon:g}: {capacity}   (METHODS' m/(r^2 sqrt(nr)) = {predicted:.0f})")
    # adversarial deletion: every document that contains anchor s_1
    anchor = int(model.anchors[0])
    hit = np.flatnonzero((docs == anchor).any(axis=1))
    print(f"  adversarial: {len(hit)} documents contain anchor word {anchor}")
    try:
        unlearn_base(model, docs[hit], UnlearnConfig(noiseless=True))
        print("  Ubase accepted the deletion")
    except UsageError as exc:
        print(f"  Ubase refuses: {exc}")
    keep = np.setdiff1d(np.arange(M), hit)
    retrained = fit(docs[keep], config(M), n_words=N)
    print(f"  retrained anchors {sorted(retrained.anchors.tolist())} (true {ANCHORS.tolist()}), matched l1 error "
          f"{matched_l1(retrained.A, A_TRUE)[0]:.3f} vs {matched_l1(model.A, A_TRUE)[0]:.3f} before")
    for frac in (0.5, 0.9, 0.99):
        part = hit[: int(frac * len(hit))]
        res = unlearn_base(model, docs[part], UnlearnConfig(noiseless=True))
        kept = np.setdiff1d(np.arange(M), part)
        rt = fit(docs[kept], config(M), n_words=N)
        same = sorted(rt.anchors.tolist()) == sorted(model.anchors.tolist())
        print(f"  delete {frac:.0%} of them: anchor mass left {res.stats['anchor_mass_left']:.2f}, retrain keeps "
              f"anchors {same}, |A_U - A_R|_1 = {model_distance(res.model.A, rt.A)['l1']:.2e}, "
              f"A_U error {matched_l1(res.model.A, A_TRUE)[0]:.3f}")
    print()


def t5() -> None:
    print("T5  head unlearning: labels 1[theta_1 > 0.5], ridge head on topic posteriors, release B = A w")
    docs, theta = corpus(M)
    model = fit(docs, config(M), n_words=N)
    features = topic_posteriors(docs, model.C)
    labels = (theta[:, 0] > 0.5).astype(float)
    head = fit_head(features, labels)
    digest = hashlib.sha256(model.A.tobytes()).hexdigest()
    print(f"  head accuracy on its training data {(head.predict(features) == labels).mean():.3f} "
          f"(majority class {max(labels.mean(), 1 - labels.mean()):.3f})")
    for m_f in (100, 1000, 10_000):
        forget = np.arange(m_f)
        res = unlearn_head(head, model.A, features[forget], labels[forget], UnlearnConfig(seed=0),
                           p_min=min_anchor_probability(model))
        retrained = fit_head(features[m_f:], labels[m_f:])
        base = unlearn_base(model, docs[forget], UnlearnConfig(seed=0))
        b_true = model.A @ retrained.w
        rel_b = np.linalg.norm(res.released["B"] - b_true) / np.linalg.norm(b_true)
        print(f"  m_f={m_f:>6,d}: |w_U - w_retrain| = {np.abs(res.model.w - retrained.w).max():.1e}, A bit-identical "
              f"{hashlib.sha256(model.A.tobytes()).hexdigest() == digest}, sigma head {res.sigma:.2e} vs base "
              f"{base.sigma:.2e} (ratio {res.sigma / base.sigma:.2f}), released B relative error {rel_b:.2f}")
    print()


if __name__ == "__main__":
    sections = {"t1": t1, "t2": t2, "t4": t4, "t5": t5}
    for name in sys.argv[1:] or list(sections):
        sections[name]()
