"""Typed records that cross module boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Hit(NamedTuple):
    """One image returned by a search: ``distance`` is cosine distance (0 = same direction)."""

    id: str
    url: str
    distance: float
    caption: str = ""
    source: str = ""  # "unsplash", "folder" or "vectors"


class Scored(NamedTuple):
    """One image ranked by a classifier: higher ``score`` = more like the concept."""

    id: str
    url: str
    score: float
    caption: str = ""
    source: str = ""


@dataclass(frozen=True)
class ImageBatch:
    """Rows to insert, in columnar form: ``vectors`` is float32 ``(n, dim)``, L2-normalised."""

    ids: list[str]
    urls: list[str]
    vectors: np.ndarray
    captions: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class IndexStatus:
    """State of the vector index on the image table."""

    exists: bool
    kind: str = ""  # e.g. "hnsw" or "MSTG"
    detail: str = ""  # e.g. "Built 3/3 parts", parameters
    state: str = ""  # "Built", "InProgress" or "Error" while the index exists
    parts_built: int = 0
    parts_total: int = 0
    error: str = ""  # the last build failure, one line

    @property
    def built(self) -> bool:
        """The index exists and every part has it."""
        return self.exists and self.state == "Built"


@dataclass(frozen=True)
class StoreInfo:
    """What ``vdx info`` shows."""

    backend: str  # "chdb" or "http"
    url: str  # password removed
    dialect: str  # "clickhouse" or "myscale"
    table: str
    rows: int
    dim: int
    index: IndexStatus
    cluster: str = ""  # VDX_DB_CLUSTER: the table is Distributed over this cluster
