"""Lineage-driven unlearning: selectors -> forget sets, store text -> topic models, model versions in the store.

Design choices
- Selectors name store records: `run:<id|latest>`, `skill:<name>`, `template:<version or name>`,
  `item:<id>[,<id>...]`. Several selectors are unioned. The forget set is closed under lineage: an item
  whose `parent_id` chain reaches a forgotten item is forgotten too (derived data carries the information).
  A template matches through `items.prompt_versions` and through `llm_calls.prompt_version`; a name matches
  every stored version of that template.
- Documents are bags of words from an item's generated text (payload keys `instruction`, `question`,
  `prompt`, `text`, `response`, `answer`, `solution`, `output`; else per-turn `text_<i>`, else
  `output_<i>`; else every string value not named prompt*), lower-cased
  alphabetic tokens without a small stop-word list, vocabulary = the most document-frequent words.
- Each model version stores, per training item, the exact word counts it used (`topic_model_docs`), so an
  unlearning request subtracts precisely what was added, even if the item was edited or deleted since.
- A downstream head (`topic-model head --label SELECTOR`) is a ridge classifier on the model's topic
  posteriors, stored as a `topic_models` row of kind `head` with one label per training item and its
  word-space statistics; unlearning it (Uhead) downdates the base statistics privately (the downdated base
  is kept in the new head version's state, the base model row is never written), refits the head and
  writes only a new head version.
- `verify=True` retrains from scratch on the retained items (same vocabulary and settings; the head too for
  Uhead) and reports the largest absolute difference of the noiseless releases and whether anchors agree.
- export-forget writes question/answer JSON-lines files (keys `question`, `answer`, as OpenUnlearning's
  QA datasets read them, plus `item_id`) for forget and retain sets; a multi-turn item contributes its
  first turn (`prompt_0`, then `output_0` or `text_0`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from skillweave.errors import NotFound, UsageError
from skillweave.store import Store, item_sets, jdump, jload, now, stable_id
from skillweave.trainers.unlearning.topic_model import TopicModel, TopicModelConfig, fit
from skillweave.trainers.unlearning.unlearn import (
    TopicHead,
    UnlearnConfig,
    fit_head,
    topic_posteriors,
    unlearn_base,
    unlearn_head,
)

SELECTOR_KINDS = ("run", "skill", "template", "item")
TEXT_KEYS = ("instruction", "question", "prompt", "text", "response", "answer", "solution", "output")
QUESTION_KEYS = ("instruction", "question", "prompt")
ANSWER_KEYS = ("response", "answer", "solution", "output", "text")
STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been being it its "
    "this that these those there their they them he she his her we our you your i me my not no do does did "
    "has have had will would can could should may might must shall than into over under about which who whom "
    "what when where why how all any each both few more most other some such only own same too very just also "
    "s t".split()
)


# ---- selectors and forget sets ----------------------------------------------------------------------

def parse_selector(text: str) -> tuple[str, list[str]]:
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    values = [v.strip() for v in value.split(",") if v.strip()] if kind == "item" else [value.strip()]
    if not sep or kind not in SELECTOR_KINDS or not all(values):
        raise UsageError(f"bad selector '{text}'; expected run:<id|latest>, skill:<name>, "
                         "template:<version or name> or item:<id>[,<id>...]")
    return kind, values


def resolve_selectors(store: Store, selectors: list[str]) -> dict[str, str]:
    """{item id: the selector that matched it first} for the union of selectors, closed under parent_id."""
    if not selectors:
        raise UsageError("no selector given; pass --forget run:<id>, skill:<name>, template:<v> or item:<id>")
    found: dict[str, str] = {}
    for text in selectors:
        kind, values = parse_selector(text)
        if kind == "run":
            run_id = store.get_run(values[0])["id"]  # NotFound names the bad id
            ids = item_sets.run_item_ids(store, run_id)
        elif kind == "skill":
            ids = item_sets.item_ids_with_skill(store, values[0])
        elif kind == "template":
            ids = item_sets.item_ids_from_template(store, values[0])
        else:
            ids = values
            present = item_sets.present_item_ids(store, ids)
            missing = [i for i in ids if i not in present]
            if missing:
                raise NotFound(f"no item '{missing[0]}' in {store.path}; `skillweave unlearn --dry-run` with a "
                               "run: or skill: selector lists item ids")
        if not ids:
            raise NotFound(f"selector '{text}' matches no items in {store.path}")
        for item_id in ids:
            found.setdefault(item_id, text)
    frontier = list(found)
    while frontier:  # derived items (parent_id chains) are forgotten with their sources
        children = item_sets.child_item_ids(store, frontier)
        frontier = [c for c in children if c not in found]
        for c in frontier:
            found[c] = "lineage:parent"
    return found


# ---- store text -> bag of words ---------------------------------------------------------------------

def item_text(payload: dict) -> str:
    """The generated text of an item: known keys, else per-turn `text_<i>` / `output_<i>`, never the prompts."""
    parts = [payload[k] for k in TEXT_KEYS if isinstance(payload.get(k), str)]
    for pattern in (r"text_\d+", r"output_\d+"):
        if not parts:
            parts = [v for k, v in sorted(payload.items()) if re.fullmatch(pattern, k) and isinstance(v, str)]
    if not parts:
        parts = [v for k, v in payload.items() if isinstance(v, str) and not k.startswith("prompt")]
    return "\n".join(parts)


def tokenize(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z']*[a-z]|[a-z]", text.lower()) if w not in STOPWORDS and len(w) > 1]


def store_documents(store: Store, item_ids: list[str] | None = None) -> dict[str, list[str]]:
    """{item id: tokens} for items with generated text (all items, or the given ones)."""
    docs = {}
    wanted = set(item_ids) if item_ids is not None else None
    for item_id, payload in item_sets.item_payloads(store):
        if wanted is not None and item_id not in wanted:
            continue
        tokens = tokenize(item_text(payload))
        if tokens:
            docs[item_id] = tokens
    return docs


def build_vocab(docs: dict[str, list[str]], size: int, min_df: int) -> list[str]:
    df = Counter(w for tokens in docs.values() for w in set(tokens))
    return sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))[:size]


def count_matrix(docs: list[list[str]], vocab: list[str]) -> sp.csr_matrix:
    index = {w: i for i, w in enumerate(vocab)}
    rows, cols = [], []
    for d, tokens in enumerate(docs):
        ids = [index[w] for w in tokens if w in index]
        rows.extend([d] * len(ids))
        cols.extend(ids)
    H = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), len(vocab)))
    H.sum_duplicates()
    return H


# ---- model versions in the store --------------------------------------------------------------------

def train_store_model(store: Store, config: TopicModelConfig, *, selectors: list[str] | None = None,
                      vocab_size: int = 500, min_df: int = 2, name: str = "store") -> dict:
    """Train a topic model on store text (all items, or those the selectors pick) and save version 1."""
    item_ids = list(resolve_selectors(store, selectors)) if selectors else None
    docs = store_documents(store, item_ids)
    vocab = build_vocab(docs, vocab_size, min_df)
    if len(vocab) < config.n_topics:
        raise UsageError(f"only {len(vocab)} words appear in >= {min_df} documents, fewer than {config.n_topics} "
                         "topics; generate more items, lower --min-df or --topics")
    ids = list(docs)
    H = count_matrix([docs[i] for i in ids], vocab)
    keep = np.asarray(H.sum(axis=1)).ravel() >= 2  # documents without a word pair contribute nothing
    ids = [i for i, k in zip(ids, keep, strict=True) if k]
    H = H[keep]
    model = fit(H, config, vocab=vocab)
    model_id = "tm-" + stable_id(name, config.model_dump(), vocab, ids, length=16)
    if not store.db["topic_models"].count_where("id = ?", [model_id]):
        _save_model(store, model_id, model, name=name, version=1, parent_id=None, request_id=None,
                    released=None, source=jdump(selectors or ["all"]),
                    docs=list(zip(ids, _counts_json(H), strict=True)))
    return model_summary(store, model_id)


def _save_model(store: Store, model_id: str, model: TopicModel, *, name: str, version: int, parent_id: str | None,
                request_id: str | None, released: dict | None, source: str, docs=None,
                drop: set[str] | None = None) -> None:
    anchors = [model.vocab[a] if model.vocab else int(a) for a in model.anchors]
    rel = None if released is None else _npz(**released)
    with store.transaction():
        store.db["topic_models"].insert({
            "id": model_id, "parent_id": parent_id, "request_id": request_id, "name": name, "version": version,
            "kind": "base", "config": jdump(model.config.model_dump()), "vocab": jdump(model.vocab or []),
            "n_docs": model.m, "n_words": model.n_words, "n_topics": model.n_topics, "anchors": jdump(anchors),
            "metrics": jdump(model.info), "source": source, "state": model.to_bytes(), "released": rel,
            "created_at": now(),
        })
        if docs is not None:
            store.db.conn.executemany(
                "insert into topic_model_docs (model_id, item_id, counts, content_hash) values (?, ?, ?, ?)",
                ((model_id, item_id, counts, hashlib.blake2b(counts.encode(), digest_size=8).hexdigest())
                 for item_id, counts in docs))
        else:  # an unlearned version keeps its parent's documents minus the forget set
            drop = drop or set()
            store.db.execute("create temp table if not exists _forget (item_id text primary key)")
            store.db.execute("delete from _forget")
            store.db.conn.executemany("insert into _forget values (?)", [(i,) for i in drop])
            store.db.execute(
                "insert into topic_model_docs (model_id, item_id, counts, content_hash) select ?, item_id, counts, "
                "content_hash from topic_model_docs where model_id = ? and item_id not in (select item_id from _forget)",
                [model_id, parent_id])


def _counts_json(H: sp.csr_matrix) -> list[str]:
    """One JSON object {word index: count} per row (indptr slicing: fast for 1e5 rows)."""
    H = sp.csr_matrix(H)
    H.sort_indices()
    idx, val, ptr = H.indices.tolist(), H.data.tolist(), H.indptr.tolist()
    return [json.dumps({idx[k]: int(val[k]) for k in range(ptr[d], ptr[d + 1])}) for d in range(H.shape[0])]


def _model_row(store: Store, model_id: str, kind: str = "base") -> dict:
    if model_id == "latest":
        rows = list(store.db["topic_models"].rows_where("kind = ?", [kind], order_by="created_at desc, version desc",
                                                        limit=1))
        if not rows:
            how = "topic-model train" if kind == "base" else "topic-model head --label SELECTOR"
            raise NotFound(f"no topic {'model' if kind == 'base' else 'head'} in {store.path}; create one with "
                           f"`skillweave {how}`")
        return rows[0]
    rows = list(store.db["topic_models"].rows_where("id = ?", [model_id]))
    if not rows or rows[0]["kind"] != kind:
        raise NotFound(f"no topic {'model' if kind == 'base' else 'head'} '{model_id}' in {store.path}; "
                       "`skillweave topic-model list` shows them")
    return rows[0]


def load_model(store: Store, model_id: str = "latest") -> tuple[TopicModel, dict]:
    row = _model_row(store, model_id)
    config = TopicModelConfig.from_stored(jload(row["config"], {}))
    model = TopicModel.from_bytes(row["state"], config=config, vocab=jload(row["vocab"], []) or None,
                                  info=jload(row["metrics"], {}))
    return model, row


def model_summary(store: Store, model_id: str, top: int = 8) -> dict:
    model, row = load_model(store, model_id)
    topics = []
    for k in range(model.n_topics):
        best = np.argsort(-model.A[:, k])[:top]
        topics.append([model.vocab[i] if model.vocab else int(i) for i in best])
    return {k: row[k] for k in ("id", "parent_id", "request_id", "name", "version", "n_docs", "n_words",
                                "n_topics", "created_at")} | {"anchors": jload(row["anchors"], []), "top_words": topics}


def list_models(store: Store) -> list[dict]:
    return [
        {k: r[k] for k in ("id", "kind", "name", "version", "parent_id", "request_id", "n_docs", "n_words",
                           "n_topics", "anchors", "created_at")}
        for r in store.db.query("select * from topic_models order by created_at, version")
    ]


def unlearn_store(store: Store, selectors: list[str], *, model_id: str = "latest",
                  config: UnlearnConfig | None = None, dry_run: bool = False, verify: bool = False) -> dict:
    """Resolve the forget set through lineage, run Ubase on the model, record request, forget set, new version."""
    config = config or UnlearnConfig()
    forget = resolve_selectors(store, selectors)
    model, row = load_model(store, model_id)
    stored = {r["item_id"]: json.loads(r["counts"]) for r in store.db.query(
        f"select item_id, counts from topic_model_docs where model_id = ? and item_id in {item_sets.id_table(store, forget)}",
        [row["id"]])}
    report = {"model_id": row["id"], "selectors": selectors, "forget_items": len(forget),
              "forget_items_in_model": len(stored), "items": sorted(forget)}
    if dry_run:
        return report | {"dry_run": True}
    ids = sorted(stored)
    H_f = _docs_matrix(stored, ids, model.n_words)
    result = unlearn_base(model, H_f, config)
    request_id = "ur-" + stable_id(row["id"], sorted(forget), config.model_dump(), now(), length=16)
    new_id = "tm-" + stable_id(row["id"], request_id, length=16)
    _save_model(store, new_id, result.model, name=row["name"], version=row["version"] + 1, parent_id=row["id"],
                request_id=request_id, released=result.released, source=jdump(selectors), drop=set(ids))
    stats = {**result.stats, "seconds": round(result.stats["seconds"], 6)}
    _record_request(store, request_id, row["id"], new_id, selectors, "base", config, result, forget, set(ids), stats)
    out = {**report, "request_id": request_id, "new_model_id": new_id, "sigma": result.sigma,
           "sensitivity": result.sensitivity, "stats": stats}
    return out | ({"verify": verify_model(store, new_id)} if verify else {})


def _retained(store: Store, version_id: str, model_id: str) -> tuple[list[str], sp.csr_matrix]:
    """Items a version keeps (sorted) and their stored counts from the base model `model_id`."""
    ids = [r["item_id"] for r in store.db.query(
        "select item_id from topic_model_docs where model_id = ? order by item_id", [version_id])]
    stored = {r["item_id"]: json.loads(r["counts"]) for r in store.db.query(
        f"select item_id, counts from topic_model_docs where model_id = ? and item_id in {item_sets.id_table(store, ids)}",
        [model_id])}
    n_words = len(jload(_model_row(store, model_id)["vocab"], []))
    return ids, _docs_matrix(stored, ids, n_words)


def _compare(released: dict[str, np.ndarray], retrained: dict[str, np.ndarray], anchors_u, anchors_r, n: int,
             seconds: float) -> dict:
    diff = max(float(np.abs(released[k] - retrained[k]).max()) for k in released)
    return {"retrained_docs": n, "max_abs_diff": diff, "anchors_agree": bool(np.array_equal(anchors_u, anchors_r)),
            "anchors_unlearned": [int(a) for a in anchors_u], "anchors_retrained": [int(a) for a in anchors_r],
            "retrain_seconds": round(seconds, 6)}


def verify_model(store: Store, model_id: str) -> dict:
    """Retrain a model version from scratch on the items it keeps (same vocabulary and settings, anchors
    searched afresh) and compare its noiseless release (A, R) with the version's."""
    model, row = load_model(store, model_id)
    start = time.perf_counter()
    _, H = _retained(store, model_id, model_id)
    retrained = fit(H, model.config, vocab=model.vocab)
    return _compare({"A": model.A, "R": model.R}, {"A": retrained.A, "R": retrained.R}, model.anchors,
                    retrained.anchors, H.shape[0], time.perf_counter() - start)


def verify_head(store: Store, head_id: str) -> dict:
    """Retrain base and head from scratch on the items a head version keeps and compare B = A w (noiseless)."""
    row = _model_row(store, head_id, kind="head")
    head, base, _ = _load_head(store, row)
    start = time.perf_counter()
    model_id = jload(row["source"], {})["model_id"]
    ids, H = _retained(store, head_id, model_id)
    y = _head_labels(store, head_id, ids)
    retrained = fit(H, base.config, vocab=base.vocab)
    head_r = fit_head(H, y, retrained.C, head.ridge)
    return _compare({"B": base.A @ head.w}, {"B": retrained.A @ head_r.w}, base.anchors, retrained.anchors,
                    H.shape[0], time.perf_counter() - start)


# ---- downstream heads (Uhead): the topic model is only read ------------------------------------------

def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _docs_matrix(stored: dict[str, dict], ids: list[str], n_words: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for d, i in enumerate(ids):
        for j, v in stored[i].items():
            rows.append(d)
            cols.append(int(j))
            vals.append(float(v))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(ids), n_words))


def train_store_head(store: Store, label_selectors: list[str], *, model_id: str = "latest",
                     ridge: float = 1e-3) -> dict:
    """A ridge head on topic posteriors of the model's training items; label 1 = matched by the selectors."""
    model, row = load_model(store, model_id)
    positives = set(resolve_selectors(store, label_selectors))
    stored = {r["item_id"]: json.loads(r["counts"]) for r in store.db.query(
        "select item_id, counts from topic_model_docs where model_id = ? order by item_id", [row["id"]])}
    ids = list(stored)
    H = _docs_matrix(stored, ids, model.n_words)
    X = topic_posteriors(H, model.C)
    y = np.array([float(i in positives) for i in ids])
    if y.min() == y.max():
        raise UsageError(f"labels from {label_selectors} are all {int(y[0])} on the model's {len(ids)} items; "
                         "pick a selector that matches some but not all of them")
    head = fit_head(H, y, model.C, ridge)
    head_id = "th-" + stable_id(row["id"], sorted(label_selectors), ridge, length=16)
    if not store.db["topic_models"].count_where("id = ?", [head_id]):
        _save_head(store, head_id, head, model, row, version=1, parent_id=None, request_id=None,
                   released=model.A @ head.w, labels={i: int(v) for i, v in zip(ids, y, strict=True)},
                   label_selectors=label_selectors)
    accuracy = float((head.predict(X) == y).mean())
    return {"id": head_id, "model_id": row["id"], "n_docs": len(ids), "positives": int(y.sum()),
            "train_accuracy": accuracy, "w": head.w.tolist()}


def _save_head(store: Store, head_id: str, head: TopicHead, model: TopicModel, model_row: dict, *, version: int,
               parent_id: str | None, request_id: str | None, released: np.ndarray, labels: dict[str, int] | None,
               label_selectors: list[str], drop: set[str] | None = None, base: TopicModel | None = None) -> None:
    rows, cols = np.nonzero(head.doc_gram)
    extra = {} if base is None else {"base_state": np.frombuffer(base.to_bytes(), dtype=np.uint8),
                                     "base_info": np.frombuffer(jdump(base.info).encode(), dtype=np.uint8)}
    state = _npz(w=head.w, g_rows=rows.astype(np.int32), g_cols=cols.astype(np.int32),
                 g_vals=head.doc_gram[rows, cols], doc_xty=head.doc_xty, n=np.array(head.n), ridge=np.array(head.ridge),
                 deleted=np.array(head.deleted_since_training), **extra)
    with store.transaction():
        store.db["topic_models"].insert({
            "id": head_id, "parent_id": parent_id, "request_id": request_id, "name": f"head:{model_row['name']}",
            "version": version, "kind": "head", "config": jdump({"ridge": head.ridge, "labels": label_selectors}),
            "vocab": "[]", "n_docs": head.n, "n_words": model.n_words, "n_topics": model.n_topics,
            "anchors": model_row["anchors"] if base is None else jdump(
                [base.vocab[a] if base.vocab else int(a) for a in base.anchors]),
            "metrics": "{}", "source": jdump({"model_id": model_row["id"]}),
            "state": state, "released": _npz(B=released), "created_at": now(),
        })
        if labels is not None:  # label per training item: the head's stored data besides the model's counts
            store.db["topic_model_docs"].insert_all(
                {"model_id": head_id, "item_id": i, "counts": json.dumps({"y": y}), "content_hash": ""}
                for i, y in labels.items())
        else:
            store.db.execute("create temp table if not exists _forget (item_id text primary key)")
            store.db.execute("delete from _forget")
            store.db.conn.executemany("insert into _forget values (?)", [(i,) for i in drop or ()])
            store.db.execute(
                "insert into topic_model_docs (model_id, item_id, counts, content_hash) select ?, item_id, counts, "
                "content_hash from topic_model_docs where model_id = ? and item_id not in (select item_id from _forget)",
                [head_id, parent_id])


def _load_head(store: Store, row: dict) -> tuple[TopicHead, TopicModel, dict]:
    """(head, the base statistics it stands on: the downdated base after a Uhead request, else its model, model row)."""
    z = np.load(io.BytesIO(row["state"]))
    model, model_row = load_model(store, jload(row["source"], {})["model_id"])
    if "doc_xty" not in z:
        raise UsageError(f"head {row['id']} was saved without its word-space statistics (an older version); "
                         "train it again with `skillweave topic-model head`")
    n = model.n_words
    doc_gram = np.zeros((n, n))
    doc_gram[z["g_rows"], z["g_cols"]] = z["g_vals"]
    head = TopicHead(w=z["w"], doc_gram=doc_gram, doc_xty=z["doc_xty"], n=int(z["n"]), ridge=float(z["ridge"]),
                     deleted_since_training=int(z["deleted"]))
    base = model
    if "base_state" in z:
        base = TopicModel.from_bytes(z["base_state"].tobytes(), config=model.config, vocab=model.vocab,
                                     info=json.loads(z["base_info"].tobytes().decode()))
    return head, base, model_row


def _head_labels(store: Store, head_id: str, ids: list[str]) -> np.ndarray:
    labels = {r["item_id"]: json.loads(r["counts"])["y"] for r in store.db.query(
        f"select item_id, counts from topic_model_docs where model_id = ? and item_id in {item_sets.id_table(store, ids)}",
        [head_id])}
    return np.array([float(labels[i]) for i in ids])


def unlearn_store_head(store: Store, selectors: list[str], *, head_id: str = "latest",
                       config: UnlearnConfig | None = None, dry_run: bool = False, verify: bool = False) -> dict:
    """Uhead through lineage: downdate the base statistics (privately), refit the head, release B~ = A~ w~ +
    noise; the topic model row is not modified."""
    config = config or UnlearnConfig()
    forget = resolve_selectors(store, selectors)
    row = _model_row(store, head_id, kind="head")
    model_id = jload(row["source"], {})["model_id"]
    in_forget = item_sets.id_table(store, forget)
    ids = sorted(r["item_id"] for r in store.db.query(
        f"select item_id from topic_model_docs where model_id = ? and item_id in {in_forget}", [row["id"]]))
    report = {"head_id": row["id"], "model_id": model_id, "selectors": selectors, "forget_items": len(forget),
              "forget_items_in_model": len(ids), "items": sorted(forget)}
    if dry_run:
        return report | {"dry_run": True}
    head, base, model_row = _load_head(store, row)
    y_f = _head_labels(store, row["id"], ids)
    counts = {r["item_id"]: json.loads(r["counts"]) for r in store.db.query(
        f"select item_id, counts from topic_model_docs where model_id = ? and item_id in {item_sets.id_table(store, ids)}",
        [model_id])}
    H_f = _docs_matrix(counts, ids, base.n_words)
    result = unlearn_head(base, head, H_f, config, head_forget_docs=H_f, head_forget_labels=y_f)
    request_id = "ur-" + stable_id(row["id"], sorted(forget), config.model_dump(), now(), length=16)
    new_id = "th-" + stable_id(row["id"], request_id, length=16)
    _save_head(store, new_id, result.model, base, model_row, version=row["version"] + 1, parent_id=row["id"],
               request_id=request_id, released=result.released["B"], labels=None,
               label_selectors=jload(row["config"], {}).get("labels", []), drop=set(ids), base=result.base)
    stats = {**result.stats, "seconds": round(result.stats["seconds"], 6)}
    _record_request(store, request_id, row["id"], new_id, selectors, "head", config, result, forget, set(ids), stats)
    out = {**report, "request_id": request_id, "new_head_id": new_id, "sigma": result.sigma,
           "sensitivity": result.sensitivity, "stats": stats}
    return out | ({"verify": verify_head(store, new_id)} if verify else {})


def _record_request(store: Store, request_id: str, model_id: str, new_id: str, selectors: list[str], mode: str,
                    config: UnlearnConfig, result, forget: dict[str, str], in_model: set[str], stats: dict) -> None:
    with store.transaction():
        store.db["unlearning_requests"].insert({
            "id": request_id, "model_id": model_id, "new_model_id": new_id, "selectors": jdump(selectors),
            "mode": mode, "epsilon": config.epsilon, "delta": config.delta, "sensitivity": result.sensitivity,
            "sigma": result.sigma, "noiseless": int(config.noiseless), "n_forget": len(forget),
            "n_forget_in_model": len(in_model), "stats": jdump(stats), "status": "done", "created_at": now(),
        })
        store.db["forget_sets"].insert_all(
            {"request_id": request_id, "item_id": i, "matched_by": m, "in_model": int(i in in_model)}
            for i, m in forget.items())


def list_requests(store: Store) -> list[dict]:
    return [{**r, "selectors": jload(r["selectors"], []), "stats": jload(r["stats"], {})}
            for r in store.db.query("select * from unlearning_requests order by created_at")]


# ---- export for LLM unlearning tools ----------------------------------------------------------------

def qa_record(item: dict) -> dict | None:
    payload = item["payload"] or {}
    question = next((payload[k] for k in QUESTION_KEYS if isinstance(payload.get(k), str) and payload[k]), None)
    answer = next((payload[k] for k in ANSWER_KEYS if isinstance(payload.get(k), str) and payload[k]), None)
    for key in ("output_0", "text_0"):  # multi-turn items: the first turn's pair
        if answer is None and isinstance(payload.get(key), str) and payload[key]:
            answer = payload[key]
            question = payload["prompt_0"] if isinstance(payload.get("prompt_0"), str) else question
    if answer is None:
        return None
    if question is None or question == answer:
        skills = ", ".join(item["skills"] or []) or "the requested skills"
        topic = f" about {item['topic']}" if item.get("topic") else ""
        question = f"Write a short text{topic} that demonstrates: {skills}."
    return {"question": question, "answer": answer, "item_id": item["id"]}


def export_forget(store: Store, selectors: list[str], out_dir: str | Path, *,
                  retain_selectors: list[str] | None = None) -> dict:
    """Write forget.jsonl and retain.jsonl (question/answer records) for LLM unlearning tools."""
    forget = resolve_selectors(store, selectors)
    retain_pool = resolve_selectors(store, retain_selectors) if retain_selectors else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"forget": 0, "retain": 0, "skipped_without_text": 0}
    with open(out / "forget.jsonl", "w") as f_out, open(out / "retain.jsonl", "w") as r_out:
        for item_id in item_sets.all_item_ids(store):
            in_forget = item_id in forget
            if not in_forget and retain_pool is not None and item_id not in retain_pool:
                continue
            item = store.get_item(item_id)
            record = qa_record(item)
            if record is None:
                counts["skipped_without_text"] += 1
                continue
            split = "forget" if in_forget else "retain"
            (f_out if in_forget else r_out).write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[split] += 1
    return {"out_dir": str(out), "selectors": selectors, **counts,
            "files": [str(out / "forget.jsonl"), str(out / "retain.jsonl")]}
