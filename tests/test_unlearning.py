"""Topic-model learner and unlearners on planted data (experiments T1, T2, T4, T5 of
docs/methods.md#verification-unlearning in small form; recorded full-size results: docs/results/unlearning.md)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.optimize import minimize

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers.unlearning.topic_model import (
    TopicModel,
    TopicModelConfig,
    cooccurrence_sum,
    fit,
    planted_topics,
    project_to_simplex,
    sample_documents,
    simplex_least_squares,
)
from skillweave.trainers.unlearning.unlearn import (
    UnlearnConfig,
    fit_head,
    gaussian_delta,
    gaussian_sigma,
    matched_l1,
    model_distance,
    release,
    topic_posteriors,
    two_sample_accuracy,
    unlearn_base,
    unlearn_head,
)

N, R = 200, 5


@pytest.fixture(scope="module")
def planted():
    A, anchors = planted_topics(N, R, anchor_prob=0.05, seed=0)
    docs, theta = sample_documents(A, 200_000, length=2, seed=1)
    config = TopicModelConfig(n_topics=R, anchor_min_docs=1000)
    return A, anchors, docs, theta, config, fit(docs, config, n_words=N)


def test_cooccurrence_estimator_matches_definition_for_any_length():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 6, size=n) for n in (1, 2, 3, 5, 7)]
    import scipy.sparse as sp

    H = sp.csr_matrix(np.array([np.bincount(d, minlength=6) for d in docs], dtype=float))
    q, m = cooccurrence_sum(H)
    expected = np.zeros((6, 6))
    for d in docs:
        if len(d) < 2:
            continue
        h = np.bincount(d, minlength=6).astype(float)
        expected += (np.outer(h, h) - np.diag(h)) / (len(d) * (len(d) - 1))
    assert m == 4  # the one-word document has no pair
    np.testing.assert_allclose(q, expected, atol=1e-12)
    np.testing.assert_allclose(q.sum(), 4.0)  # each document's pairs carry mass 1


def test_simplex_least_squares_is_optimal_against_a_generic_solver():
    rng = np.random.default_rng(3)
    X = rng.random((4, 12))
    G = X @ X.T
    g = rng.random((30, 12)) @ X.T
    C, iters = simplex_least_squares(G, g)
    assert np.allclose(C.sum(axis=1), 1) and (C >= 0).all()
    for i in range(0, 30, 3):
        f = lambda c, i=i: 0.5 * c @ G @ c - g[i] @ c  # noqa: E731
        ref = minimize(f, np.full(4, 0.25), jac=lambda c, i=i: G @ c - g[i], bounds=[(0, 1)] * 4, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda c: c.sum() - 1}], options={"ftol": 1e-15})
        assert f(C[i]) <= ref.fun + 1e-12
    assert (C == 0).any()  # the test exercises active constraints


def test_project_to_simplex():
    P = project_to_simplex(np.array([[0.5, 0.5, 0.5], [2.0, -1.0, 0.0], [0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(P, [[1 / 3] * 3, [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])


def test_t1_anchors_recovered_and_error_falls_with_m(planted):
    A, anchors, docs, _, config, model = planted
    assert sorted(model.anchors.tolist()) == anchors.tolist()
    err_full, _ = matched_l1(model.A, A)
    small = fit(docs[:20_000], TopicModelConfig(n_topics=R, anchor_min_docs=100), n_words=N)
    err_small, _ = matched_l1(small.A, A)
    assert err_full < 0.2
    assert err_full < err_small / 2  # 10x the documents: error falls like 1/sqrt(m) (factor ~3.2)


def test_t2_noiseless_unlearning_equals_retraining_while_anchors_hold(planted):
    _, _, docs, _, config, model = planted
    rng = np.random.default_rng(0)
    for m_f in (10, 100, 1000):
        forget = rng.choice(len(docs), m_f, replace=False)
        keep = np.setdiff1d(np.arange(len(docs)), forget)
        result = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True))
        retrained = fit(docs[keep], config, n_words=N)
        assert sorted(retrained.anchors.tolist()) == sorted(result.model.anchors.tolist())
        assert model_distance(result.model.A, retrained.A)["l1"] < 1e-8
        assert result.model.m == len(keep)
        assert result.stats["newton_exact"] >= 0.9 * N
        assert result.released["A"] is not result.model.A and np.array_equal(result.released["A"], result.model.A)


def test_t2_newton_only_gap_grows_with_forget_fraction(planted):
    _, _, docs, _, config, model = planted
    rng = np.random.default_rng(1)
    gaps = []
    for m_f in (100, 50_000):
        forget = rng.choice(len(docs), m_f, replace=False)
        keep = np.setdiff1d(np.arange(len(docs)), forget)
        result = unlearn_base(model, docs[forget], UnlearnConfig(noiseless=True, newton_only=True))
        gaps.append(model_distance(result.model.A, fit(docs[keep], config, n_words=N).A)["l1"])
    assert gaps[0] < 1e-4 < gaps[1]  # projection after one step: small at 0.05%, visible at 25%


def test_unlearning_rejects_documents_not_in_the_training_set(planted):
    *_, model = planted
    stranger = np.full((50, 2), 7)  # a pair (7, 7) 50 times: more than the corpus holds
    assert model.q_sum[7, 7] < 50
    with pytest.raises(UsageError, match="not part of this model"):
        unlearn_base(model, stranger, UnlearnConfig(noiseless=True))


def test_noise_calibration_and_two_sample_indistinguishability(planted):
    _, _, docs, _, config, model = planted
    sigma = gaussian_sigma(1.0, 1e-5, 2.0)  # analytic Gaussian mechanism: tight, below the classical formula
    assert gaussian_delta(1.0, 2.0 / sigma) == pytest.approx(1e-5, rel=1e-6)
    assert gaussian_delta(1.0, 2.0 / (0.99 * sigma)) > 1e-5
    assert 2.0 * 3.6 < sigma < 2.0 * np.sqrt(2 * np.log(1.25e5))
    assert gaussian_sigma(0.5, 1e-5, 1.0) < np.sqrt(2 * np.log(1.25e5)) / 0.5
    assert gaussian_sigma(1.0, 1e-5, 0.0) == 0.0
    with pytest.raises(ConfigError, match="epsilon"):
        gaussian_sigma(0.0, 1e-5, 1.0)
    forget = np.arange(100)
    retrained = fit(docs[100:], config, n_words=N)
    runs = [unlearn_base(model, docs[forget], UnlearnConfig(sensitivity=1e-3, utility_threshold=1e6, seed=s))
            for s in range(150)]
    sigma = runs[0].sigma
    ours = [r.released["A"].ravel() for r in runs]
    theirs = [release(retrained, sigma, seed=1000 + s)["A"].ravel() for s in range(150)]
    acc = two_sample_accuracy(np.array(ours), np.array(theirs))
    assert 0.35 < acc < 0.65
    # the same test separates models that really differ (it can fail)
    shifted = [a + 0.01 for a in theirs]
    assert two_sample_accuracy(np.array(ours), np.array(shifted)) > 0.9


def test_t5_head_unlearning_equals_retraining_base_and_head(planted):
    _, _, docs, theta, config, model = planted
    A_hash = hashlib.sha256(model.A.tobytes()).hexdigest()
    labels = (theta[:, 0] > 0.5).astype(float)
    head = fit_head(docs, labels, model.C)
    assert (head.predict(topic_posteriors(docs, model.C)) == labels).mean() > 0.8
    result = unlearn_head(model, head, docs[:500], UnlearnConfig(noiseless=True), head_forget_docs=docs[:500],
                          head_forget_labels=labels[:500])
    base_r = fit(docs[500:], config, n_words=N)
    head_r = fit_head(docs[500:], labels[500:], base_r.C)
    np.testing.assert_allclose(result.model.w, head_r.w, atol=1e-9)
    np.testing.assert_allclose(result.released["B"], base_r.A @ head_r.w, atol=1e-10)
    assert np.abs(result.base.A - base_r.A).max() < 1e-12
    assert hashlib.sha256(model.A.tobytes()).hexdigest() == A_hash  # the base model is never modified
    assert result.released["B"].shape == (N,)


def test_model_round_trips_through_bytes(planted):
    *_, model = planted
    again = TopicModel.from_bytes(model.to_bytes(), config=model.config)
    assert np.array_equal(again.A, model.A) and np.array_equal(again.q_sum, model.q_sum) and again.m == model.m


def test_t4_deleting_every_document_with_an_anchor(planted):
    """Fixed anchors refuse it (no guarantee without the anchor); re-searched anchors follow retraining."""
    _, _, docs, _, config, model = planted
    anchor = int(model.anchors[0])
    adversarial = docs[(docs == anchor).any(axis=1)]
    with pytest.raises(UsageError, match="anchor word"):
        unlearn_base(model, adversarial, UnlearnConfig(noiseless=True, keep_anchors=True))
    most = unlearn_base(model, adversarial[: len(adversarial) // 2], UnlearnConfig(noiseless=True, keep_anchors=True))
    assert 0.3 < most.stats["anchor_mass_left"] < 0.7
    result = unlearn_base(model, adversarial, UnlearnConfig(noiseless=True))
    retrained = fit(docs[~(docs == anchor).any(axis=1)], config, n_words=N)
    assert anchor not in result.model.anchors and np.array_equal(result.model.anchors, retrained.anchors)
    assert np.abs(result.model.A - retrained.A).max() < 1e-10


def test_run_entry_point_on_a_planted_corpus():
    from skillweave.trainers.unlearning.train import RunConfig, run

    out = run(RunConfig(model=TopicModelConfig(n_topics=R, anchor_min_docs=1000), planted_docs=200_000))
    assert out["anchors_recovered"] and out["matched_l1"] < 0.2 and out["m"] == 200_000


def test_cooccurrence_small_and_large_paths_agree(monkeypatch):
    """Forget sets use the direct pair sum, corpora the sparse product: both give the same statistic."""
    import scipy.sparse as sp

    from skillweave.trainers.unlearning import topic_model

    rng = np.random.default_rng(5)
    H = sp.csr_matrix(rng.poisson(0.4, size=(300, 40)).astype(float))
    small = cooccurrence_sum(H)
    monkeypatch.setattr(topic_model, "PAIR_LIMIT", -1)
    large = cooccurrence_sum(H)
    assert small[1] == large[1] and np.abs(small[0] - large[0]).max() < 1e-12
