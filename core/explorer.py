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

Whatever the strategy, a session's first round (no votes yet) of ``"hard"``, ``"boundary"`` and
``"mixed"`` is the ``k`` best zero-shot images, so every zero-shot hit gets a vote; a round never
shows an image the session has shown or had votes on (contested ones included), nor two images, or
an image and a voted one, closer than :data:`DUPLICATE_COSINE` (bursts, resized copies). Once the
classifier has a decision boundary, the last two rounds got no 👍 and no unlabelled image scores above
the boundary, ``next_batch`` returns no images and sets :attr:`ExplorerSession.exhausted`: nothing
else in the collection looks like it.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.classifier import ClassifierParams, LinearClassifier
from core.errors import EmptyDataset
from core.query import compose, parse
from core.records import Hit, MatchPage, MatchQuery, Scored
from core.store import VectorStore

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.encoder import ClipEncoder


Strategy = Literal["hard", "random", "boundary", "mixed"]
STRATEGIES: tuple[str, ...] = ("hard", "random", "boundary", "mixed")
DEFAULT_STRATEGY: Strategy = "mixed"  # best on the labelling benchmark (bench/results/labelling.md)
# While a classifier has no decision boundary (no 👍 and 👎 yet) its "matches" are its best this many.
TOP_WITHOUT_BOUNDARY = 100
# Two images at least this close (cosine of their CLIP vectors) are one picture for a round or a
# results album: a resized or recompressed copy, or a burst. Chosen in bench/results/labelling.md:
# far above the nearest distinct neighbour in the synthetic data, below what a resized copy gives.
DUPLICATE_COSINE = 0.95


def concept_text(concept: str) -> str:
    """``concept`` as it is searched: control characters (NUL and the like) dropped, whitespace runs
    made one space; "" when nothing visible is left (only zero-width, format or space characters)."""
    text = " ".join("".join(c for c in concept if unicodedata.category(c) != "Cc").split())
    visible = any(unicodedata.category(c)[0] not in "CZ" for c in text)
    return text if visible else ""


@dataclass
class ExplorerSession:
    """One concept being taught: the prior (text or image vector), the classifier weight and the labels."""

    concept: str
    prior: np.ndarray
    weights: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)  # image id -> +1 / -1 (contested ones left out)
    truncated: bool = False  # the concept text was cut to the model's 77 tokens
    # The decision boundary: the cosine score of ``weights`` above which an image is more likely 👍
    # than 👎 (the classifier's learned bias). None until votes of both kinds exist. Not persisted:
    # every fit recomputes it, and a resumed session recovers it from its votes when needed.
    boundary: float | None = None
    # Every image shown in a round or voted on in this session (contested ones too): never shown again.
    seen: set[str] = field(default_factory=set)
    # Soft labels in [-1, 1] (see core.votes), 0.0 = contested; what the last fit used.
    soft: dict[str, float] = field(default_factory=dict)
    # The images of the latest round (set by next_batch; the bot passes them to resume).
    last_round: list[str] = field(default_factory=list)
    previous_round: list[str] = field(default_factory=list)  # the round before it
    # Set by next_batch: the latest round had no 👍 and nothing unlabelled scores above the boundary.
    exhausted: bool = False
    # The last fit kept the prior: leave-one-out, the fitted weight ranked the chat's 👍 worse.
    kept_prior: bool = False
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MatchEstimate:
    """How many images in the collection score above the decision boundary (voted ones by their vote)."""

    count: int  # counted by the store over the whole collection
    boundary: float


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
        duplicate_cosine: float = DUPLICATE_COSINE,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown round strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        self.store = store
        self.encoder = encoder
        self.params = params or ClassifierParams()
        self.strategy: Strategy = strategy
        self.pool = max(1, pool)  # "boundary"/"mixed" look at the nearest pool * k unlabelled images
        self.seed = seed
        self.duplicate_cosine = duplicate_cosine

    def start_text(self, concept: str) -> ExplorerSession:
        """Embed ``concept`` (a text, or a composite such as ``red car -truck``, see :mod:`core.query`)
        and start a session from it; raises :class:`BadConcept` for text with nothing visible in it
        (blank, or only zero-width and control characters)."""
        text = concept_text(concept)
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
        self,
        concept: str,
        prior: np.ndarray,
        weights: np.ndarray,
        labels: Mapping[str, float],
        seen: Iterable[str] = (),
        last_round: Sequence[str] = (),
        previous_round: Sequence[str] = (),
    ) -> ExplorerSession:
        """Rebuild a session from persisted state: ``labels`` as for :meth:`fit`, ``seen`` = images shown,
        ``last_round`` / ``previous_round`` = the images of the latest round and the one before."""
        soft = _soft(labels)
        return ExplorerSession(
            concept=concept,
            prior=np.asarray(prior, dtype=np.float32),
            weights=np.asarray(weights, dtype=np.float32),
            labels=_signs(soft),
            seen=set(seen) | soft.keys() | set(last_round),
            soft=soft,
            last_round=list(last_round),
            previous_round=list(previous_round),
        )

    def next_batch(
        self,
        session: ExplorerSession,
        k: int = 9,
        strategy: Strategy | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        """``k`` images to vote on next, chosen by ``strategy`` (default: the explorer's).

        Never one the session has seen (or in ``exclude``), nor near-duplicates; an empty list with
        ``session.exhausted`` set when the latest two rounds were voted on and got no 👍, and nothing
        unlabelled scores above the decision boundary (a boundary fitted on few votes alone, or one
        round emptied of 👍 by a slip, would end sessions early).
        """
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown round strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        session.seen.update(exclude)
        skip = session.seen | session.soft.keys() | session.labels.keys()
        first = not session.labels
        if strategy == "random":
            candidates = self._random(session, skip, self.pool * k)
        else:
            candidates = self.store.knn(session.weights, self.pool * k, exclude_ids=skip)
        self._found(candidates)
        vectors = self._vectors(session, [h.id for h in candidates] + sorted(skip))
        candidates = self._not_like(candidates, [vectors[i] for i in skip if i in vectors], vectors)
        session.exhausted = False
        rejected = _rejected(session.last_round, session.soft) and _rejected(
            session.previous_round, session.soft
        )
        if strategy != "random" and not first and rejected:
            if session.boundary is None and session.labels:
                self._recover_boundary(session)
            end = session.boundary
            if end is not None and candidates and 1.0 - candidates[0].distance < end:
                session.exhausted = True
                return []
        if strategy in ("hard", "random") or first:
            order = candidates
        elif strategy == "boundary":
            order = self._boundary_order(session, candidates)
        else:
            order = _mixed_order(candidates, (k + 1) // 2, k)
        chosen = _distinct(order, vectors, k, self.duplicate_cosine)
        session.seen.update(h.id for h in chosen)
        session.previous_round, session.last_round = session.last_round, [h.id for h in chosen]
        return chosen

    def fit(self, session: ExplorerSession, labels: Mapping[str, float]) -> np.ndarray:
        """Refit on ``labels`` (all of them: image id -> soft label in [-1, 1], or a vote sum; 0 = contested,
        seen but not learned from); returns the new weight. A label's size is its weight (capped at 1)."""
        session.soft = _soft(labels)
        session.labels = _signs(session.soft)
        session.seen.update(session.soft.keys())
        ids = [i for i in session.soft if session.soft[i]]
        vectors = self._vectors(session, ids)
        ids = [i for i in ids if i in vectors]
        session.boundary, session.kept_prior = None, False
        if ids:
            X = np.stack([vectors[i] for i in ids])
            y = np.array([session.soft[i] > 0 for i in ids], dtype=np.float32)
            w = np.array([min(1.0, abs(session.soft[i])) for i in ids])
            clf = LinearClassifier(session.prior, self.params, weight=session.weights).fit(X, y, w)
            session.weights = clf.weight
            session.boundary = _boundary(clf, X, y)
            session.kept_prior = clf.kept_prior
        return session.weights

    def top(self, session: ExplorerSession, k: int = 9, include_rejected: bool = False) -> list[Scored]:
        """The current best images by the classifier, best first, no two near-duplicates; images voted
        👎 are left out unless asked."""
        rejected = [] if include_rejected else [i for i, v in session.labels.items() if v < 0]
        hits = self._found(self.store.knn(session.weights, 2 * k + 3, exclude_ids=rejected))
        vectors = self._vectors(session, [h.id for h in hits])
        hits = _distinct(hits, vectors, k, self.duplicate_cosine)
        return [Scored(h.id, h.url, 1.0 - h.distance, h.caption, h.source) for h in hits]

    def boundary(self, session: ExplorerSession) -> float | None:
        """The cosine score above which the classifier says yes; None until it has both 👍 and 👎."""
        if session.boundary is None and session.labels:
            self._recover_boundary(session)
        return session.boundary

    def match_query(self, session: ExplorerSession) -> MatchQuery:
        """What the session's classifier accepts: images above its boundary (the top
        :data:`TOP_WITHOUT_BOUNDARY` while it has none), never an image the chat voted 👎."""
        threshold = self.boundary(session)
        rejected = tuple(sorted(i for i, v in session.labels.items() if v < 0))
        cap = TOP_WITHOUT_BOUNDARY if threshold is None else None
        return MatchQuery(session.weights.copy(), threshold, cap, rejected)

    def matches(self, query: MatchQuery, limit: int, offset: int = 0) -> MatchPage:
        """One page of ``query``'s matches, best first, with how many there are; computed in the store."""
        page = self.store.matches(query.weights, query.threshold, limit, offset, query.excluded, query.cap)
        if page.total == 0 and query.threshold is None and self.store.count() == 0:
            raise EmptyDataset()
        return page

    def estimate_matches(self, session: ExplorerSession) -> MatchEstimate | None:
        """How many images score above the decision boundary (None before there is one), counting
        voted images by their vote: the store counts the whole collection in one scan (``matches``),
        the chat's 👎 left out and its 👍 below the boundary added."""
        if session.boundary is None and session.labels:
            self._recover_boundary(session)
        if session.boundary is None:
            return None
        rejected = sorted(i for i, v in session.labels.items() if v < 0)
        above = self.store.matches(session.weights, session.boundary, 1, exclude_ids=rejected).total
        liked = [i for i, v in session.labels.items() if v > 0]
        vectors = self._vectors(session, liked)
        below = sum(1 for i in liked if i in vectors and float(vectors[i] @ session.weights) <= session.boundary)
        return MatchEstimate(above + below, session.boundary)

    def _found(self, hits: list[Hit]) -> list[Hit]:
        """``hits``, unless the search came back empty because the collection is."""
        if not hits and self.store.count() == 0:
            raise EmptyDataset()
        return hits

    def _vectors(self, session: ExplorerSession, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of ``ids`` (those stored), read once per session object."""
        cache = session._vectors
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        if missing:
            found, X = self.store.vectors(missing)
            cache.update(zip(found, np.asarray(X, dtype=np.float32), strict=True))
        return cache

    def _not_like(
        self, hits: list[Hit], voted: list[np.ndarray], vectors: Mapping[str, np.ndarray]
    ) -> list[Hit]:
        """``hits`` without near-duplicates of the images already seen."""
        if not voted or not hits:
            return hits
        V = np.stack(voted)
        return [
            h for h in hits if h.id not in vectors or float((V @ vectors[h.id]).max()) < self.duplicate_cosine
        ]

    def _random(self, session: ExplorerSession, skip: set[str], n: int) -> list[Hit]:
        # Seeded by concept and progress so a replayed session shows the same rounds.
        seed = zlib.crc32(session.concept.encode()) ^ (self.seed * 1_000_003 + len(session.labels))
        sample = getattr(self.store, "sample", None)
        if callable(sample):
            return list(sample(n, exclude_ids=skip, seed=seed))
        direction = np.random.default_rng(seed).standard_normal(self.store.dim).astype(np.float32)
        return self.store.knn(direction / np.linalg.norm(direction), n, exclude_ids=skip)

    def _boundary_order(self, session: ExplorerSession, candidates: list[Hit]) -> list[Hit]:
        """Candidates closest to the decision boundary first (the votes the classifier is least sure of)."""
        if session.boundary is None and session.labels:
            self._recover_boundary(session)
        if session.boundary is None:
            return candidates
        tau = session.boundary
        return sorted(candidates, key=lambda h: abs((1.0 - h.distance) - tau))

    def _recover_boundary(self, session: ExplorerSession) -> None:
        """A resumed session: recompute the decision boundary from its votes without moving its weight."""
        ids = [i for i in session.soft if session.soft[i]] or list(session.labels)
        vectors = self._vectors(session, ids)
        ids = [i for i in ids if i in vectors]
        if not ids:
            return
        X = np.stack([vectors[i] for i in ids])
        y = np.array([session.labels.get(i, 0) > 0 for i in ids], dtype=np.float32)
        if self.params.method == "prior":  # refits from the prior on all votes: the same fit as before
            w = np.array([min(1.0, abs(session.soft.get(i, 1.0))) for i in ids])
            clf = LinearClassifier(session.prior, self.params).fit(X, y, w)
        else:  # a warm-started refit would move the weight; use the midpoint for the current one
            clf = LinearClassifier(session.prior, self.params, weight=session.weights)
        session.boundary = _boundary(clf, X, y)


def _rejected(round_ids: Sequence[str], soft: Mapping[str, float]) -> bool:
    """The round was voted on (at least half of it) and got no 👍."""
    voted = [soft[i] for i in round_ids if i in soft]
    return bool(round_ids) and 2 * len(voted) >= len(round_ids) and not any(v > 0 for v in voted)


def _mixed_order(candidates: list[Hit], best: int, k: int) -> list[Hit]:
    """The ``best`` first, then ``k - best`` spread evenly over the ranks of the rest, then the others."""
    head, rest = candidates[:best], candidates[best:]
    need = k - len(head)
    if need <= 0 or len(rest) <= need:
        return candidates
    picks = np.linspace(0, len(rest) - 1, need).round().astype(int).tolist()
    spread = [rest[i] for i in picks]
    chosen = {h.id for h in spread}
    return head + spread + [h for h in rest if h.id not in chosen]


def _distinct(order: list[Hit], vectors: Mapping[str, np.ndarray], k: int, cosine: float) -> list[Hit]:
    """The first ``k`` of ``order`` that are not within ``cosine`` of an image taken before them."""
    chosen: list[Hit] = []
    taken: list[np.ndarray] = []
    for h in order:
        v = vectors.get(h.id)
        if v is not None and taken and float((np.stack(taken) @ v).max()) >= cosine:
            continue
        chosen.append(h)
        if v is not None:
            taken.append(v)
        if len(chosen) == k:
            break
    return chosen


def _soft(labels: Mapping[str, float]) -> dict[str, float]:
    """Image id -> soft label clipped to [-1, 1]; zeros (contested) kept."""
    return {k: float(np.clip(v, -1.0, 1.0)) for k, v in labels.items()}


def _signs(labels: Mapping[str, float]) -> dict[str, int]:
    """Image id -> +1/-1 from soft labels or vote sums; zero (a tie, or no vote) means unlabelled."""
    return {k: int(np.sign(v)) for k, v in labels.items() if v}


def _boundary(clf: LinearClassifier, X: np.ndarray, y: np.ndarray) -> float | None:
    """The cosine score separating 👍 from 👎: the classifier's own if it learned one, else the midpoint."""
    if not (y > 0).any() or not (y <= 0).any():
        return None
    if clf.boundary is not None:
        return clf.boundary
    s = clf.score(X)
    return float((s[y > 0].mean() + s[y <= 0].mean()) / 2)
