"""Composite concepts: ``red car -truck``, ``a cat + a hat``, and a photo moved by words.

One parser for the bot and ``vdx search``. A concept is a list of terms: a ``+`` or ``-`` that starts a
word (at the beginning or after a space) starts a new term, so ``t-shirt`` and ``x-ray`` stay whole;
``−`` (U+2212) is read as ``-``. Terms without a sign add, ``-`` terms subtract; ``a + + b`` is ``a + b``.

How the vector is composed (every input vector is a unit vector; :data:`NEGATIVE_WEIGHT`,
:data:`TEXT_ON_PHOTO_WEIGHT` are the documented weights):

* ``t`` = the unit mean of the positive terms (``a cat + a hat``: both count equally);
* with a photo ``p``: ``base = unit(p + TEXT_ON_PHOTO_WEIGHT * t)`` — the photo moved toward the words
  (``p`` alone without words); without one, ``base = t``;
* ``n`` = the unit mean of the negative terms; the query is ``unit(base - NEGATIVE_WEIGHT * n)``.

Search ranks by cosine, so an image's score is ``x.base - NEGATIVE_WEIGHT * x.n`` (up to one factor for
all images): images like a minus term go down, by half of how much they resemble it. The composed
vector is what the session starts from, and so the classifier's prior.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import BadConcept, OnlyNegativeTerms, TooManyTerms

NEGATIVE_WEIGHT = 0.5
TEXT_ON_PHOTO_WEIGHT = 1.0
MAX_TERMS = 8  # each term is one text embedding

_SIGN = re.compile(r"(?:^|(?<=\s))([+\-\u2212]+)")  # a run such as "++" counts once; any minus wins


@dataclass(frozen=True)
class Query:
    """A parsed concept: the terms to look for and the terms to push down."""

    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()

    @property
    def composite(self) -> bool:
        """More than one plain text term."""
        return len(self.positive) + len(self.negative) > 1

    @property
    def terms(self) -> tuple[str, ...]:
        """Every term, positives first (the order :func:`compose` takes their vectors in)."""
        return self.positive + self.negative

    def __str__(self) -> str:
        text = " + ".join(self.positive)
        return " ".join([text, *(f"-{t}" for t in self.negative)]).strip()


def parse(text: str, *, photo: bool = False) -> Query:
    """Split ``text`` into terms; raises :class:`BadConcept` for nothing to look for.

    With ``photo`` the photo is the thing looked for, so ``text`` may be empty or only minus terms.
    """
    text = " ".join(text.split())
    positive: list[str] = []
    negative: list[str] = []
    sign = "+"
    start = 0
    for m in [*_SIGN.finditer(text), None]:
        end = m.start(1) if m else len(text)
        term = text[start:end].strip()
        if term:
            (negative if "-" in sign or "\u2212" in sign else positive).append(term)
        if m:
            sign, start = m.group(1), m.end(1)
    if len(positive) + len(negative) > MAX_TERMS:
        raise TooManyTerms(MAX_TERMS)
    if not positive and not photo:
        if negative:
            raise OnlyNegativeTerms()
        raise BadConcept(
            "the concept is empty: describe what you are looking for, e.g. 'a house by the lake'"
        )
    return Query(tuple(positive), tuple(negative))


def compose(
    query: Query, embed_texts: Callable[[Sequence[str]], np.ndarray], photo: np.ndarray | None = None
) -> np.ndarray:
    """The unit search vector of ``query`` (and ``photo``), embedding all terms in one call."""
    vectors = embed_texts(list(query.terms)) if query.terms else np.zeros((0, 0), np.float32)
    pos, neg = vectors[: len(query.positive)], vectors[len(query.positive) :]
    return combine(pos, neg, photo)


def combine(positive: np.ndarray, negative: np.ndarray, photo: np.ndarray | None = None) -> np.ndarray:
    """:func:`compose` on vectors already embedded: positives ``(n, d)``, negatives ``(m, d)``."""
    base: np.ndarray | None = None
    if len(positive):
        base = _unit(np.asarray(positive, np.float64).mean(axis=0))
    if photo is not None:
        p = _unit(np.asarray(photo, np.float64).reshape(-1))
        base = p if base is None else _unit(p + TEXT_ON_PHOTO_WEIGHT * base)
    if base is None:
        raise OnlyNegativeTerms()
    if len(negative):
        base = _unit(base - NEGATIVE_WEIGHT * _unit(np.asarray(negative, np.float64).mean(axis=0)))
    return base.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) or 1.0)
