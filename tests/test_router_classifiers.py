"""Unit tests of the router's embedding classifiers: fit/predict on separable toy
embeddings, probabilities, persistence round-trips, labelled JSONL, and the
encoder-plus-classifier pipeline on a small deterministic encoder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ttc.routers import (
    KNN,
    EncodedClassifier,
    LogisticRegression,
    NearestPrototype,
    QueryEncoder,
    fit_jsonl,
    load_classifier,
    load_labelled_jsonl,
    make_classifier,
    save_labelled_jsonl,
)

DIM = 16


def toy(n_per: int, seed: int, spread: float = 0.15) -> tuple[np.ndarray, list[str]]:
    """Three well separated clusters around fixed random unit centres (same for every seed)."""
    centres = np.random.default_rng(0).normal(size=(3, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k, name in enumerate(["code", "facts", "math"]):
        X.append(centres[k] + spread * rng.normal(size=(n_per, DIM)) / np.sqrt(DIM))
        y += [name] * n_per
    return np.vstack(X), y


@pytest.fixture(scope="module")
def data():
    return toy(30, seed=1), toy(20, seed=2)


@pytest.mark.parametrize("kind", ["prototype", "knn", "logreg"])
def test_classifiers_separate_toy_embeddings(kind, data):
    (Xtr, ytr), (Xte, yte) = data
    clf = make_classifier(kind).fit(Xtr, ytr)
    assert clf.classes == ["code", "facts", "math"]
    assert clf.accuracy(Xte, yte) == 1.0
    p = clf.predict_proba(Xte)
    assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1) and (p >= 0).all()
    # confident on its own clusters
    assert p.max(axis=1).mean() > 0.6


def test_logistic_regression_converges(data):
    (Xtr, ytr), _ = data
    clf = LogisticRegression(l2=1e-3, tol=1e-5).fit(Xtr, ytr)
    assert clf.converged and clf.n_iter < clf.max_iter and clf.grad_norm < 1e-5
    assert clf.loss(Xtr, ytr) < np.log(3) / 4  # far below the untrained loss log(K)
    # a tiny iteration cap cannot converge, and says so
    capped = LogisticRegression(l2=1e-3, max_iter=3).fit(Xtr, ytr)
    assert not capped.converged and capped.n_iter == 3
    assert capped.loss(Xtr, ytr) > clf.loss(Xtr, ytr)


def test_knn_uses_neighbours_and_smooths():
    X = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [0.05, 1.0]])
    y = ["a", "a", "b", "b", "b"]
    knn = KNN(k=1, alpha=0.01).fit(X, y)
    p = knn.predict_proba([[0.98, 0.05]])[0]
    assert p[0] > 0.95 and p[1] > 0  # smoothing keeps every class above zero
    assert KNN(k=5, alpha=0.0, temperature=100.0).fit(X, y).predict([[1.0, 0.0]]) == ["b"]  # 3 of 5 votes


def test_nearest_prototype_is_the_closest_class_mean():
    X = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    clf = NearestPrototype(temperature=0.1).fit(X, ["x", "x", "y", "y"])
    sims = clf.similarities([[0.9, 0.3]])
    assert sims[0, 0] > sims[0, 1] and clf.predict([[0.9, 0.3]]) == ["x"]


@pytest.mark.parametrize("cls", [NearestPrototype, KNN, LogisticRegression])
def test_save_load_round_trip_gives_the_same_predictions(cls, data, tmp_path):
    (Xtr, ytr), (Xte, _) = data
    clf = cls().fit(Xtr, ytr)
    path = clf.save(tmp_path / f"{cls.kind}")
    assert path.suffix == ".npz" and path.stat().st_size < 200_000
    back = load_classifier(path)
    assert type(back) is cls and back.classes == clf.classes and back.dim == DIM
    assert np.allclose(back.predict_proba(Xte), clf.predict_proba(Xte))
    assert back.predict(Xte) == clf.predict(Xte)


def test_classifier_errors_name_the_problem(data, tmp_path):
    (Xtr, ytr), _ = data
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression().fit(Xtr[:5], ["a"] * 5)
    with pytest.raises(ValueError, match="labels: 3 labels for 90"):
        KNN().fit(Xtr, ytr[:3])
    clf = NearestPrototype().fit(Xtr, ytr)
    with pytest.raises(ValueError, match="dimension 4"):
        clf.predict_proba(np.ones((1, 4)))
    with pytest.raises(RuntimeError, match="not fitted"):
        KNN().predict_proba(Xtr)
    with pytest.raises(ValueError, match="unknown classifier"):
        make_classifier("svm")
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a ttc classifier"):
        load_classifier(tmp_path / "x.npz")


class HashEncoder(QueryEncoder):
    """A deterministic bag-of-words encoder: each word hashes to a fixed random vector."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self._d = dim
        self.embedded: list[str] = []

    @property
    def dim(self) -> int:
        return self._d

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        out = np.zeros((len(texts), self._d))
        for i, t in enumerate(texts):
            for w in t.lower().replace("?", " ").split():
                seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "little")
                out[i] += np.random.default_rng(seed).normal(size=self._d)
        return out


def test_encoder_caches_and_normalises():
    enc = HashEncoder()
    e = enc.encode(["a b", "c", "a b"])
    assert e.shape == (3, 64) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5) and np.allclose(e[0], e[2])
    assert enc.embedded == ["a b", "c"]  # the repeat was not embedded twice
    enc.encode(["c", "d"])
    assert enc.embedded == ["a b", "c", "d"]
    with pytest.raises(TypeError, match="one str"):
        enc.encode("a b")


def test_fit_from_labelled_jsonl_and_pipeline(tmp_path):
    texts = [f"What is the capital of {c}?" for c in ("France", "Spain", "Peru", "Chile", "Japan")] + [
        f"{n} has {k} apples and buys {k + 2} more. How many apples?" for n, k in
        (("Ann", 3), ("Ben", 4), ("Cara", 5), ("Dev", 6), ("Eli", 7))]
    labels = ["direct"] * 5 + ["reason"] * 5
    path = save_labelled_jsonl(texts, labels, tmp_path / "train.jsonl")
    assert load_labelled_jsonl(path) == (texts, labels)
    enc = HashEncoder()
    clf = fit_jsonl(path, enc, kind="logreg")
    pipe = EncodedClassifier(enc, clf)
    p = pipe.predict_proba(["What is the capital of Italy?", "Fay has 9 apples and buys 2 more. How many apples?"])
    assert pipe.classes == ["direct", "reason"]
    assert p[0].argmax() == 0 and p[1].argmax() == 1
    assert pipe.probabilities("What is the capital of Italy?")["direct"] == pytest.approx(p[0, 0])

    # the ttc dataset format (question/category) works too; errors name line and field
    alt = tmp_path / "alt.jsonl"
    alt.write_text(json.dumps({"question": "q1", "category": "a", "answer": "1"}) + "\n\n")
    assert load_labelled_jsonl(alt) == (["q1"], ["a"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "q"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: needs a 'label'"):
        load_labelled_jsonl(bad)
