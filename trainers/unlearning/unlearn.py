"""Unlearners for anchor-word topic models and their linear heads: Ubase, Uhead, noise, capacity, metrics.

Design choices
- Ubase downdates the stored statistics (Q_sum, m and the document frequencies, minus the forget
  documents' contributions; cost O(m_f L^2)), re-runs the anchor search on the downdated statistics (the
  learner's own `search_anchors`, O(n^2 + candidates * n * r)) and re-solves every word's simplex least
  squares, warm-started from its old face when the anchors did not change. Every step is the learner's step
  on statistics equal to those of the retained documents, so the noiseless result equals retraining (up to
  floating-point rounding of the subtraction); nothing depends on the number of retained documents.
  `keep_anchors=True` skips the search (the paper's fixed-anchor unlearner): equal to retraining only while
  retraining would keep the anchors, refused when a forget set removes every occurrence of an anchor.
- Uhead (the method's setting: a topic model pre-trained on documents, a ridge head fine-tuned on its topic
  posteriors theta_hat(d) = (H_d / n_d) C) downdates the base statistics exactly as Ubase does, refits the
  head on the downdated features and releases B~ = A~ w~ plus noise. The head stores its statistics in word
  space (D^T D and D^T y, D = length-normalised counts), so the refit on the new C~ is C~^T (D^T D) C~: an
  n x n x r product, again independent of the number of documents. The base model is only read; the
  downdated base is returned privately (`UnlearnResult.base`) for later requests on the same head.
- Noise: the Gaussian mechanism on every released entry, sigma the smallest value whose exact privacy curve
  (Balle and Wang 2018) meets (epsilon, delta) for sensitivity Delta (`gaussian_sigma`). Delta is
  caller-supplied, or measured per request: the l2 distance between the noiseless release after deletion
  and the release before it (the neighbouring datasets S \\ S_f and S), scaled linearly to a declared
  capacity m_U > m_f. It is an empirical per-request value, not a worst-case bound (docs/unlearning.md).
- Deletion capacity: the most deletions (since the last full training) whose noise keeps the expected l1
  mass of the noise per released n-vector under `utility_threshold` times that vector's l1 mass, at the
  request's measured per-document sensitivity. A request beyond it is refused.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.special import log_ndtr, ndtr

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers.settings import UnlearnConfig
from skillweave.trainers.unlearning.topic_model import (
    TopicModel,
    as_counts,
    cooccurrence_sum,
    document_frequencies,
    recover,
    search_anchors,
)

# ---- noise calibration and deletion capacity ----------------------------------------------------------

def gaussian_delta(epsilon: float, ratio: float) -> float:
    """The exact delta(epsilon) of the Gaussian mechanism with Delta / sigma = ratio (Balle and Wang 2018):
    Phi(ratio/2 - epsilon/ratio) - e^epsilon Phi(-ratio/2 - epsilon/ratio)."""
    if ratio <= 0:
        return 0.0
    a, b = ratio / 2 - epsilon / ratio, -ratio / 2 - epsilon / ratio
    return float(ndtr(a) - math.exp(min(epsilon + float(log_ndtr(b)), 700.0)))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest sigma with gaussian_delta(epsilon, Delta / sigma) <= delta (the analytic Gaussian mechanism).

    Valid for every epsilon > 0; the classical Delta sqrt(2 ln(1.25/delta)) / epsilon is proven only for
    epsilon < 1, where it is larger than this value.
    """
    if epsilon <= 0 or not 0 < delta < 1:
        raise ConfigError(f"need epsilon > 0 and 0 < delta < 1, got epsilon={epsilon}, delta={delta}")
    if sensitivity < 0:
        raise ConfigError(f"sensitivity must be >= 0, got {sensitivity}")
    return 0.0 if sensitivity == 0 else sensitivity / _largest_ratio(float(epsilon), float(delta))


@lru_cache(maxsize=256)
def _largest_ratio(epsilon: float, delta: float) -> float:
    """The largest Delta / sigma with gaussian_delta(epsilon, ratio) <= delta (sigma is linear in Delta)."""
    lo, hi = 1e-6, 1e6  # bisection: delta(epsilon, ratio) grows with ratio
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if gaussian_delta(epsilon, mid) <= delta else (lo, mid)
        if hi / lo < 1 + 1e-12:
            break
    return lo


def deletion_capacity(per_doc_sensitivity: float, sigma_max: float, epsilon: float, delta: float) -> int | None:
    """Largest k with gaussian_sigma(epsilon, delta, k * per_doc_sensitivity) <= sigma_max (None: unbounded)."""
    if per_doc_sensitivity <= 0:
        return None
    return int(math.floor(sigma_max / gaussian_sigma(epsilon, delta, per_doc_sensitivity) + 1e-9))


def utility_sigma_max(threshold: float, n: int, mass: float) -> float:
    """sigma whose expected l1 noise over an n-vector, n sigma sqrt(2/pi), is `threshold` times `mass`."""
    return threshold * mass / (n * math.sqrt(2 / math.pi))


def calibrate(gap: float, m_f: int, deleted_before: int, config: UnlearnConfig, *, n: int, mass: float) -> dict:
    """Delta, sigma and the deletion capacity of one request; refuses a request beyond the capacity.

    gap = ||release after - release before||_2 (noiseless), measured for this request's m_f deletions.
    """
    if config.utility_threshold <= 0:
        raise ConfigError(f"utility_threshold must be > 0, got {config.utility_threshold}")
    m_u = max(config.capacity, m_f)
    if config.sensitivity is not None:
        sensitivity, source = float(config.sensitivity), "given"
        per_doc = sensitivity / m_u if m_u else 0.0
    else:
        per_doc = gap / m_f if m_f else 0.0
        sensitivity, source = per_doc * m_u, "measured"
    sigma = 0.0 if config.noiseless else gaussian_sigma(config.epsilon, config.delta, sensitivity)
    sigma_max = utility_sigma_max(config.utility_threshold, n, mass)
    capacity = deletion_capacity(per_doc, sigma_max, config.epsilon, config.delta) if per_doc > 0 else None
    total = deleted_before + m_f
    if not config.noiseless and capacity is not None and max(total, m_u) > capacity:
        raise UsageError(
            f"deleting {m_f} document(s) brings this model to {max(total, m_u)} deletions since training, beyond "
            f"its deletion capacity of {capacity} at epsilon={config.epsilon:g}, delta={config.delta:g} (noise "
            f"would exceed {config.utility_threshold:g} of the release's mass); retrain instead "
            "(skillweave topic-model train), or raise --epsilon or --utility-threshold")
    return {"sensitivity": float(sensitivity), "sensitivity_source": source, "sigma": float(sigma),
            "per_doc_sensitivity": float(per_doc), "capacity": capacity, "deleted_since_training": total,
            "sigma_max": float(sigma_max)}


def add_noise(params: dict[str, np.ndarray], sigma: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v.copy() if sigma == 0 else v + rng.normal(0.0, sigma, size=v.shape)) for k, v in params.items()}


def release(model: TopicModel, sigma: float, seed: int = 0) -> dict[str, np.ndarray]:
    """U(empty, A(S'), T(S')): a (re)trained model's A and R released with the given noise."""
    return add_noise({"A": model.A, "R": model.R}, sigma, seed)


def release_distance(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> float:
    """l2 distance between two releases (all released entries together)."""
    return float(math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in after)))


# ---- Ubase ------------------------------------------------------------------------------------------

@dataclass
class UnlearnResult:
    model: TopicModel              # noiseless unlearned model with downdated statistics (kept private)
    released: dict[str, np.ndarray]  # what is published: noisy A and R (or B for the head)
    sigma: float
    sensitivity: float
    stats: dict
    base: TopicModel | None = None   # Uhead: the downdated base model (private; the given base is unchanged)


def min_anchor_probability(model: TopicModel) -> float:
    return float(model.A[model.anchors, np.arange(model.n_topics)].min())


def downdate_base(model: TopicModel, forget_docs, config: UnlearnConfig | None = None) -> tuple[TopicModel, dict]:
    """The deterministic part of Ubase: downdated statistics, anchors (re-searched or kept), A, R, C.

    Returns the new (noiseless) model and statistics of the step. `model` is not modified.
    """
    config = config or UnlearnConfig()
    H_f = as_counts(forget_docs, model.n_words)
    if H_f.shape[1] != model.n_words:
        raise UsageError(f"forget documents have {H_f.shape[1]} word columns, the model has {model.n_words}")
    q_f, m_f = cooccurrence_sum(H_f)
    if m_f >= model.m:
        raise UsageError(f"the forget set ({m_f} documents) must be smaller than the training set ({model.m})")
    q_new = model.q_sum - q_f
    floor = -1e-9 * max(1.0, float(model.q_sum.max()))  # Q_sum >= 0
    foreign = UsageError("the forget documents are not part of this model's training data "
                         "(removing them makes a co-occurrence count negative)")
    if q_new.min() < floor:
        raise foreign
    np.maximum(q_new, 0.0, out=q_new)
    m_new = model.m - m_f
    doc_freq = pair_df = None
    if model.doc_freq is not None and model.pair_df is not None:
        df_f, pdf_f = document_frequencies(H_f)
        doc_freq, pair_df = model.doc_freq - df_f, model.pair_df - pdf_f
        if doc_freq.min() < 0 or pair_df.min() < 0:
            raise foreign
        gone = np.flatnonzero(pair_df == 0)  # no retained document pairs this word: row and column exactly 0
        if len(gone):
            q_new[gone, :] = 0.0
            q_new[:, gone] = 0.0
    old_mass = np.maximum(model.q_sum[model.anchors].sum(axis=1), 1e-300)
    anchor_mass = q_new[model.anchors].sum(axis=1)
    search = "re-searched" if not config.keep_anchors and doc_freq is not None else (
        "kept" if config.keep_anchors else "kept (model saved without document frequencies)")
    if search == "re-searched":
        anchors = search_anchors(q_new, doc_freq, model.config)
    else:
        if (anchor_mass <= 0).any():  # no guarantee without the anchor: the fixed-anchor failure mode
            lost = [model.vocab[a] if model.vocab else int(a) for a in model.anchors[anchor_mass <= 0]]
            raise UsageError(f"the forget set removes every occurrence of anchor word(s) {lost}: with fixed anchors "
                             "there is no guarantee; drop --keep-anchors (re-search them) or retrain")
        anchors = model.anchors.copy()
    changed = not np.array_equal(anchors, model.anchors)
    A, R, C, iters = recover(q_new, m_new, anchors, support=None if changed else model.C > 0,
                             max_iter=1 if config.newton_only else model.config.max_iter,
                             exact=not config.newton_only)
    forget_words = np.flatnonzero(np.asarray(H_f.sum(axis=0)).ravel() > 0)
    deleted = int(model.info.get("deleted_since_training", 0))
    new = TopicModel(A=A, R=R, C=C, anchors=anchors, q_sum=q_new, m=m_new, config=model.config, vocab=model.vocab,
                     info={**model.info, "deleted_since_training": deleted + int(m_f)},
                     doc_freq=doc_freq, pair_df=pair_df)
    stats = {
        "forget_docs": int(m_f), "retained_docs": int(m_new), "forget_words": int(len(forget_words)),
        "anchor_search": search, "anchors_changed": bool(changed),
        "anchors_before": model.anchors.tolist(), "anchors_after": anchors.tolist(),
        "anchors_in_forget": int(np.isin(model.anchors, forget_words).sum()),
        "anchor_mass_left": float((anchor_mass / old_mass).min()),
        "newton_exact": int((iters == 1).sum()), "resolved": int((iters > 1).sum()),
    }
    return new, stats


def unlearn_base(model: TopicModel, forget_docs, config: UnlearnConfig | None = None) -> UnlearnResult:
    """Ubase: downdate the statistics, re-search the anchors, re-solve, rebuild A and R, add calibrated noise."""
    config = config or UnlearnConfig()
    start = time.perf_counter()
    new, stats = downdate_base(model, forget_docs, config)
    before, after = {"A": model.A, "R": model.R}, {"A": new.A, "R": new.R}
    cal = calibrate(release_distance(before, after), stats["forget_docs"],
                    int(model.info.get("deleted_since_training", 0)), config, n=model.n_words, mass=1.0)
    released = add_noise(after, cal["sigma"], config.seed)
    stats.update({k: v for k, v in cal.items() if k not in ("sigma", "sensitivity")},
                 seconds=time.perf_counter() - start)
    return UnlearnResult(model=new, released=released, sigma=cal["sigma"], sensitivity=cal["sensitivity"], stats=stats)


# ---- Uhead ------------------------------------------------------------------------------------------

def normalized_docs(docs, n_words: int) -> sp.csr_matrix:
    """D: each document's counts divided by its length (empty documents stay zero)."""
    H = as_counts(docs, n_words)
    lengths = np.asarray(H.sum(axis=1)).ravel()
    inv = np.divide(1.0, lengths, out=np.zeros_like(lengths), where=lengths > 0)
    return sp.csr_matrix(sp.diags(inv) @ H)


def topic_posteriors(docs, C: np.ndarray) -> np.ndarray:
    """theta_hat(d) = (H_d / n_d) C: the average per-word topic posterior p(z | w) over the document."""
    return np.asarray(normalized_docs(docs, C.shape[0]) @ C)


@dataclass
class TopicHead:
    """A ridge-regression linear head on topic posteriors, with its downdatable word-space statistics.

    With D the length-normalised counts of the head's documents and X = D C its features, X^T X = C^T (D^T D) C
    and X^T y = C^T (D^T y): storing D^T D and D^T y lets the head be refit on any new C without the documents.
    """

    w: np.ndarray
    doc_gram: np.ndarray   # D^T D (n x n)
    doc_xty: np.ndarray    # D^T y (n)
    n: int
    ridge: float = 1e-3
    deleted_since_training: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        return (features @ self.w > 0.5).astype(int)


def solve_head(doc_gram: np.ndarray, doc_xty: np.ndarray, C: np.ndarray, ridge: float) -> np.ndarray:
    gram = C.T @ doc_gram @ C
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), C.T @ doc_xty)


def fit_head(docs, labels, C: np.ndarray, ridge: float = 1e-3) -> TopicHead:
    """Ridge head on the topic posteriors of `docs` under C (retraining the head = this on its retained data)."""
    D = normalized_docs(docs, C.shape[0])
    y = np.asarray(labels, dtype=np.float64)
    if D.shape[0] != len(y):
        raise UsageError(f"{D.shape[0]} documents but {len(y)} labels")
    doc_gram, doc_xty = (D.T @ D).toarray(), np.asarray(D.T @ y).ravel()
    return TopicHead(w=solve_head(doc_gram, doc_xty, C, ridge), doc_gram=doc_gram, doc_xty=doc_xty, n=len(y),
                     ridge=ridge)


def unlearn_head(model: TopicModel, head: TopicHead, forget_docs, config: UnlearnConfig | None = None, *,
                 head_forget_docs=None, head_forget_labels=None) -> UnlearnResult:
    """Uhead: downdate the base statistics as Ubase does, refit the head on the downdated features, release
    B~ = A~ w~ + noise. `forget_docs` leave the base's (pre-training) statistics; `head_forget_docs` with
    their labels leave the head's own data (the same documents when the head was trained on the base corpus).
    `model` is not modified; the downdated base is returned in `result.base` (private).
    """
    config = config or UnlearnConfig()
    start = time.perf_counter()
    base, stats = downdate_base(model, forget_docs, config)
    doc_gram, doc_xty, n = head.doc_gram, head.doc_xty, head.n
    m_head = 0
    if head_forget_docs is not None:
        D_f = normalized_docs(head_forget_docs, model.n_words)
        y_f = np.asarray(head_forget_labels, dtype=np.float64)
        if D_f.shape[0] != len(y_f):
            raise UsageError(f"{D_f.shape[0]} head forget documents but {len(y_f)} labels")
        m_head = len(y_f)
        if m_head >= n:
            raise UsageError(f"the forget set ({m_head} examples) must be smaller than the head's data ({n})")
        doc_gram = doc_gram - (D_f.T @ D_f).toarray()
        doc_xty = doc_xty - np.asarray(D_f.T @ y_f).ravel()
        n -= m_head
    w = solve_head(doc_gram, doc_xty, base.C, head.ridge)
    m_f = max(stats["forget_docs"], m_head)
    new = TopicHead(w=w, doc_gram=doc_gram, doc_xty=doc_xty, n=n, ridge=head.ridge,
                    deleted_since_training=head.deleted_since_training + m_f)
    B_before, B_after = model.A @ head.w, base.A @ w
    cal = calibrate(float(np.linalg.norm(B_after - B_before)), m_f, head.deleted_since_training, config,
                    n=model.n_words, mass=max(float(np.abs(B_before).sum()), 1e-300))
    released = add_noise({"B": B_after}, cal["sigma"], config.seed)
    stats.update({k: v for k, v in cal.items() if k not in ("sigma", "sensitivity")},
                 head_forget_docs=m_head, head_retained=n, seconds=time.perf_counter() - start)
    return UnlearnResult(model=new, released=released, sigma=cal["sigma"], sensitivity=cal["sensitivity"],  # type: ignore[arg-type]
                         stats=stats, base=base)


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
