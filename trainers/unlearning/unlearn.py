"""Unlearners for anchor-word topic models (METHODS.md §11.3-11.4): Ubase, Uhead, Gaussian noise, metrics.

Design choices
- Ubase downdates the stored statistics (Q_sum -= forget documents' pairs, m -= m_f; cost O(m_f L^2)),
  keeps the anchor set fixed and re-solves every word's simplex least squares starting from its old face of
  the simplex. On that face the objective is quadratic with one equality constraint, so the first KKT
  (Newton) step is the exact face minimiser; a word whose step leaves the simplex or violates a multiplier
  sign continues with the active-set iterations (still independent of the number of retained documents).
  The per-word counts are reported (`newton_exact`, `resolved`). Total cost: O(m_f L^2 + n^2 r + n r^2).
- Released parameters (A and R for Ubase, B = A w for Uhead) get N(0, sigma^2) noise with the Gaussian
  mechanism sigma = Delta sqrt(2 ln(1.25/delta)) / epsilon. Delta is caller-supplied or the documented default
  `default_sensitivity` (reconstructed, unverified constants). `noiseless=True` skips the noise for tests.
- Uhead: the downstream head is ridge regression on topic posteriors theta_hat(d) = (H_d / n_d) C. Its stored
  statistics are X^T X and X^T y, so deleting labelled documents is a downdate plus one r x r solve, exactly
  equal to retraining the head on the rest. A and C are only read, never written: A stays bit-identical.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers.unlearning.topic_model import (
    TopicModel,
    as_counts,
    cooccurrence_sum,
    recover,
)


@dataclass
class UnlearnConfig:
    """Options of an unlearning request."""

    epsilon: float = field(default=1.0, metadata={"help": "Privacy epsilon of the (epsilon, delta)-unlearning guarantee."})
    delta: float = field(default=1e-5, metadata={"help": "Privacy delta."})
    sensitivity: float | None = field(
        default=None, metadata={"help": "Delta bound on ||U(S_f) - U(empty, retrain)||_2; default: default_sensitivity()."})
    capacity: int = field(
        default=0, metadata={"help": "Declared deletion capacity m_U used to calibrate noise (0 = the forget set's size)."})
    sensitivity_scale: float = field(default=1.0, metadata={"help": "kappa: multiplies the default sensitivity."})
    task_q: float = field(default=1.0, metadata={"help": "Head task constant q in [1/r, 1] (Uhead sensitivity)."})
    noiseless: bool = field(default=False, metadata={"help": "Skip the noise (testing only: no guarantee)."})
    newton_only: bool = field(
        default=False, metadata={"help": "One Newton step per word, then project onto the simplex (no active-set "
                                         "continuation): cheaper, approximate."})
    seed: int = field(default=0, metadata={"help": "Seed of the Gaussian noise."})


# ---- noise calibration ------------------------------------------------------------------------------

def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Gaussian mechanism: sigma = Delta * sqrt(2 ln(1.25 / delta)) / epsilon."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise ConfigError(f"need epsilon > 0 and 0 < delta < 1, got epsilon={epsilon}, delta={delta}")
    if sensitivity < 0:
        raise ConfigError(f"sensitivity must be >= 0, got {sensitivity}")
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def default_sensitivity(kind: str, m_u: int, m: int, r: int, p_min: float, *, q: float = 1.0,
                        scale: float = 1.0) -> float:
    """Documented default Delta (reconstruction of the paper's bound; constants unverified).

    Deleting m_U of m documents moves the normalised co-occurrence matrix by at most 2 m_U / (m - m_U) in l1
    (exact: each document's pairs carry mass 1). Anchor-word recovery amplifies an l1 error in Q by about r / p
    (p = smallest anchor probability), giving Delta_base = kappa * 2 m_U/(m - m_U) * r / p. The head releases
    one n-vector B = A w whose bound is smaller by the factor r q (q in [1/r, 1], task dependent), matching
    the head/base capacity ratio r q of METHODS §11.5: Delta_head = Delta_base / (r q).
    """
    if m_u >= m:
        raise UsageError(f"cannot delete {m_u} of {m} documents: the forget set must be smaller than the corpus")
    if not 1.0 / r - 1e-12 <= q <= 1.0:
        raise ConfigError(f"task_q must lie in [1/r, 1] = [{1.0 / r:.3g}, 1], got {q}")
    base = scale * 2.0 * m_u / (m - m_u) * r / max(p_min, 1e-12)
    if kind == "base":
        return base
    if kind == "head":
        return base / (r * q)
    raise ConfigError(f"unknown unlearning kind '{kind}'; expected base or head")


def min_anchor_probability(model: TopicModel) -> float:
    return float(model.A[model.anchors, np.arange(model.n_topics)].min())


# ---- Ubase ------------------------------------------------------------------------------------------

@dataclass
class UnlearnResult:
    model: TopicModel              # noiseless unlearned model with downdated statistics (kept private)
    released: dict[str, np.ndarray]  # what is published: noisy A and R (or B for the head)
    sigma: float
    sensitivity: float
    stats: dict


def unlearn_base(model: TopicModel, forget_docs, config: UnlearnConfig | None = None) -> UnlearnResult:
    """Ubase: remove the forget documents' statistics, keep anchors, re-solve, rebuild A and R, add noise."""
    config = config or UnlearnConfig()
    start = time.perf_counter()
    H_f = as_counts(forget_docs, model.n_words)
    if H_f.shape[1] != model.n_words:
        raise UsageError(f"forget documents have {H_f.shape[1]} word columns, the model has {model.n_words}")
    q_f, m_f = cooccurrence_sum(H_f)
    if m_f >= model.m:
        raise UsageError(f"the forget set ({m_f} documents) must be smaller than the training set ({model.m})")
    q_new = model.q_sum - q_f
    floor = -1e-9 * max(1.0, float(np.abs(model.q_sum).max()))
    if q_new.min() < floor:
        raise UsageError("the forget documents are not part of this model's training data "
                         "(removing them makes a co-occurrence count negative)")
    np.maximum(q_new, 0.0, out=q_new)
    m_new = model.m - m_f
    anchor_mass = q_new[model.anchors].sum(axis=1)
    if (anchor_mass <= 0).any():  # the documented failure mode (METHODS §11.5): no guarantee without the anchor
        lost = [model.vocab[a] if model.vocab else int(a) for a in model.anchors[anchor_mass <= 0]]
        raise UsageError(f"the forget set removes every occurrence of anchor word(s) {lost}: the unlearning "
                         "guarantee needs the anchors, so retrain instead (skillweave topic-model train)")
    A, R, C, iters = recover(q_new, m_new, model.anchors, support=model.C > 0,
                             max_iter=1 if config.newton_only else model.config.max_iter, exact=not config.newton_only)
    forget_words = np.flatnonzero(np.asarray(H_f.sum(axis=0)).ravel() > 0)
    new = TopicModel(A=A, R=R, C=C, anchors=model.anchors.copy(), q_sum=q_new, m=m_new, config=model.config,
                     vocab=model.vocab)
    m_u = max(config.capacity, m_f)
    sensitivity = config.sensitivity
    if sensitivity is None:
        sensitivity = default_sensitivity("base", m_u, model.m, model.n_topics, min_anchor_probability(model),
                                          scale=config.sensitivity_scale)
    sigma = 0.0 if config.noiseless else gaussian_sigma(config.epsilon, config.delta, sensitivity)
    released = add_noise({"A": A, "R": R}, sigma, config.seed)
    stats = {
        "forget_docs": int(m_f), "retained_docs": int(m_new), "forget_words": int(len(forget_words)),
        "anchors_in_forget": int(np.isin(model.anchors, forget_words).sum()),
        "anchor_mass_left": float((anchor_mass / np.maximum(model.q_sum[model.anchors].sum(axis=1), 1e-300)).min()),
        "newton_exact": int((iters == 1).sum()), "resolved": int((iters > 1).sum()),
        "seconds": time.perf_counter() - start,
    }
    return UnlearnResult(model=new, released=released, sigma=sigma, sensitivity=float(sensitivity), stats=stats)


def release(model: TopicModel, config: UnlearnConfig, m_u: int) -> UnlearnResult:
    """U(empty, A(S'), T(S')): the comparator, a (re)trained model released with the same noise calibration."""
    return unlearn_base(model, np.zeros((0, 2), dtype=np.int64), UnlearnConfig(**{
        **config.__dict__, "capacity": max(config.capacity, m_u)}))


def add_noise(params: dict[str, np.ndarray], sigma: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v.copy() if sigma == 0 else v + rng.normal(0.0, sigma, size=v.shape)) for k, v in params.items()}


# ---- Uhead ------------------------------------------------------------------------------------------

def topic_posteriors(docs, C: np.ndarray) -> np.ndarray:
    """theta_hat(d) = (H_d / n_d) C: the average per-word topic posterior p(z | w) over the document."""
    H = as_counts(docs, C.shape[0])
    lengths = np.asarray(H.sum(axis=1)).ravel()
    X = np.asarray(H @ C)
    return np.divide(X, lengths[:, None], out=np.zeros_like(X), where=lengths[:, None] > 0)


@dataclass
class TopicHead:
    """A ridge-regression linear head on topic posteriors, with its downdatable statistics."""

    w: np.ndarray
    gram: np.ndarray   # X^T X
    xty: np.ndarray    # X^T y
    n: int
    ridge: float = 1e-3

    def predict(self, features: np.ndarray) -> np.ndarray:
        return (features @ self.w > 0.5).astype(int)


def fit_head(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> TopicHead:
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    gram, xty = X.T @ X, X.T @ y
    w = np.linalg.solve(gram + ridge * np.eye(len(gram)), xty)
    return TopicHead(w=w, gram=gram, xty=xty, n=len(y), ridge=ridge)


def unlearn_head(head: TopicHead, A: np.ndarray, forget_features: np.ndarray, forget_labels: np.ndarray,
                 config: UnlearnConfig | None = None, *, p_min: float | None = None) -> UnlearnResult:
    """Uhead: downdate the head's statistics, re-solve w, release B = A w + noise. A is never modified."""
    config = config or UnlearnConfig()
    start = time.perf_counter()
    X = np.asarray(forget_features, dtype=np.float64)
    y = np.asarray(forget_labels, dtype=np.float64)
    if len(X) >= head.n:
        raise UsageError(f"the forget set ({len(X)} examples) must be smaller than the head's data ({head.n})")
    gram, xty = head.gram - X.T @ X, head.xty - X.T @ y
    w = np.linalg.solve(gram + head.ridge * np.eye(len(gram)), xty)
    new = TopicHead(w=w, gram=gram, xty=xty, n=head.n - len(y), ridge=head.ridge)
    r = A.shape[1]
    sensitivity = config.sensitivity
    if sensitivity is None:
        p = p_min if p_min is not None else float(np.sort(A.max(axis=0))[0])
        sensitivity = default_sensitivity("head", max(config.capacity, len(y)), head.n, r, p, q=config.task_q,
                                          scale=config.sensitivity_scale)
    sigma = 0.0 if config.noiseless else gaussian_sigma(config.epsilon, config.delta, sensitivity)
    released = add_noise({"B": A @ w}, sigma, config.seed)
    stats = {"forget_docs": len(y), "retained_docs": new.n, "seconds": time.perf_counter() - start}
    return UnlearnResult(model=new, released=released, sigma=sigma, sensitivity=float(sensitivity),  # type: ignore[arg-type]
                         stats=stats)


# ---- metrics ----------------------------------------------------------------------------------------

def matched_l1(A_est: np.ndarray, A_true: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean column l1 error minimised over column permutations (Hungarian); returns (error, permutation)."""
    cost = np.abs(A_est[:, :, None] - A_true[:, None, :]).sum(axis=0)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(A_true.shape[1], dtype=int)
    perm[cols] = rows  # A_est[:, perm[k]] matches A_true[:, k]
    return float(cost[rows, cols].mean()), perm


def model_distance(A_u: np.ndarray, A_r: np.ndarray) -> dict[str, float]:
    """Distance between an unlearned and a retrained model: entrywise l1, l2, max, after column matching."""
    _, perm = matched_l1(A_r, A_u)
    diff = A_r[:, perm] - A_u
    return {"l1": float(np.abs(diff).sum()), "l2": float(np.linalg.norm(diff)), "max": float(np.abs(diff).max())}


def two_sample_accuracy(X: np.ndarray, Y: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a logistic classifier telling samples of X from samples of Y (0.5 = indistinguishable).

    Trained on half of each sample (standardised features, a few hundred gradient steps), tested on the rest.
    """
    rng = np.random.default_rng(seed)
    Z = np.vstack([X, Y]).astype(np.float64)
    t = np.r_[np.zeros(len(X)), np.ones(len(Y))]
    order = rng.permutation(len(Z))
    Z, t = Z[order], t[order]
    half = len(Z) // 2
    mu, sd = Z[:half].mean(axis=0), Z[:half].std(axis=0) + 1e-12
    Z = (Z - mu) / sd
    Z = np.hstack([Z, np.ones((len(Z), 1))])
    w = np.zeros(Z.shape[1])
    for _ in range(300):
        p = 1.0 / (1.0 + np.exp(-Z[:half] @ w))
        w -= 0.5 * (Z[:half].T @ (p - t[:half]) / half + 1e-2 * w)
    pred = (Z[half:] @ w) > 0
    return float((pred == (t[half:] > 0.5)).mean())
