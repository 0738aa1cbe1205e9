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
class MatchPage:
    """One page of the images a classifier accepts, best first, and how many it accepts in all.

    ``threshold`` is the cosine score a match must exceed (None: no boundary yet, so the top ``total``
    by score); ``offset`` is the rank (0-based) of the page's first item.
    """

    total: int
    offset: int
    items: list[Scored]
    threshold: float | None = None


@dataclass(frozen=True, eq=False)  # holds an array: compared by identity
class MatchQuery:
    """What decides a classifier's matches: its unit weight, its boundary (or the top ``cap`` while it
    has none) and the images the chat rejected. Kept as one value so every page of a listing, and an
    export made from it, uses the same classifier."""

    weights: np.ndarray
    threshold: float | None
    cap: int | None = None
    excluded: tuple[str, ...] = ()


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
    model: ModelIdentity | None = None  # the model recorded with the vectors


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a set of vectors: ``name`` (hub name or directory), ``dim``, and a ``fingerprint``
    that tells two models of the same size apart (``rev:<hub commit>`` or ``sha256:<weights digest>``;
    empty when unknown)."""

    name: str
    dim: int
    fingerprint: str = ""

    def same_model(self, other: ModelIdentity) -> bool:
        """True when both describe the same weights: fingerprints decide when both have one, else names."""
        if self.dim != other.dim:
            return False
        if self.fingerprint and other.fingerprint:
            return self.fingerprint == other.fingerprint
        return self.name == other.name

    def describe(self) -> str:
        """``name (512-d, sha256:0123abcd)`` for messages."""
        fp = f", {self.fingerprint[:15]}" if self.fingerprint else ""
        return f"{self.name} ({self.dim}-d{fp})"
