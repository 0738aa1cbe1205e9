"""Vector store: the ``VectorStore`` protocol and its ClickHouse/MyScale implementation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from core.records import Hit, ImageBatch, IndexStatus, StoreInfo


class VectorStore(Protocol):
    """What the rest of vdx needs from a vector database. Every method is blocking and thread-safe."""

    dim: int

    def ensure_schema(self) -> None:
        """Create the image table if it does not exist (idempotent)."""

    def insert(self, batch: ImageBatch) -> int:
        """Insert rows in columnar form; returns the number inserted."""

    def knn(self, vector: np.ndarray, k: int, exclude_ids: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` nearest images by cosine distance, nearest first, skipping ``exclude_ids``."""

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors of ``ids`` (those that exist, in the order given) as float32 ``(n, dim)``."""

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Rows of ``ids`` (those that exist, in the order given) with distance 0."""

    def ids_present(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored already."""

    def count(self) -> int:
        """Number of stored images."""

    def index_create(self) -> IndexStatus:
        """Build the vector index for the dialect (HNSW or MSTG)."""

    def index_status(self) -> IndexStatus:
        """Whether a vector index exists, and its state."""

    def index_drop(self) -> IndexStatus:
        """Drop the vector index if there is one."""

    def info(self) -> StoreInfo:
        """Backend, dialect, table, row count, dimension and index status."""

    def close(self) -> None:
        """Release the connection (and the embedded database's lock)."""
