"""Classifiers over query embeddings, in numpy: nearest prototype, k nearest
neighbours, and multinomial logistic regression.

They play the role of the category classifier of "When to Reason: Semantic Router
for vLLM" (Wang et al. 2025), which fine-tunes ModernBERT; here a small model over a
frozen sentence encoder is enough and trains in milliseconds. Every classifier
returns class probabilities (``predict_proba``), which the entropy-banded policy of
:mod:`ttc.routers.policy` reads.

Training data: a JSONL file with one ``{"text": ..., "label": ...}`` per line
(``question``/``category`` are accepted too, so ttc's dataset files work as is).
Persistence: ``save(path)`` writes a small ``.npz`` (no pickle); ``load_classifier``
reads any of them back.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttc.checks import check_int, check_number
from ttc.questions import read_jsonl_rows

ArrayLike = Any


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _as_matrix(x: ArrayLike, dim: int | None = None, who: str = "X") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{who}: expected a 2-d array (n, dim), got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{who}: embeddings of dimension {a.shape[1]}, the classifier was fit on {dim}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: non-finite values")
    return a


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


class EmbeddingClassifier(abc.ABC):
    """Base: ``fit(X, labels)``, ``predict_proba(X)``, ``predict(X)``, ``save``/``load``."""

    kind: str = "base"
    classes: list[str]
    dim: int

    def fit(self, X: ArrayLike, labels: Sequence[str]) -> EmbeddingClassifier:
        X = _as_matrix(X)
        labels = [str(y) for y in labels]
        if len(labels) != X.shape[0]:
            raise ValueError(f"labels: {len(labels)} labels for {X.shape[0]} embeddings")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"labels: need at least 2 classes, got {classes}")
        self.classes = classes
        self.dim = X.shape[1]
        y = np.array([classes.index(v) for v in labels])
        self._fit(X, y)
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        if not hasattr(self, "classes"):
            raise RuntimeError(f"{type(self).__name__}: not fitted (call fit or load_classifier)")
        return self._proba(_as_matrix(X, self.dim))

    def predict(self, X: ArrayLike) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(X).argmax(axis=1)]

    def accuracy(self, X: ArrayLike, labels: Sequence[str]) -> float:
        pred = self.predict(X)
        return float(np.mean([p == str(y) for p, y in zip(pred, labels)]))

    # -- to implement ----------------------------------------------------------------------
    @abc.abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _proba(self, X: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays to save (besides classes)."""

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Hyper-parameters (JSON) to save."""

    @classmethod
    @abc.abstractmethod
    def _restore(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> EmbeddingClassifier: ...

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (arrays + JSON header, no pickle)."""
        if not hasattr(self, "classes"):
            raise RuntimeError(f"{type(self).__name__}: not fitted, nothing to save")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": self.kind, "classes": self.classes, "dim": self.dim, "params": self._params()}
        np.savez(path, __header__=np.array(json.dumps(header)), **self._state())
        return path

    def __repr__(self) -> str:
        fitted = f"classes={self.classes}" if hasattr(self, "classes") else "unfitted"
        return f"{type(self).__name__}({self._params()}, {fitted})"


class NearestPrototype(EmbeddingClassifier):
    """One prototype per class: the normalised mean of its embeddings. Probabilities
    are a softmax of the cosine similarities divided by ``temperature``."""

    kind = "prototype"

    def __init__(self, temperature: float = 0.05):
        check_number("temperature", temperature)
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.prototypes = _unit(np.stack([X[y == k].mean(axis=0) for k in range(len(self.classes))]))

    def similarities(self, X: ArrayLike) -> np.ndarray:
        return _unit(_as_matrix(X, self.dim)) @ self.prototypes.T

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax((_unit(X) @ self.prototypes.T) / self.temperature)

    def _state(self) -> dict[str, np.ndarray]:
        return {"prototypes": self.prototypes}

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @classmethod
    def _restore(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> NearestPrototype:
        c = cls(**params)
        c.prototypes = state["prototypes"]
        return c


class KNN(EmbeddingClassifier):
    """k nearest neighbours by cosine similarity. A neighbour's vote is
    ``exp(sim / temperature)``; ``alpha`` is add-alpha smoothing so no class gets
    probability exactly 0 (the entropy of the policy stays informative)."""

    kind = "knn"

    def __init__(self, k: int = 5, temperature: float = 0.1, alpha: float = 0.01):
        check_int("k", k, lo=1)
        check_number("temperature", temperature)
        check_number("alpha", alpha)
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {alpha}")
        self.k, self.temperature, self.alpha = k, temperature, alpha

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = _unit(X)
        self.y = y.astype(np.int64)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        sims = _unit(X) @ self.X.T
        k = min(self.k, self.X.shape[0])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        n_cls = len(self.classes)
        out = np.full((X.shape[0], n_cls), self.alpha)
        for r in range(X.shape[0]):
            s = sims[r, idx[r]]
            w = np.exp((s - s.max()) / self.temperature)
            np.add.at(out[r], self.y[idx[r]], w / w.sum())
        return out / out.sum(axis=1, keepdims=True)

    def _state(self) -> dict[str, np.ndarray]:
        return {"X": self.X, "y": self.y}

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "alpha": self.alpha}

    @classmethod
    def _restore(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> KNN:
        c = cls(**params)
        c.X, c.y = state["X"], state["y"].astype(np.int64)
        return c


class LogisticRegression(EmbeddingClassifier):
    """Multinomial logistic regression with L2 penalty ``l2`` on the weights (not the
    bias), fit by Nesterov-accelerated gradient descent with step ``1/L``, where
    ``L = 0.5 * lambda_max(X'X / n) + l2`` bounds the curvature of the softmax loss.
    The objective is strongly convex, so it converges; ``converged`` and ``n_iter``
    record whether the gradient norm fell under ``tol`` within ``max_iter`` steps."""

    kind = "logreg"

    def __init__(self, l2: float = 1e-3, max_iter: int = 5000, tol: float = 1e-5):
        check_number("l2", l2)
        check_int("max_iter", max_iter, lo=1)
        check_number("tol", tol, lo=0)
        if l2 <= 0:
            raise ValueError(f"l2: must be > 0 (it makes the problem strongly convex), got {l2}")
        if max_iter < 1:
            raise ValueError(f"max_iter: must be >= 1, got {max_iter}")
        self.l2, self.max_iter, self.tol = l2, max_iter, tol
        self.converged = False
        self.n_iter = 0

    @staticmethod
    def _aug(X: np.ndarray) -> np.ndarray:
        return np.hstack([X, np.ones((X.shape[0], 1))])

    def _grad(self, W: np.ndarray, Xa: np.ndarray, Y: np.ndarray) -> np.ndarray:
        P = _softmax(Xa @ W)
        G = Xa.T @ (P - Y) / Xa.shape[0]
        G[:-1] += self.l2 * W[:-1]
        return G

    def loss(self, X: ArrayLike, labels: Sequence[str]) -> float:
        """Mean cross-entropy plus the L2 term (what the fit minimises)."""
        Xa = self._aug(_as_matrix(X, self.dim))
        y = np.array([self.classes.index(str(v)) for v in labels])
        P = _softmax(Xa @ self.W)
        ce = -np.mean(np.log(np.maximum(P[np.arange(len(y)), y], 1e-300)))
        return float(ce + 0.5 * self.l2 * np.sum(self.W[:-1] ** 2))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        Xa = self._aug(X)
        n, d = Xa.shape
        k = len(self.classes)
        Y = np.eye(k)[y]
        lam = float(np.linalg.eigvalsh(Xa.T @ Xa / n).max())
        step = 1.0 / (0.5 * lam + self.l2)
        W = np.zeros((d, k))
        V = W.copy()
        t = 1.0
        self.converged = False
        for it in range(1, self.max_iter + 1):
            G = self._grad(V, Xa, Y)
            W_next = V - step * G
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            V = W_next + ((t - 1) / t_next) * (W_next - W)
            W, t = W_next, t_next
            if it % 10 == 0 or it == self.max_iter:
                gnorm = float(np.linalg.norm(self._grad(W, Xa, Y)))
                if gnorm < self.tol:
                    self.converged = True
                    break
        self.n_iter = it
        self.grad_norm = float(np.linalg.norm(self._grad(W, Xa, Y)))
        self.W = W

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(self._aug(X) @ self.W)

    def _state(self) -> dict[str, np.ndarray]:
        return {"W": self.W}

    def _params(self) -> dict[str, Any]:
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol}

    @classmethod
    def _restore(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> LogisticRegression:
        c = cls(**params)
        c.W = state["W"]
        c.converged = True
        return c


CLASSIFIERS: dict[str, type[EmbeddingClassifier]] = {
    "prototype": NearestPrototype,
    "knn": KNN,
    "logreg": LogisticRegression,
}


def make_classifier(kind: str, **params: Any) -> EmbeddingClassifier:
    if kind not in CLASSIFIERS:
        raise ValueError(f"kind: unknown classifier {kind!r}; known: {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[kind](**params)


def load_classifier(path: str | Path) -> EmbeddingClassifier:
    """Read a classifier written by :meth:`EmbeddingClassifier.save`."""
    with np.load(Path(path), allow_pickle=False) as z:
        if "__header__" not in z:
            raise ValueError(f"{path}: not a ttc classifier file (no header)")
        header = json.loads(str(z["__header__"]))
        state = {k: z[k] for k in z.files if k != "__header__"}
    kind = header.get("kind")
    if kind not in CLASSIFIERS:
        raise ValueError(f"{path}: unknown classifier kind {kind!r}")
    c = CLASSIFIERS[kind]._restore(header["params"], state)
    c.classes = list(header["classes"])
    c.dim = int(header["dim"])
    return c


# -- labelled JSONL ------------------------------------------------------------------------------
def load_labelled_jsonl(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, labels) from JSONL rows ``{"text", "label"}`` (or ``question``/``category``)."""
    texts, labels = [], []
    for row in read_jsonl_rows(path):
        line = row["_line"]
        text = row.get("text", row.get("question"))
        label = row.get("label", row.get("category"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{line}: needs a non-empty 'text' (or 'question') field")
        if label is None or str(label) == "":
            raise ValueError(f"{path}:{line}: needs a 'label' (or 'category') field")
        texts.append(text)
        labels.append(str(label))
    if not texts:
        raise ValueError(f"{path}: no labelled rows")
    return texts, labels


def save_labelled_jsonl(texts: Sequence[str], labels: Sequence[str], path: str | Path) -> Path:
    if len(texts) != len(labels):
        raise ValueError(f"labels: {len(labels)} labels for {len(texts)} texts")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for t, y in zip(texts, labels):
            f.write(json.dumps({"text": t, "label": y}) + "\n")
    return path


def fit_jsonl(path: str | Path, encoder: Any, kind: str = "logreg", **params: Any) -> EmbeddingClassifier:
    """Encode the texts of a labelled JSONL file with ``encoder`` and fit a classifier."""
    texts, labels = load_labelled_jsonl(path)
    return make_classifier(kind, **params).fit(encoder.encode(texts), labels)
