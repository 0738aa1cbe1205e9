"""Group votes as evidence: soft labels with agreement, voter reliability, Krippendorff's alpha.

Every image's label is a probability that it is a 👍, computed from the votes on it with each
voter's estimated accuracy (the **one-coin Dawid–Skene** model: voter *u* gives the true answer
with probability ``p_u`` whatever the image, independently of the others). The log-odds of 👍 are
``sum over votes of vote * log(p_u / (1 - p_u))``, so 3 👍 : 0 counts more than 2 : 1, and a tie
between voters of equal accuracy is exactly even: *contested*, seen but no label.

Accuracies are estimated by EM (Dawid & Skene 1979, one-coin form as in Raykar et al. 2010) once a
voter shares at least :data:`MIN_OVERLAP` images with other voters; until then, and for a voter who
never overlaps, ``p_u`` is :data:`DEFAULT_ACCURACY`. A Beta prior keeps a few images from making
anyone look perfect or useless, and an accuracy never goes below 0.5 (a voter who disagrees with
everyone is ignored rather than read backwards).

The agreement reported in ``/stats`` is Krippendorff's alpha for nominal data (it allows missing
votes: each person votes on any subset), computed by the ``krippendorff`` package, and each voter's
share of votes that agree with the consensus of the *other* voters on the same images.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DEFAULT_ACCURACY = 0.8  # a voter's chance of voting as they mean, before their votes say otherwise
MIN_OVERLAP = 5  # images shared with other voters before a voter's own accuracy is estimated
CONTESTED = 0.2  # |soft label| below this: the votes cancel out, the image is seen but unlabelled
_PRIOR_STRENGTH = 8.0  # pseudo-votes of the Beta prior on each accuracy, centred on DEFAULT_ACCURACY
_MAX_ACCURACY = 0.98
_EM_STEPS = 25

MAJORITY = "equal weights (no two voters share enough images yet)"
DAWID_SKENE = "one-coin Dawid–Skene"


@dataclass(frozen=True)
class ImageEvidence:
    """The votes on one image and what they add up to."""

    image_id: str
    up: int
    down: int
    p_yes: float  # probability that the image is a 👍, given the votes and voter accuracies

    @property
    def soft(self) -> float:
        """The soft label in [-1, 1]: ``2 * p_yes - 1`` (0 = no evidence either way)."""
        return 2.0 * self.p_yes - 1.0

    @property
    def label(self) -> int:
        """+1 / -1, or 0 when contested (the votes cancel out)."""
        s = self.soft
        return 0 if abs(s) < CONTESTED else (1 if s > 0 else -1)


@dataclass(frozen=True)
class VoterAgreement:
    """One voter: estimated accuracy and agreement with the others' consensus."""

    user_id: int
    votes: int
    accuracy: float  # one-coin Dawid–Skene estimate (DEFAULT_ACCURACY until overlap allows one)
    compared: int  # votes on images where the other voters' consensus has a label
    agreement: float | None  # share of those that agree with it


@dataclass(frozen=True)
class Consensus:
    """All images' evidence, each voter's accuracy, and the session's inter-voter agreement."""

    images: dict[str, ImageEvidence]
    voters: dict[int, VoterAgreement]
    alpha: float | None  # Krippendorff's alpha (nominal); None without two voters on one image
    estimator: str  # MAJORITY or DAWID_SKENE

    def soft_labels(self) -> dict[str, float]:
        """Image id -> soft label in [-1, 1], contested images included as 0.0."""
        return {i: (0.0 if e.label == 0 else e.soft) for i, e in self.images.items()}

    def labels(self) -> dict[str, int]:
        """Image id -> +1 / -1 for the images that have a label (contested ones left out)."""
        return {i: e.label for i, e in self.images.items() if e.label}

    @property
    def contested(self) -> int:
        """Images whose votes cancel out."""
        return sum(1 for e in self.images.values() if e.label == 0)


def combine(votes: Iterable[tuple[str, int, int]]) -> Consensus:
    """Combine ``(image_id, user_id, vote ±1)`` triples (one per user and image) into a :class:`Consensus`."""
    by_image: dict[str, dict[int, int]] = defaultdict(dict)
    for image_id, user_id, vote in votes:
        if vote:
            by_image[image_id][int(user_id)] = 1 if vote > 0 else -1
    users = sorted({u for vs in by_image.values() for u in vs})
    overlap = {u: 0 for u in users}
    for vs in by_image.values():
        if len(vs) >= 2:
            for u in vs:
                overlap[u] += 1
    estimated = {u for u in users if overlap[u] >= MIN_OVERLAP}
    accuracy = {u: DEFAULT_ACCURACY for u in users}
    if estimated:
        accuracy = _dawid_skene(by_image, accuracy, estimated)
    p_yes = {i: _posterior(vs, accuracy) for i, vs in by_image.items()}
    images = {
        i: ImageEvidence(i, sum(v > 0 for v in vs.values()), sum(v < 0 for v in vs.values()), p_yes[i])
        for i, vs in by_image.items()
    }
    return Consensus(
        images=images,
        voters={u: _voter(u, by_image, accuracy) for u in users},
        alpha=_alpha(by_image, users),
        estimator=DAWID_SKENE if estimated else MAJORITY,
    )


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _posterior(vs: dict[int, int], accuracy: dict[int, float]) -> float:
    z = sum(v * _logit(accuracy[u]) for u, v in vs.items())
    return 1.0 / (1.0 + math.exp(-z))


def _dawid_skene(
    by_image: dict[str, dict[int, int]], accuracy: dict[int, float], estimated: set[int]
) -> dict[int, float]:
    """EM for the one-coin model: E-step posteriors from accuracies, M-step accuracies from posteriors."""
    acc = dict(accuracy)
    a = _PRIOR_STRENGTH * DEFAULT_ACCURACY  # Beta(a, b) pseudo-counts of right / wrong votes
    b = _PRIOR_STRENGTH * (1.0 - DEFAULT_ACCURACY)
    for _ in range(_EM_STEPS):
        q = {i: _posterior(vs, acc) for i, vs in by_image.items()}
        right: dict[int, float] = defaultdict(float)
        total: dict[int, int] = defaultdict(int)
        for i, vs in by_image.items():
            for u, v in vs.items():
                right[u] += q[i] if v > 0 else 1.0 - q[i]
                total[u] += 1
        new = {
            u: (
                min(_MAX_ACCURACY, max(0.5 + 1e-6, (right[u] + a) / (total[u] + a + b)))
                if u in estimated
                else acc[u]
            )
            for u in acc
        }
        if max(abs(new[u] - acc[u]) for u in acc) < 1e-5:
            return new
        acc = new
    return acc


def _voter(user: int, by_image: dict[str, dict[int, int]], accuracy: dict[int, float]) -> VoterAgreement:
    """How often ``user`` agrees with the consensus of the others (leave-this-voter-out)."""
    mine = 0
    compared = agreed = 0
    for vs in by_image.values():
        if user not in vs:
            continue
        mine += 1
        others = {u: v for u, v in vs.items() if u != user}
        if not others:
            continue
        soft = 2.0 * _posterior(others, accuracy) - 1.0
        if abs(soft) < CONTESTED:
            continue
        compared += 1
        agreed += (soft > 0) == (vs[user] > 0)
    return VoterAgreement(user, mine, accuracy[user], compared, agreed / compared if compared else None)


def _alpha(by_image: dict[str, dict[int, int]], users: list[int]) -> float | None:
    """Krippendorff's alpha (nominal) over images with two or more votes; None when undefined."""
    shared = [vs for vs in by_image.values() if len(vs) >= 2]
    if not shared or len(users) < 2:
        return None
    values = {v for vs in shared for v in vs.values()}
    if len(values) < 2:
        return 1.0  # every pairable vote agrees: no disagreement observed (alpha's ratio is 0/0)
    import krippendorff  # small, numpy-only; imported here so the bot starts without touching it

    column = {u: n for n, u in enumerate(users)}
    data = np.full((len(users), len(shared)), np.nan)
    for j, vs in enumerate(shared):
        for u, v in vs.items():
            data[column[u], j] = v
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
