"""The labelling loop: concept -> rounds of unlabelled nearest images -> refit -> best results.

No Telegram here: the bot, the CLI and the benchmarks all drive this same API. Every method is
blocking (model and database work); async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.classifier import ClassifierParams, LinearClassifier
from core.errors import BadConcept, EmptyDataset
from core.records import Hit, Scored
from core.store import VectorStore

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.encoder import ClipEncoder


@dataclass
class ExplorerSession:
    """One concept being taught: the prior (text or image vector), the classifier weight and the labels."""

    concept: str
    prior: np.ndarray
    weights: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)  # image id -> +1 / -1
    truncated: bool = False  # the concept text was cut to the model's 77 tokens


class Explorer:
    """Starts sessions, proposes rounds (hard negatives), refits and ranks."""

    def __init__(
        self,
        store: VectorStore,
        encoder: ClipEncoder | None = None,
        params: ClassifierParams | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.params = params or ClassifierParams()

    def start_text(self, concept: str) -> ExplorerSession:
        """Embed ``concept`` and start a session from it; raises :class:`BadConcept` for blank text."""
        text = " ".join(concept.split())
        if not text:
            raise BadConcept("the concept is empty: describe what you are looking for, e.g. 'a house by the lake'")
        if self.encoder is None:
            raise RuntimeError("this Explorer has no encoder; use start_vector()")
        vector = self.encoder.embed_texts([text])[0]
        session = self.start_vector(text, vector)
        session.truncated = self.encoder.text_truncated(text)
        return session

    def start_image(self, image: Image, concept: str = "this photo") -> ExplorerSession:
        """Start a session from a photo's vector."""
        if self.encoder is None:
            raise RuntimeError("this Explorer has no encoder; use start_vector()")
        return self.start_vector(concept, self.encoder.embed_images([image])[0])

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
            labels={k: int(v) for k, v in labels.items() if v},
        )

    def next_batch(self, session: ExplorerSession, k: int = 9) -> list[Hit]:
        """The ``k`` nearest unlabelled images to the current classifier (hard negatives)."""
        hits = self.store.knn(session.weights, k, exclude_ids=session.labels.keys())
        if not hits and self.store.count() == 0:
            raise EmptyDataset()
        return hits

    def fit(self, session: ExplorerSession, labels: Mapping[str, int]) -> np.ndarray:
        """Refit on ``labels`` (all of them: image id -> +1/-1, 0 = unlabelled); returns the new weight."""
        session.labels = {k: int(np.sign(v)) for k, v in labels.items() if v}
        ids, X = self.store.vectors(list(session.labels))
        if ids:
            y = np.array([session.labels[i] > 0 for i in ids], dtype=np.float32)
            clf = LinearClassifier(session.prior, self.params)
            clf._weight = np.asarray(session.weights, dtype=np.float32)
            session.weights = clf.fit(X, y).weight
        return session.weights

    def top(self, session: ExplorerSession, k: int = 9) -> list[Scored]:
        """The current best images by the classifier, labelled or not, best first."""
        hits = self.store.knn(session.weights, k)
        if not hits and self.store.count() == 0:
            raise EmptyDataset()
        return [Scored(h.id, h.url, 1.0 - h.distance, h.caption, h.source) for h in hits]
