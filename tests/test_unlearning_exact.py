"""Unlearning against retraining everything: anchor changes, heads on a pre-trained base, noise, capacity.

The setting of the issue: m = 10^5 planted documents, 2,000 forgotten. Every comparison retrains from scratch
(base, and head where there is one) on the retained documents.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from skillweave.errors import UsageError
from skillweave.trainers.unlearning.topic_model import TopicModelConfig, fit, planted_topics, sample_documents
from skillweave.trainers.unlearning.unlearn import (
    UnlearnConfig,
    add_noise,
    calibrate,
    fit_head,
    gaussian_sigma,
    release,
    unlearn_base,
    unlearn_head,
)

N, R, M, M_F = 200, 5, 100_000, 2_000


@pytest.fixture(scope="module")
def corpus():
    A, _ = planted_topics(N, R, anchor_prob=0.05, seed=0)
    docs, theta = sample_documents(A, M, length=2, seed=1)
    config = TopicModelConfig(n_topics=R, anchor_min_docs=M // 200)
    model = fit(docs, config, n_words=N)
    labels = (theta[:, 0] > 0.5).astype(float)
    return docs, labels, config, model


@pytest.fixture(scope="module")
def forget_sets(corpus):
    """Two random forget sets of 2,000 documents: one whose retraining changes the anchors, one that keeps them."""
    docs, _, _, model = corpus
    rng = np.random.default_rng(0)
    found = {}
    for _ in range(40):
        forget = rng.choice(M, M_F, replace=False)
        changed = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True)).stats["anchors_changed"]
        found.setdefault(changed, forget)
        if len(found) == 2:
            return found
    pytest.fail("no random forget set changed the anchors (or none kept them)")


@pytest.mark.parametrize("anchors_change", [True, False])
def test_ubase_equals_retraining_with_and_without_anchor_changes(corpus, forget_sets, anchors_change):
    docs, _, config, model = corpus
    forget = forget_sets[anchors_change]
    keep = np.setdiff1d(np.arange(M), forget)
    retrained = fit(docs[keep], config, n_words=N)
    result = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True))
    assert result.stats["anchors_changed"] == anchors_change
    assert (not np.array_equal(retrained.anchors, model.anchors)) == anchors_change
    assert np.array_equal(result.model.anchors, retrained.anchors)
    assert np.abs(result.model.A - retrained.A).sum() < 1e-8
    assert np.abs(result.model.R - retrained.R).max() < 1e-8
    np.testing.assert_array_equal(result.model.doc_freq, retrained.doc_freq)
    # the fixed-anchor unlearner (--keep-anchors) is exact only while retraining keeps the anchors
    fixed = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True, keep_anchors=True))
    gap = np.abs(fixed.model.A - retrained.A).sum()
    assert (gap > 0.1) if anchors_change else (gap < 1e-8)


@pytest.mark.parametrize("anchors_change", [True, False])
def test_uhead_forgets_pretraining_documents_like_retraining_base_and_head(corpus, forget_sets, anchors_change):
    """Released B~ = A~ w~ equals retraining the topic model and the head without the forgotten documents."""
    docs, labels, config, model = corpus
    forget = forget_sets[anchors_change]
    keep = np.setdiff1d(np.arange(M), forget)
    head = fit_head(docs, labels, model.C)
    A_before = model.A.copy()
    result = unlearn_head(model, head, docs[forget], UnlearnConfig(noiseless=True), head_forget_docs=docs[forget],
                          head_forget_labels=labels[forget])
    base_r = fit(docs[keep], config, n_words=N)
    B_r = base_r.A @ fit_head(docs[keep], labels[keep], base_r.C).w
    assert np.abs(result.released["B"] - B_r).max() < 1e-8
    assert np.array_equal(model.A, A_before)  # the base model is not modified
    assert result.stats["anchors_changed"] == anchors_change
    # the old Uhead (head refit on the old features, released with the old A) misses the base's share
    head_only = model.A @ fit_head(docs[keep], labels[keep], model.C).w
    assert np.abs(head_only - B_r).max() > 100 * max(np.abs(result.released["B"] - B_r).max(), 1e-12)
    assert np.linalg.norm(head_only - B_r) > 1e-4
    # pre-training documents only (the head keeps its data): the head is refit on the downdated features
    base_only = unlearn_head(model, head, docs[forget], UnlearnConfig(noiseless=True))
    B_base_only = base_r.A @ fit_head(docs, labels, base_r.C).w
    assert np.abs(base_only.released["B"] - B_base_only).max() < 1e-8


def test_sequential_head_requests_start_from_the_downdated_base(corpus):
    docs, labels, config, model = corpus
    head = fit_head(docs, labels, model.C)
    cfg = UnlearnConfig(noiseless=True)
    first = unlearn_head(model, head, docs[:300], cfg, head_forget_docs=docs[:300], head_forget_labels=labels[:300])
    second = unlearn_head(first.base, first.model, docs[300:700], cfg, head_forget_docs=docs[300:700],
                          head_forget_labels=labels[300:700])
    base_r = fit(docs[700:], config, n_words=N)
    B_r = base_r.A @ fit_head(docs[700:], labels[700:], base_r.C).w
    assert np.abs(second.released["B"] - B_r).max() < 1e-8
    assert second.model.deleted_since_training == 700 and second.base.info["deleted_since_training"] == 700


# ---- noise: an empirical (epsilon, delta) check on neighbouring datasets --------------------------------

def privacy_violation(X: np.ndarray, Y: np.ndarray, direction: np.ndarray, epsilon: float) -> float:
    """max over half-spaces O normal to `direction` of P[X in O] - e^eps P[Y in O], both ways round.

    With `direction` the difference of the noiseless outputs these are the optimal (Neyman-Pearson) tests for
    two Gaussians of equal covariance, so with enough samples this estimates the smallest delta the two
    release distributions satisfy at epsilon.
    """
    direction = direction / np.linalg.norm(direction)
    x, y = np.sort(X @ direction), np.sort(Y @ direction)
    grid = np.quantile(np.r_[x, y], np.linspace(0.001, 0.999, 400))
    px = 1 - np.searchsorted(x, grid) / len(x)
    py = 1 - np.searchsorted(y, grid) / len(y)
    return float(max((px - math.exp(epsilon) * py).max(), ((1 - py) - math.exp(epsilon) * (1 - px)).max()))


@pytest.mark.parametrize("kind", ["base", "head"])
def test_noise_covers_neighbouring_datasets_and_the_check_fails_when_it_is_too_small(corpus, kind):
    """Releases after deleting S_f (dataset S minus S_f) against releases of the model trained on S, the same
    sigma, many seeds: the (epsilon, delta) inequality holds at the calibrated sigma and fails at a quarter of it.
    """
    docs, labels, _, model = corpus
    epsilon, delta, trials = 1.0, 0.05, 8000
    config = UnlearnConfig(epsilon=epsilon, delta=delta, utility_threshold=1e6)
    forget = docs[:20]
    if kind == "base":
        result = unlearn_base(model, forget, config)
        after, before = {"A": result.model.A, "R": result.model.R}, {"A": model.A, "R": model.R}
    else:
        head = fit_head(docs, labels, model.C)
        result = unlearn_head(model, head, forget, config, head_forget_docs=forget, head_forget_labels=labels[:20])
        after, before = {"B": result.base.A @ result.model.w}, {"B": model.A @ head.w}
    gap = math.sqrt(sum(float(((after[k] - before[k]) ** 2).sum()) for k in after))
    assert gap > 0 and result.sensitivity == pytest.approx(gap)  # the outputs differ before noise
    assert result.sigma == pytest.approx(gaussian_sigma(epsilon, delta, gap))

    def releases(params, sigma, offset):
        return np.array([np.concatenate([v.ravel() for v in add_noise(params, sigma, offset + s).values()])
                         for s in range(trials)])

    direction = np.concatenate([(after[k] - before[k]).ravel() for k in after])
    for scale, ok in ((1.0, True), (0.7, False), (0.25, False)):  # true delta there: 0.05, 0.15, 0.79
        sigma = result.sigma * scale
        violation = privacy_violation(releases(after, sigma, 0), releases(before, sigma, 10**6), direction, epsilon)
        assert (violation <= delta + 0.03) == ok, (scale, violation)
    # the theory behind the check: at the calibrated sigma the optimal test's violation is below delta
    mu = gap / result.sigma
    t = np.linspace(-5, 5, 2001)
    assert (norm.sf(t - mu) - math.exp(epsilon) * norm.sf(t)).max() <= delta + 1e-9
    # released = noiseless + N(0, sigma^2) with the calibrated sigma
    noise = result.released[next(iter(after))] - after[next(iter(after))]
    assert np.std(noise) == pytest.approx(result.sigma, rel=0.15)
    if kind == "base":
        comparator = release(result.model, result.sigma, seed=config.seed)
        np.testing.assert_allclose(comparator["A"], result.released["A"])  # U(empty, retrain) uses the same sigma


# ---- deletion capacity ---------------------------------------------------------------------------------

def test_deletion_capacity_is_reported_and_enforced(corpus):
    docs, _, _, model = corpus
    cfg = UnlearnConfig()
    small = unlearn_base(model, docs[:5], UnlearnConfig(utility_threshold=1e6))
    per_doc = small.stats["per_doc_sensitivity"]
    assert per_doc > 0 and small.stats["capacity"] > 5
    # the capacity at the default threshold: the largest k whose noise stays within the utility budget
    sigma_max = 0.1 / (N * math.sqrt(2 / math.pi))
    cal = calibrate(per_doc * 5, 5, 0, UnlearnConfig(utility_threshold=1e6), n=N, mass=1.0)
    cap = calibrate(per_doc, 1, 0, UnlearnConfig(noiseless=True), n=N, mass=1.0)["capacity"]
    assert cal["capacity"] > cap
    assert gaussian_sigma(1.0, 1e-5, cap * per_doc) <= sigma_max < gaussian_sigma(1.0, 1e-5, (cap + 1) * per_doc)
    with pytest.raises(UsageError, match="deletion capacity"):
        calibrate(per_doc * (cap + 1), cap + 1, 0, cfg, n=N, mass=1.0)
    calibrate(per_doc * cap, cap, 0, cfg, n=N, mass=1.0)  # at the capacity: accepted
    with pytest.raises(UsageError, match=f"brings this model to {cap + 1} deletions"):
        calibrate(per_doc, 1, cap, cfg, n=N, mass=1.0)  # deletions since training count against it
    with pytest.raises(UsageError, match="deletion capacity"):
        unlearn_base(model, docs[:M_F], cfg)  # the 2,000 documents at epsilon = 1 are beyond it
    # a refused request leaves the model as it was; noiseless requests report but do not enforce
    assert model.info.get("deleted_since_training", 0) == 0
    report = unlearn_base(model, docs[:M_F], UnlearnConfig(noiseless=True)).stats
    assert report["capacity"] is not None and report["capacity"] < M_F and report["deleted_since_training"] == M_F


def test_a_model_saved_without_document_frequencies_keeps_its_anchors(corpus):
    docs, _, _, model = corpus
    old = type(model)(A=model.A, R=model.R, C=model.C, anchors=model.anchors, q_sum=model.q_sum, m=model.m,
                      config=model.config)
    again = type(model).from_bytes(old.to_bytes(), config=model.config)
    assert again.doc_freq is None
    result = unlearn_base(again, docs[:50], UnlearnConfig(noiseless=True))
    assert result.stats["anchor_search"].startswith("kept (model saved without")
    assert np.array_equal(result.model.anchors, model.anchors)
