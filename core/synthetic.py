"""Synthetic CLIP-like embeddings (benchmark "data A") and a small in-memory vector store.

Real CLIP ViT-B/32 embeddings have a shape that decides how hard few-shot learning is, and the
generator reproduces it rather than scattering random points:

* **A narrow cone per modality.** Every image vector shares a large common component, so two
  unrelated photos still have cosine ~0.5; text vectors share another one. The two cones are far
  apart (the *modality gap*), so a caption and its own photos only reach cosine ~0.3 (~0.16 for
  other photos), while a photo and its nearest neighbour reach ~0.75.
* **A hierarchy of meaning.** Concepts come in groups of confusable neighbours ("dog", "wolf",
  "fox" in one group); each concept has a few sub-clusters (styles, viewpoints) of different size,
  and photos scatter around their sub-cluster.
* **Imperfect text.** A concept's text vector points at its class only approximately — partly at
  the group, partly at one favourite sub-cluster, partly elsewhere — so zero-shot search mixes in
  neighbours and misses sub-clusters, which is what labelling has to fix.
* **Background.** Some photos belong to no concept.

:func:`generate` returns ids, unit vectors, a class per image (-1 = background) and a unit text
vector per class; the same seed gives the same data. With the defaults (25k images, 60 concepts)
:func:`describe` measures: text-image cosine 0.28 for matches and 0.16 otherwise, nearest image
neighbour 0.73, random image pair 0.51, zero-shot precision@9 0.41 (0 to 1 across concepts).

:class:`NumpyStore` is an exact in-memory implementation of :class:`core.store.VectorStore` for fast
inner loops in benchmarks and tests of pure ranking logic; the product uses the ClickHouse store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import DimensionMismatch
from core.records import Hit, ImageBatch, IndexStatus, MatchPage, Scored, StoreInfo


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give CLIP-like statistics (see :func:`describe`)."""

    n_images: int = 25_000
    dim: int = 512
    n_groups: int = 12  # groups of confusable concepts
    classes_per_group: int = 5
    subclusters: tuple[int, int] = (2, 5)  # sub-clusters per class, inclusive range
    background: float = 0.10  # share of images in no class
    zipf: float = 0.8  # class sizes ~ rank**-zipf: some concepts are rare
    # Semantic geometry (mixing weights of unit directions).
    class_spread: float = 0.45  # class vs its group: sibling classes at cosine ~0.83
    sub_spread: float = 0.65  # sub-cluster vs its class
    # Image = common image direction + semantic (sub-cluster) + per-image noise.
    img_common: float = 1.0
    img_semantic: float = 0.95
    img_noise: float = 0.3
    # Text = common text direction + imperfect semantic direction + noise.
    txt_common: float = 1.4
    txt_semantic: float = 0.55
    txt_noise: float = 0.35
    txt_group_pull: float = 1.5  # how much a text leans to its group rather than its class
    txt_favourite: float = 0.3  # how much a text leans to one sub-cluster
    txt_error: float = 1.0  # how much a text leans to an unrelated concept (a "jaguar" the car)
    txt_unrelated: int = 1  # how many unrelated concepts it leans to (each by txt_error)
    img_jitter: float = 1.1  # per-image meaning around its sub-cluster
    modality_overlap: float = 0.15  # cosine between the image and text common directions
    seed: int = 0


# A stress variant: concepts overlap more in image space too (siblings closer, photos more varied),
# so even image-based classifiers stay below 1.0 and methods separate more clearly.
HARDER = SyntheticConfig(class_spread=0.35, img_jitter=1.5, sub_spread=0.8)


@dataclass(frozen=True)
class SyntheticData:
    """Generated data: ``vectors[i]`` has id ``ids[i]`` and class ``labels[i]`` (-1: none)."""

    ids: list[str]
    vectors: np.ndarray  # float32 (n, dim), unit rows
    labels: np.ndarray  # int (n,)
    modes: np.ndarray  # int (n,): the sub-cluster (visual mode) of each image within its class, -1: none
    text_vectors: np.ndarray  # float32 (n_classes, dim), unit rows
    class_names: list[str]
    groups: np.ndarray  # int (n_classes,): the confusable group of each class

    def batch(self, source: str = "vectors") -> ImageBatch:
        """The images as an :class:`ImageBatch` for ``store.insert``."""
        return ImageBatch(
            ids=list(self.ids),
            urls=[f"synthetic://{i}" for i in self.ids],
            vectors=self.vectors,
            captions=[self.class_names[c] if c >= 0 else "" for c in self.labels],
            sources=[source] * len(self.ids),
        )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mix(rng: np.random.Generator, base: np.ndarray, spread: float) -> np.ndarray:
    """Unit vectors near ``base`` rows: base + spread * a random unit direction."""
    return _unit(base + spread * _unit(rng.standard_normal(base.shape)))


def generate(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate CLIP-like image and text vectors; deterministic for a given ``config.seed``."""
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    d = c.dim
    n_classes = c.n_groups * c.classes_per_group

    img_common = _unit(rng.standard_normal(d))
    # The text cone's axis overlaps the image cone's axis by ``modality_overlap``.
    other = _unit(rng.standard_normal(d) - (rng.standard_normal(d) @ img_common) * img_common)
    txt_common = _unit(c.modality_overlap * img_common + np.sqrt(1 - c.modality_overlap**2) * other)

    group_dir = _unit(rng.standard_normal((c.n_groups, d)))
    groups = np.repeat(np.arange(c.n_groups), c.classes_per_group)
    class_dir = _mix(rng, group_dir[groups], c.class_spread)

    # Class sizes follow a Zipf-like law, shuffled so size is unrelated to the group.
    weights = (np.arange(1, n_classes + 1, dtype=float) ** -c.zipf)[rng.permutation(n_classes)]
    n_fg = int(round(c.n_images * (1 - c.background)))
    sizes = np.floor(weights / weights.sum() * n_fg).astype(int)
    sizes[: n_fg - sizes.sum()] += 1

    vecs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    modes: list[np.ndarray] = []
    favourite: list[np.ndarray] = []
    for k in range(n_classes):
        n_sub = int(rng.integers(c.subclusters[0], c.subclusters[1] + 1))
        sub_dir = _mix(rng, np.repeat(class_dir[k][None], n_sub, 0), c.sub_spread)
        share = rng.dirichlet(np.full(n_sub, 2.0))
        which = rng.choice(n_sub, size=sizes[k], p=share)
        sem = _mix(rng, sub_dir[which], c.img_jitter)
        vecs.append(_image(rng, c, img_common, sem))
        labels.append(np.full(sizes[k], k))
        modes.append(which)
        favourite.append(sub_dir[int(np.argmax(share))])
    n_bg = c.n_images - int(sizes.sum())
    bg_sem = _unit(rng.standard_normal((n_bg, d)))
    vecs.append(_image(rng, c, img_common, bg_sem))
    labels.append(np.full(n_bg, -1))
    modes.append(np.full(n_bg, -1))

    unrelated = (
        c.txt_error * class_dir[(np.arange(n_classes) + rng.integers(1, n_classes, n_classes)) % n_classes]
    )
    for _ in range(c.txt_unrelated - 1):  # drawn after the first, so one-concept data stays as it was
        unrelated = (
            unrelated
            + c.txt_error
            * class_dir[(np.arange(n_classes) + rng.integers(1, n_classes, n_classes)) % n_classes]
        )
    text_sem = _unit(
        class_dir + c.txt_group_pull * group_dir[groups] + c.txt_favourite * np.stack(favourite) + unrelated
    )
    text = _unit(
        c.txt_common * txt_common
        + c.txt_semantic * text_sem
        + c.txt_noise * _unit(rng.standard_normal((n_classes, d)))
    )

    order = rng.permutation(c.n_images)
    X = np.concatenate(vecs)[order].astype(np.float32)
    y = np.concatenate(labels)[order]
    return SyntheticData(
        ids=[f"s{i:07d}" for i in range(c.n_images)],
        vectors=X,
        labels=y,
        modes=np.concatenate(modes)[order],
        text_vectors=text.astype(np.float32),
        class_names=[f"concept-{g:02d}-{k:03d}" for k, g in enumerate(groups)],
        groups=groups,
    )


def _image(rng: np.random.Generator, c: SyntheticConfig, common: np.ndarray, sem: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal(sem.shape) / np.sqrt(c.dim)
    return _unit(c.img_common * common + c.img_semantic * sem + c.img_noise * noise)


def precision_at(ranked_labels: np.ndarray, target: int, k: int) -> float:
    """Share of the first ``k`` ranked labels equal to ``target``."""
    return float(np.mean(np.asarray(ranked_labels[:k]) == target)) if k else 0.0


def describe(data: SyntheticData, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """CLIP-likeness statistics: text-image cosines, image neighbour cosines, zero-shot precision@9."""
    rng = np.random.default_rng(seed)
    X, y, T = data.vectors, data.labels, data.text_vectors
    sims = X @ T.T  # (n, classes)
    fg = y >= 0
    match = sims[np.flatnonzero(fg), y[fg]]
    mask = np.ones_like(sims, dtype=bool)
    mask[np.flatnonzero(fg), y[fg]] = False
    pick = rng.choice(len(X), size=min(sample, len(X)), replace=False)
    S = X[pick] @ X.T
    S[np.arange(len(pick)), pick] = -np.inf
    nn = S.max(axis=1)
    rand = X[pick] @ X[rng.choice(len(X), size=len(pick))].T
    p9 = [precision_at(y[np.argsort(-sims[:, k])], k, 9) for k in range(len(T))]
    sizes = np.bincount(y[fg], minlength=len(T))
    return {
        "text_image_match": float(match.mean()),
        "text_image_nonmatch": float(sims[mask].mean()),
        "image_nn": float(nn.mean()),
        "image_random_pair": float(np.diag(rand).mean()),
        "zero_shot_p9": float(np.mean(p9)),
        "zero_shot_p9_min": float(np.min(p9)),
        "zero_shot_p9_max": float(np.max(p9)),
        "class_size_min": float(sizes.min()),
        "class_size_max": float(sizes.max()),
    }


class NumpyStore:
    """Exact in-memory :class:`~core.store.VectorStore` (brute-force cosine) for benchmarks and tests."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._urls: list[str] = []
        self._captions: list[str] = []
        self._sources: list[str] = []
        self._X = np.zeros((0, dim), dtype=np.float32)

    def ensure_schema(self) -> None:
        """Nothing to create."""

    def insert(self, batch: ImageBatch) -> int:
        """Append rows (ids must be new)."""
        V = np.asarray(batch.vectors, dtype=np.float32).reshape(len(batch), -1)
        if V.shape[1] != self.dim:
            raise DimensionMismatch(self.dim, V.shape[1], "insert")
        start = len(self._ids)
        self._ids += batch.ids
        self._rows.update((i, start + n) for n, i in enumerate(batch.ids))
        self._urls += batch.urls
        self._captions += batch.captions
        self._sources += batch.sources
        self._X = np.concatenate([self._X, V])
        return len(batch)

    def knn(self, vector: np.ndarray, k: int, exclude_ids: Iterable[str] = ()) -> list[Hit]:
        """Exact nearest by cosine distance, skipping ``exclude_ids``."""
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise DimensionMismatch(self.dim, q.shape[0], "knn")
        sims = self._X @ (q / (np.linalg.norm(q) or 1.0))
        rows = [self._rows[i] for i in exclude_ids if i in self._rows]
        sims[rows] = -np.inf
        k = min(k, len(self._ids) - len(rows))
        if k <= 0:
            return []
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [self._hit(int(r), 1.0 - float(sims[r])) for r in top]

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors of the ``ids`` that exist, in the order given."""
        found = [i for i in ids if i in self._rows]
        return found, self._X[[self._rows[i] for i in found]].reshape(len(found), self.dim)

    def matches(
        self,
        weight: np.ndarray,
        threshold: float | None,
        limit: int,
        offset: int = 0,
        exclude_ids: Iterable[str] = (),
        cap: int | None = None,
        added: tuple[int, int] | None = None,
    ) -> MatchPage:
        """Rows scoring above ``threshold``, best first (ties by id), one page: the numpy reference.
        Rows carry no insert time here, so ``added`` is ignored."""
        w = np.asarray(weight, dtype=np.float32).reshape(-1)
        if w.shape[0] != self.dim:
            raise DimensionMismatch(self.dim, w.shape[0], "matches")
        sims = self._X @ (w / (np.linalg.norm(w) or 1.0))
        keep = np.ones(len(sims), dtype=bool) if threshold is None else sims > threshold
        keep[[self._rows[i] for i in exclude_ids if i in self._rows]] = False
        rows = np.flatnonzero(keep)
        ids = np.asarray(self._ids, dtype=object)[rows]
        order = rows[np.lexsort((ids, -sims[rows]))]
        if cap is not None:
            order = order[: max(0, cap)]
        page = order[max(0, offset) : max(0, offset) + max(0, limit)]
        items = [
            Scored(self._ids[r], self._urls[r], float(sims[r]), self._captions[r], self._sources[r])
            for r in page
        ]
        return MatchPage(len(order), max(0, offset), items, threshold)

    def latest_added(self) -> int:
        """No insert times here: always 0."""
        return 0

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Rows of the ``ids`` that exist, with distance 0."""
        return [self._hit(self._rows[i], 0.0) for i in ids if i in self._rows]

    def ids_present(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        return {i for i in ids if i in self._rows}

    def sample(self, k: int, exclude_ids: Iterable[str] = (), seed: int | None = None) -> list[Hit]:
        """``k`` uniformly random rows not in ``exclude_ids``."""
        rng = np.random.default_rng(seed)
        skip = set(exclude_ids)
        rows = [r for r in rng.permutation(len(self._ids))[: k + len(skip)] if self._ids[r] not in skip]
        return [self._hit(int(r), 0.0) for r in rows[:k]]

    def count(self) -> int:
        """Number of rows."""
        return len(self._ids)

    def index_create(
        self, wait: bool = True, progress: Callable[[IndexStatus], None] | None = None
    ) -> IndexStatus:
        """Exact search needs no index."""
        return IndexStatus(exists=False, detail="exact in-memory search")

    def index_status(self) -> IndexStatus:
        """Never an index."""
        return IndexStatus(exists=False, detail="exact in-memory search")

    def index_drop(self) -> IndexStatus:
        """Never an index."""
        return IndexStatus(exists=False, detail="exact in-memory search")

    def info(self) -> StoreInfo:
        """Describe the in-memory store."""
        return StoreInfo("numpy", "memory://", "none", "images", self.count(), self.dim, self.index_status())

    def close(self) -> None:
        """Release the arrays."""
        self._X = np.zeros((0, self.dim), dtype=np.float32)

    def _hit(self, row: int, distance: float) -> Hit:
        return Hit(self._ids[row], self._urls[row], distance, self._captions[row], self._sources[row])
