"""The labelling loop: concept -> rounds of unlabelled images to vote on -> refit -> best results.

No Telegram here: the bot, the CLI and the benchmarks all drive this same API. Every method is
blocking (model and database work); async callers run them with ``asyncio.to_thread``.

Round strategies (which unlabelled images a round shows), all built on ``store.knn``:

* ``"hard"`` — the nearest unlabelled images to the classifier (the demo's hard negatives);
* ``"random"`` — random unlabelled images (``store.sample`` when the store has one, else the
  nearest images to a random direction);
* ``"boundary"`` — of the nearest ``pool * k`` unlabelled images, those scored closest to the
  classifier's decision boundary (the votes it is least sure of);
* ``"mixed"`` — half the round from the best unlabelled images (what the person hopes to see),
  the other half spread evenly over the ranks of the next ``pool * k``: deeper images the classifier
  is less sure of, other sub-clusters of the concept, and the confusable neighbours to reject.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.classifier import ClassifierParams, LinearClassifier
from core.errors import EmptyDataset
from core.query import compose, parse
from core.records import Hit, Scored
from core.store import VectorStore

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.encoder import ClipEncoder


Strategy = Literal["hard", "random", "boundary", "mixed"]
STRATEGIES: tuple[str, ...] = ("hard", "random", "boundary", "mixed")
DEFAULT_STRATEGY: Strategy = "mixed"  # best on the labelling benchmark (bench/results/labelling.md)


@dataclass
class ExplorerSession:
    """One concept being taught: the prior (text or image vector), the classifier weight and the labels."""

    concept: str
    prior: np.ndarray
    weights: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)  # image id -> +1 / -1
    truncated: bool = False  # the concept text was cut to the model's 77 tokens
    # Cosine score where the classifier says "as likely yes as no"; None until both 👍 and 👎 exist.
    # Not persisted: a resumed session recomputes it from its labels when a strategy needs it.
    threshold: float | None = None


class Explorer:
    """Starts sessions, proposes rounds, refits and ranks."""

    def __init__(
        self,
        store: VectorStore,
        encoder: ClipEncoder | None = None,
        params: ClassifierParams | None = None,
        strategy: Strategy = DEFAULT_STRATEGY,
        pool: int = 10,
        seed: int = 0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown round strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        self.store = store
        self.encoder = encoder
        self.params = params or ClassifierParams()
        self.strategy: Strategy = strategy
        self.pool = max(1, pool)  # "boundary"/"mixed" look at the nearest pool * k unlabelled images
        self.seed = seed

    def start_text(self, concept: str) -> ExplorerSession:
        """Embed ``concept`` (a text, or a composite such as ``red car -truck``, see :mod:`core.query`)
        and start a session from it; raises :class:`BadConcept` for blank text."""
        text = " ".join(concept.split())
        query = parse(text)
        encoder = self._encoder()
        session = self.start_vector(text, compose(query, encoder.embed_texts))
        session.truncated = any(encoder.text_truncated(t) for t in query.terms)
        return session

    def start_image(self, image: Image, concept: str = "this photo", text: str = "") -> ExplorerSession:
        """Start a session from a photo's vector, moved toward ``text`` (``at night``, ``+ a hat -people``)."""
        encoder = self._encoder()
        query = parse(text, photo=True)
        photo = encoder.embed_images([image])[0]
        session = self.start_vector(concept, compose(query, encoder.embed_texts, photo))
        session.truncated = any(encoder.text_truncated(t) for t in query.terms)
        return session

    def _encoder(self) -> ClipEncoder:
        if self.encoder is None:
            raise RuntimeError("this Explorer has no encoder; use start_vector()")
        return self.encoder

    def start_vector(self, concept: str, vector: np.ndarray) -> ExplorerSession:
        """Start a session from a precomputed unit vector (tests, benchmarks, image queries)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        v = v / (np.linalg.norm(v) or 1.0)
        return ExplorerSession(concept=concept, prior=v, weights=v.copy())

    def resume(
        self, concept: str, prior: np.ndarray, weights: np.ndarray, labels: Mapping[str, int]
    ) -> ExplorerSession:
        """Rebuild a session from persisted state."""
        return ExplorerSession(
            concept=concept,
            prior=np.asarray(prior, dtype=np.float32),
            weights=np.asarray(weights, dtype=np.float32),
            labels=_signs(labels),
        )

    def next_batch(self, session: ExplorerSession, k: int = 9, strategy: Strategy | None = None) -> list[Hit]:
        """``k`` unlabelled images to vote on next, chosen by ``strategy`` (default: the explorer's)."""
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown round strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        labelled = session.labels.keys()
        if strategy == "hard":
            hits = self.store.knn(session.weights, k, exclude_ids=labelled)
        elif strategy == "random":
            hits = self._random(session, k)
        else:
            hits = self._near_boundary(session, k, best=(k + 1) // 2 if strategy == "mixed" else 0)
        return self._found(hits)

    def fit(self, session: ExplorerSession, labels: Mapping[str, int]) -> np.ndarray:
        """Refit on ``labels`` (all of them: image id -> +1/-1, 0 = unlabelled); returns the new weight."""
        session.labels = _signs(labels)
        ids, X = self.store.vectors(list(session.labels))
        if ids:
            y = np.array([session.labels[i] > 0 for i in ids], dtype=np.float32)
            clf = LinearClassifier(session.prior, self.params, weight=session.weights).fit(X, y)
            session.weights = clf.weight
            session.threshold = _threshold(clf, X, y)
        return session.weights

    def top(self, session: ExplorerSession, k: int = 9, include_rejected: bool = False) -> list[Scored]:
        """The current best images by the classifier, best first; images voted 👎 are left out unless asked."""
        rejected = [] if include_rejected else [i for i, v in session.labels.items() if v < 0]
        hits = self._found(self.store.knn(session.weights, k, exclude_ids=rejected))
        return [Scored(h.id, h.url, 1.0 - h.distance, h.caption, h.source) for h in hits]

    def _found(self, hits: list[Hit]) -> list[Hit]:
        """``hits``, unless the search came back empty because the collection is."""
        if not hits and self.store.count() == 0:
            raise EmptyDataset()
        return hits

    def _random(self, session: ExplorerSession, k: int) -> list[Hit]:
        # Seeded by concept and progress so a replayed session shows the same rounds.
        seed = zlib.crc32(session.concept.encode()) ^ (self.seed * 1_000_003 + len(session.labels))
        sample = getattr(self.store, "sample", None)
        if callable(sample):
            return list(sample(k, exclude_ids=session.labels.keys(), seed=seed))
        direction = np.random.default_rng(seed).standard_normal(self.store.dim).astype(np.float32)
        return self.store.knn(direction / np.linalg.norm(direction), k, exclude_ids=session.labels.keys())

    def _near_boundary(self, session: ExplorerSession, k: int, best: int) -> list[Hit]:
        """The ``best`` nearest unlabelled images, then the rest from deeper in the ranking."""
        candidates = self.store.knn(session.weights, self.pool * k, exclude_ids=session.labels.keys())
        chosen, rest = candidates[:best], candidates[best:]
        need = k - len(chosen)
        if need <= 0 or len(rest) <= need:
            return (chosen + rest)[:k]
        if best:  # "mixed": evenly spaced ranks, no calibrated threshold needed
            picks = np.linspace(0, len(rest) - 1, need).round().astype(int)
            return chosen + [rest[i] for i in picks]
        if session.threshold is None and session.labels:
            self._recover_threshold(session)
        if session.threshold is None:
            return rest[:need]
        tau = session.threshold
        return sorted(rest, key=lambda h: abs((1.0 - h.distance) - tau))[:need]

    def _recover_threshold(self, session: ExplorerSession) -> None:
        """A resumed session: recompute the decision boundary from its votes without moving its weight."""
        ids, X = self.store.vectors(list(session.labels))
        y = np.array([session.labels[i] > 0 for i in ids], dtype=np.float32)
        if self.params.method == "prior":  # refits from the prior on all votes: the same fit as before
            clf = LinearClassifier(session.prior, self.params).fit(X, y)
        else:  # a warm-started refit would move the weight; use the midpoint for the current one
            clf = LinearClassifier(session.prior, self.params, weight=session.weights)
        session.threshold = _threshold(clf, X, y)


def _signs(labels: Mapping[str, int]) -> dict[str, int]:
    """Image id -> +1/-1 from vote sums; zero (a tie, or no vote) means unlabelled."""
    return {k: int(np.sign(v)) for k, v in labels.items() if v}


def _threshold(clf: LinearClassifier, X: np.ndarray, y: np.ndarray) -> float | None:
    """The cosine score separating 👍 from 👎: the classifier's own if it learned one, else the midpoint."""
    if not (y > 0).any() or not (y <= 0).any():
        return None
    if clf.bias:
        return -clf.bias
    s = clf.score(X)
    return float((s[y > 0].mean() + s[y <= 0].mean()) / 2)
