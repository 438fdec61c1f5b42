"""Anchor-word topic model learner (Arora-Ge-Moitra 2012; Arora et al. 2013) with the statistics unlearning needs.

Design choices
- A corpus is a scipy CSR document-term count matrix H (m x n). The co-occurrence estimator is the
  per-document one for any length: Q_sum = sum_d (H_d H_d^T - diag(H_d)) / (n_d (n_d - 1)); documents with
  fewer than two words carry no pair and are not counted in m. For L = 2 this is the symmetrised pair
  indicator. Q_sum (unnormalised, float64), m, and the per-word document frequencies (`doc_freq` over all
  documents, `pair_df` over documents with a pair) are the stored statistics T(S): all are sums over
  documents, so deleting documents is a subtraction and unlearning never touches the retained documents.
  The document frequencies let the unlearner re-run the anchor search on the downdated statistics exactly
  as retraining would (candidates need `doc_freq >= anchor_min_docs`; a word with `pair_df == 0` has an
  exactly zero co-occurrence row).
- FastAnchorWords runs on the row-normalised rows of frequent words (document frequency >=
  `anchor_min_docs`), optionally after a seeded Gaussian random projection, with the optional clean-up pass.
- RecoverL2 solves every word's simplex-constrained least squares exactly (not with exponentiated gradient):
  all words share one r x r Gram matrix, so a word's solution on a face of the simplex is one small KKT
  solve, and words with the same face are solved together (a batched primal-dual active-set method; a
  sequential primal active-set method finishes the rare word that does not settle). Exact solutions are what
  make "unlearned == retrained while anchors hold" testable at 1e-8.
- Anchor rows of C are set one-hot, so A_S is diagonal and R = A_S^-1 Q_SS A_S^-T is cheap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers.settings import TopicModelConfig


@dataclass
class TopicModel:
    """A learned model (A, R, anchors) plus the stored statistics T(S) that unlearning uses."""

    A: np.ndarray            # n x r, column k = p(word | topic k)
    R: np.ndarray            # r x r, topic-topic moments E[theta theta^T]
    C: np.ndarray            # n x r, C_ik = p(topic k | word i); rows on the simplex
    anchors: np.ndarray      # r word indices
    q_sum: np.ndarray        # n x n unnormalised co-occurrence sum (stored statistic)
    m: int                   # documents that contributed to q_sum
    config: TopicModelConfig = field(default_factory=TopicModelConfig)
    vocab: list[str] | None = None
    info: dict = field(default_factory=dict)
    doc_freq: np.ndarray | None = None   # n: documents containing the word (None: saved before it was stored)
    pair_df: np.ndarray | None = None    # n: documents with >= 2 words containing the word

    @property
    def n_words(self) -> int:
        return self.A.shape[0]

    @property
    def n_topics(self) -> int:
        return self.A.shape[1]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        rows, cols = np.nonzero(self.q_sum)  # store text gives sparse co-occurrence: keep versions small
        np.savez_compressed(buf, A=self.A, R=self.R, C=self.C, anchors=self.anchors, m=np.array(self.m),
                            q_rows=rows.astype(np.int32), q_cols=cols.astype(np.int32), q_vals=self.q_sum[rows, cols],
                            q_shape=np.array(self.q_sum.shape),
                            **({} if self.doc_freq is None else {"doc_freq": self.doc_freq, "pair_df": self.pair_df}))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, config: TopicModelConfig | None = None, vocab: list[str] | None = None,
                   info: dict | None = None) -> TopicModel:
        z = np.load(io.BytesIO(blob))
        q_sum = np.zeros(tuple(z["q_shape"]))
        q_sum[z["q_rows"], z["q_cols"]] = z["q_vals"]
        return cls(A=z["A"], R=z["R"], C=z["C"], anchors=z["anchors"], q_sum=q_sum, m=int(z["m"]),
                   config=config or TopicModelConfig(), vocab=vocab, info=info or {},
                   doc_freq=z["doc_freq"] if "doc_freq" in z else None,
                   pair_df=z["pair_df"] if "pair_df" in z else None)


# ---- co-occurrence statistics -----------------------------------------------------------------------

def as_counts(docs, n_words: int | None = None) -> sp.csr_matrix:
    """A CSR count matrix from a CSR/array matrix or an (m, L) integer array of word ids."""
    if sp.issparse(docs):
        return sp.csr_matrix(docs, dtype=np.float64)
    docs = np.asarray(docs)
    if docs.ndim != 2 or not np.issubdtype(docs.dtype, np.integer):
        raise UsageError("documents must be a sparse count matrix or an (m, L) array of word ids")
    m, length = docs.shape
    n = int(n_words if n_words is not None else (docs.max() + 1 if docs.size else 0))
    rows = np.repeat(np.arange(m), length)
    H = sp.csr_matrix((np.ones(m * length), (rows, docs.ravel())), shape=(m, n))
    H.sum_duplicates()
    return H


PAIR_LIMIT = 200_000  # word pairs (sum of squared distinct words per document) below which pairs are summed directly


def cooccurrence_sum(H: sp.csr_matrix) -> tuple[np.ndarray, int]:
    """(sum_d (H_d H_d^T - diag H_d) / (n_d (n_d - 1)), number of documents with >= 2 words)."""
    H = sp.csr_matrix(H, dtype=np.float64)
    lengths = np.asarray(H.sum(axis=1)).ravel()
    ok = lengths >= 2
    weights = np.zeros_like(lengths)
    weights[ok] = 1.0 / (lengths[ok] * (lengths[ok] - 1))
    counts = np.diff(H.indptr)
    sizes = counts.astype(np.int64) ** 2
    n = H.shape[1]
    if sizes.sum() <= PAIR_LIMIT and n <= 2048:  # small inputs (forget sets): sum the pairs directly
        total = int(sizes.sum())
        k = np.repeat(counts, sizes)
        offset = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        start = np.repeat(H.indptr[:-1], sizes)
        a, b = start + offset // np.maximum(k, 1), start + offset % np.maximum(k, 1)
        val = H.data[a] * H.data[b] * np.repeat(weights, sizes)
        q = np.bincount(H.indices[a] * n + H.indices[b], weights=val, minlength=n * n).reshape(n, n)
        row_of = np.repeat(np.arange(H.shape[0]), counts)
        q[np.diag_indices_from(q)] -= np.bincount(H.indices, weights=H.data * weights[row_of], minlength=n)
        return q, int(ok.sum())
    WH = sp.diags(weights) @ H
    q = (H.T @ WH).toarray()
    q[np.diag_indices_from(q)] -= np.asarray(WH.sum(axis=0)).ravel()
    return q, int(ok.sum())


def document_frequencies(H: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(documents containing each word, documents with >= 2 words containing each word), as float64 counts."""
    H = sp.csr_matrix(H, copy=True)
    H.sum_duplicates()
    H.eliminate_zeros()
    n = H.shape[1]
    row_of = np.repeat(np.arange(H.shape[0]), np.diff(H.indptr))
    lengths = np.bincount(row_of, weights=H.data, minlength=H.shape[0])
    doc_freq = np.bincount(H.indices, minlength=n).astype(np.float64)
    pair_df = np.bincount(H.indices[lengths[row_of] >= 2], minlength=n).astype(np.float64)
    return doc_freq, pair_df


def row_normalize(q: np.ndarray) -> np.ndarray:
    """Q_bar_i = Q_i / (Q_i . 1); rows that sum to zero stay zero."""
    sums = q.sum(axis=1, keepdims=True)
    return np.divide(q, sums, out=np.zeros_like(q), where=sums > 0)


# ---- anchors ----------------------------------------------------------------------------------------

TIE_TOL = 1e-10


def _first_max(values: np.ndarray) -> int:
    """argmax that treats values within TIE_TOL (relative) of the maximum as tied and takes the first.

    Corpora with repeated texts have words with identical co-occurrence rows; a plain argmax would break
    such ties by floating-point rounding, which differs between statistics summed from scratch and the same
    statistics downdated by subtraction. Breaking them by word id makes both pick the same anchor.
    """
    top = float(values.max())
    return int(np.flatnonzero(values >= top - TIE_TOL * max(abs(top), 1e-300))[0])

def find_anchors(q_bar: np.ndarray, r: int, candidates: np.ndarray, *, projection_dim: int = 0, seed: int = 0,
                 cleanup: bool = True) -> np.ndarray:
    """FastAnchorWords: farthest-point search with stabilised Gram-Schmidt over candidate rows."""
    if len(candidates) < r:
        raise ConfigError(f"only {len(candidates)} candidate anchor words for {r} topics; lower --topics or "
                          "anchor_min_docs, or add documents")
    X = q_bar[candidates]
    if projection_dim and projection_dim < X.shape[1]:
        proj = np.random.default_rng(seed).standard_normal((X.shape[1], projection_dim)) / np.sqrt(projection_dim)
        X = X @ proj
    chosen = [_first_max(np.einsum("ij,ij->i", X, X))]
    Y = X - X[chosen[0]]
    basis: list[np.ndarray] = []
    for _ in range(1, r):
        norms = np.einsum("ij,ij->i", Y, Y)
        norms[chosen] = -1.0
        j = _first_max(norms)
        b = Y[j] / np.sqrt(norms[j])
        for prev in basis:  # stabilised Gram-Schmidt: re-orthogonalise the new direction
            b = b - (b @ prev) * prev
        b /= np.linalg.norm(b)
        basis.append(b)
        Y = Y - np.outer(Y @ b, b)
        chosen.append(j)
    if cleanup:
        chosen = _cleanup_anchors(X, chosen)
    return candidates[np.array(chosen)]


def _cleanup_anchors(X: np.ndarray, chosen: list[int]) -> list[int]:
    """Replace each anchor by the row farthest from the affine span of the other anchors.

    Squared distances come from inner products with the origin and an orthonormal basis of the span
    (||x - o||^2 - ||Q^T (x - o)||^2), so no shifted copy of X is built.
    """
    chosen = list(chosen)
    sq = np.einsum("ij,ij->i", X, X)
    for k in range(len(chosen)):
        others = [c for i, c in enumerate(chosen) if i != k]
        origin = X[others[0]]
        dist = sq - 2.0 * (X @ origin) + origin @ origin
        if len(others) > 1:
            qmat, _ = np.linalg.qr((X[others[1:]] - origin).T)
            proj = X @ qmat - origin @ qmat
            dist = dist - np.einsum("ij,ij->i", proj, proj)
        dist[others] = -1.0
        chosen[k] = _first_max(dist)
    return chosen


# ---- RecoverL2: exact simplex-constrained least squares for every word --------------------------------

def _kkt_solve(G: np.ndarray, g: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise c^T G c / 2 - g_i^T c over {sum c = 1, c_j = 0 off `free`} for each row g_i (one pattern)."""
    idx = np.flatnonzero(free)
    k = len(idx)
    K = np.zeros((k + 1, k + 1))
    K[:k, :k] = G[np.ix_(idx, idx)]
    K[:k, k] = K[k, :k] = 1.0
    rhs = np.vstack([g[:, idx].T, np.ones((1, g.shape[0]))])
    try:
        sol = np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
    c = np.zeros((g.shape[0], G.shape[0]))
    c[:, idx] = sol[:k].T
    return c, sol[k]  # multiplier of the equality constraint in  G c - g + lam 1 - mu = 0


def _kkt_solve_rows(G: np.ndarray, g: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_kkt_solve for every row with its own face, as one batched solve of (r+1) x (r+1) systems.

    A variable off the face gets the row c_j = 0 in place of its equation, so all systems share one shape;
    falls back to one solve per face when a system is singular.
    """
    k, r = g.shape
    both = free[:, :, None] & free[:, None, :]
    K = np.zeros((k, r + 1, r + 1))
    K[:, :r, :r] = np.where(both, G, 0.0)
    diag = np.arange(r)
    K[:, diag, diag] = np.where(free, G[diag, diag], 1.0)
    K[:, :r, r] = free
    K[:, r, :r] = free
    rhs = np.concatenate([np.where(free, g, 0.0), np.ones((k, 1))], axis=1)
    try:
        sol = np.linalg.solve(K, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        patterns, inverse = np.unique(free, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).ravel()
        c, lam = np.zeros((k, r)), np.zeros(k)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse == p)
            c[rows], lam[rows] = _kkt_solve(G, g[rows], pattern)
        return c, lam
    return np.where(free, sol[:, :r], 0.0), sol[:, r]


def _active_set_one(G: np.ndarray, g: np.ndarray, tol: float) -> np.ndarray:
    """Sequential primal active-set method from the simplex centre (always terminates)."""
    r = len(g)
    c = np.full(r, 1.0 / r)
    free = np.ones(r, bool)
    for _ in range(20 * r + 20):
        p, lam = _kkt_solve(G, g[None, :], free)
        p, lam = p[0], lam[0]
        if np.all(p[free] >= -tol):
            c = np.where(free, np.maximum(p, 0.0), 0.0)
            mu = G @ c - g + lam
            mu[free] = np.inf
            j = int(np.argmin(mu))
            if mu[j] >= -tol:
                break
            free[j] = True
        else:
            d = p - c
            block = free & (d < 0) & (p < -tol)
            steps = np.where(block, c / np.where(block, -d, 1.0), np.inf)
            j = int(np.argmin(steps))
            c = c + min(1.0, steps[j]) * d
            c[j] = 0.0
            free[j] = False
            c = np.where(free, np.maximum(c, 0.0), 0.0)
    return c / c.sum()


def simplex_least_squares(G: np.ndarray, g: np.ndarray, support: np.ndarray | None = None, *, max_iter: int = 10,
                          exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rows c_i = argmin_{c in simplex} c^T G c / 2 - g_i^T c, warm-started from `support` (faces).

    Returns (C, iterations per row). Iteration 1 = the Newton step on the starting face was already optimal.
    `exact=False` stops after `max_iter` batched steps and projects unsettled rows onto the simplex (cheap,
    approximate: the "one Newton step, then project" variant).
    """
    n, r = g.shape
    free = np.ones((n, r), bool) if support is None else support.astype(bool).copy()
    free[~free.any(axis=1)] = True
    scale = max(float(np.abs(G).max()), 1e-300)
    tol = 1e-11 * scale
    C = np.zeros((n, r))
    iters = np.zeros(n, dtype=int)
    todo = np.arange(n)
    for it in range(1, max_iter + 1):
        if not len(todo):
            break
        c, lam = _kkt_solve_rows(G, g[todo], free[todo])
        mu = c @ G - g[todo] + lam[:, None]
        F = free[todo]
        primal_bad = F & (c < -tol)
        dual_bad = ~F & (mu < -tol)
        ok = ~(primal_bad | dual_bad).any(axis=1)
        C[todo[ok]] = np.where(F[ok], np.maximum(c[ok], 0.0), 0.0)
        iters[todo[ok]] = it
        new_free = (F & (c > tol)) | (~F & (mu < -tol))
        empty = ~new_free.any(axis=1)
        new_free[empty, np.argmax(c[empty], axis=1)] = True
        free[todo] = new_free
        unsettled = np.where(F, c, 0.0)[~ok]
        todo = todo[~ok]
    if len(todo) and not exact:
        C[todo] = project_to_simplex(unsettled)
        iters[todo] = max_iter + 1
        todo = todo[:0]
    for i in todo:  # primal-dual iterations can cycle on degenerate rows: finish those one by one
        C[i] = _active_set_one(G, g[i], tol)
        iters[i] = max_iter + 1
    C /= C.sum(axis=1, keepdims=True)
    return C, iters


def project_to_simplex(V: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (sort-based)."""
    U = -np.sort(-V, axis=1)
    css = np.cumsum(U, axis=1) - 1.0
    k = np.arange(1, V.shape[1] + 1)
    rho = (U - css / k > 0).sum(axis=1)
    theta = css[np.arange(len(V)), rho - 1] / rho
    return np.maximum(V - theta[:, None], 0.0)


def recover(q_sum: np.ndarray, m: int, anchors: np.ndarray, *, support: np.ndarray | None = None,
            max_iter: int = 10, exact: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RecoverL2 with fixed anchors: (A, R, C, iterations per word)."""
    anchors = np.asarray(anchors)
    q_bar = row_normalize(q_sum)
    QS = q_bar[anchors]
    G = QS @ QS.T
    g = q_bar @ QS.T
    C, iters = simplex_least_squares(G, g, support, max_iter=max_iter, exact=exact)
    r = len(anchors)
    C[anchors] = np.eye(r)
    empty = q_sum.sum(axis=1) <= 0
    C[empty] = 1.0 / r  # words without pairs: no evidence, uniform posterior (they get zero mass in A)
    p_w = q_sum.sum(axis=1) / max(m, 1)
    A = p_w[:, None] * C
    colsum = A.sum(axis=0)
    if np.any(colsum <= 0):
        raise ConfigError("a topic received no probability mass; the anchors are degenerate (fewer topics?)")
    A = A / colsum
    d = A[anchors, np.arange(r)]
    q_ss = q_sum[np.ix_(anchors, anchors)] / max(m, 1)
    R = q_ss / np.outer(d, d)
    return A, R, C, iters


def fit(docs, config: TopicModelConfig | None = None, *, n_words: int | None = None,
        vocab: list[str] | None = None, anchors: np.ndarray | None = None) -> TopicModel:
    """Learn A and R from documents (retraining = this on the retained documents)."""
    config = config or TopicModelConfig()
    H = as_counts(docs, n_words)
    q_sum, m = cooccurrence_sum(H)
    if m == 0:
        raise UsageError("no document has two or more words; nothing to learn co-occurrence from")
    doc_freq, pair_df = document_frequencies(H)
    if anchors is None:
        anchors = search_anchors(q_sum, doc_freq, config)
    A, R, C, iters = recover(q_sum, m, anchors, max_iter=config.max_iter)
    return TopicModel(A=A, R=R, C=C, anchors=np.asarray(anchors), q_sum=q_sum, m=m, config=config, vocab=vocab,
                      info={"fallback_words": int((iters > config.max_iter).sum())}, doc_freq=doc_freq,
                      pair_df=pair_df)


def search_anchors(q_sum: np.ndarray, doc_freq: np.ndarray, config: TopicModelConfig) -> np.ndarray:
    """The learner's anchor step from the statistics alone (retraining and unlearning both call this).

    Candidates are words in >= `anchor_min_docs` documents with a non-zero co-occurrence row; the anchors are
    sorted by word id so that topic order is canonical (retrained and unlearned releases line up column by
    column). Cost O(n^2 + candidates * n * r): independent of the number of documents.
    """
    candidates = np.flatnonzero((doc_freq >= config.anchor_min_docs) & (q_sum.sum(axis=1) > 0))
    anchors = find_anchors(row_normalize(q_sum), config.n_topics, candidates,
                           projection_dim=config.projection_dim, seed=config.seed, cleanup=config.cleanup)
    return np.sort(anchors)


# ---- planted (separable) synthetic corpora for verification -------------------------------------------

def planted_topics(n: int = 200, r: int = 5, anchor_prob: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A separable A (n x r): word k is topic k's anchor with probability `anchor_prob`; the rest Dirichlet."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, r))
    rest = rng.dirichlet(np.full(n - r, 0.5), size=r).T * (1 - anchor_prob)
    A[r:] = rest
    A[np.arange(r), np.arange(r)] = anchor_prob
    return A, np.arange(r)


def sample_documents(A: np.ndarray, m: int, length: int = 2, alpha: float = 0.1, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(m x length word ids, m x r topic proportions) from the LDA-style generative model with Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    n, r = A.shape
    theta = rng.gamma(alpha, size=(m, r))
    theta_sum = theta.sum(axis=1, keepdims=True)
    bad = theta_sum[:, 0] <= 0
    theta[bad] = 1.0
    theta /= theta.sum(axis=1, keepdims=True)
    cum_theta = np.cumsum(theta, axis=1)
    z = (rng.random((m, length, 1)) > cum_theta[:, None, :-1]).sum(axis=2)
    words = np.empty((m, length), dtype=np.int64)
    cum_A = np.cumsum(A, axis=0)
    cum_A[-1] = 1.0
    u = rng.random((m, length))
    for k in range(r):
        mask = z == k
        words[mask] = np.minimum(np.searchsorted(cum_A[:, k], u[mask], side="right"), n - 1)
    return words, theta

