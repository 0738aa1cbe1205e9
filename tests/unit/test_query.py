"""Composite concepts: the parser, and how the composed vector ranks synthetic CLIP-like images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from core.errors import BadConcept, OnlyNegativeTerms, TooManyTerms
from core.query import MAX_TERMS, Query, combine, compose, parse
from core.synthetic import NumpyStore, SyntheticConfig, generate


@pytest.mark.parametrize(
    ("text", "positive", "negative"),
    [
        ("a house by the lake", ("a house by the lake",), ()),
        ("red car -truck", ("red car",), ("truck",)),
        ("red car - truck", ("red car",), ("truck",)),
        ("red car \u2212truck", ("red car",), ("truck",)),  # the typographic minus
        ("a cat + a hat", ("a cat", "a hat"), ()),
        ("a cat +a hat -dog -people", ("a cat", "a hat"), ("dog", "people")),
        ("a t-shirt with an x-ray print", ("a t-shirt with an x-ray print",), ()),  # hyphens stay
        ("  a  cat  ++  a hat  ", ("a cat", "a hat"), ()),  # empty terms are dropped
        ("собака -кошка", ("собака",), ("кошка",)),
    ],
)
def test_terms_split_on_a_sign_that_starts_a_word(
    text: str, positive: tuple[str, ...], negative: tuple[str, ...]
) -> None:
    assert parse(text) == Query(positive, negative)


def test_only_minus_terms_or_nothing_is_refused_with_a_clear_reason() -> None:
    with pytest.raises(OnlyNegativeTerms, match="what to look for"):
        parse("-truck -bus")
    with pytest.raises(BadConcept, match="empty"):
        parse("  + - ")
    with pytest.raises(TooManyTerms, match=str(MAX_TERMS)):
        parse(" + ".join(f"t{i}" for i in range(MAX_TERMS + 1)))


def test_with_a_photo_words_are_optional_and_may_only_subtract() -> None:
    assert parse("", photo=True) == Query((), ())
    assert parse("-people", photo=True) == Query((), ("people",))
    assert parse("at night", photo=True) == Query(("at night",), ())


def test_compose_embeds_every_term_in_one_call() -> None:
    calls: list[list[str]] = []
    table = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.0, 0.0, 1.0]}

    def embed(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([table[t] for t in texts], np.float32)

    v = compose(parse("a + b -c"), embed)
    assert calls == [["a", "b", "c"]]
    assert v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    # unit(unit(a + b) - 0.5 c): a and b equal, c negative
    assert v[0] == pytest.approx(v[1]) and v[2] < 0


@pytest.fixture(scope="module")
def data() -> tuple[NumpyStore, np.ndarray, np.ndarray, np.ndarray]:
    """CLIP-shaped synthetic images and concept texts (modality gap, confusable neighbours)."""
    d = generate(SyntheticConfig(n_images=6000, seed=3))
    store = NumpyStore(d.vectors.shape[1])
    store.insert(d.batch())
    return store, d.vectors, d.labels, d.text_vectors


def _share(store: NumpyStore, labels: np.ndarray, query: np.ndarray, cls: int, k: int = 50) -> float:
    """Share of the ``k`` nearest images that belong to class ``cls`` (ids are ``s<row>``)."""
    rows = [int(h.id[1:]) for h in store.knn(query, k)]
    return float(np.mean(labels[rows] == cls))


def _text_affinity(store: NumpyStore, vectors: np.ndarray, query: np.ndarray, text: np.ndarray) -> float:
    rows = [int(h.id[1:]) for h in store.knn(query, 50)]
    return float((vectors[rows] @ text).mean())


def test_a_minus_term_pushes_its_images_down(
    data: tuple[NumpyStore, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    store, _, labels, texts = data
    sibling_before, sibling_after, own_before, own_after = [], [], [], []
    for a in range(0, 60, 5):  # the first concept of each group, minus its most confusable sibling
        b = a + 1 + int(np.argmax(texts[a + 1 : a + 5] @ texts[a]))
        plain, minus = texts[a], combine(texts[[a]], texts[[b]])
        sibling_before.append(_share(store, labels, plain, b))
        sibling_after.append(_share(store, labels, minus, b))
        own_before.append(_share(store, labels, plain, a))
        own_after.append(_share(store, labels, minus, a))
        assert sibling_after[-1] <= sibling_before[-1]
    assert np.mean(sibling_after) < np.mean(sibling_before) - 0.05  # the sibling really goes down
    assert np.mean(own_after) >= np.mean(own_before)  # and the concept itself is not lost


def test_a_photo_plus_words_moves_toward_the_words(
    data: tuple[NumpyStore, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    store, vectors, labels, texts = data
    rng = np.random.default_rng(0)
    before, after = [], []
    for _ in range(10):
        photo = int(rng.choice(np.flatnonzero(labels >= 0)))
        other = int((labels[photo] + 5 * rng.integers(1, 12)) % 60)  # a concept of another group
        moved = combine(texts[[other]], np.zeros((0, texts.shape[1])), vectors[photo])
        # every time, the results lean further toward the words ...
        assert _text_affinity(store, vectors, moved, texts[other]) > _text_affinity(
            store, vectors, vectors[photo], texts[other]
        )
        before.append(_share(store, labels, vectors[photo], other))
        after.append(_share(store, labels, moved, other))
        # ... and stay the photo's neighbourhood: closer to the photo than the words alone are
        assert float(moved @ vectors[photo]) > float(texts[other] @ vectors[photo])
    assert np.mean(after) > np.mean(before)  # images of the words' concept come up
