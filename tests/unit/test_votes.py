"""Group votes as evidence: agreement-weighted soft labels, voter accuracy, Krippendorff's alpha."""

from __future__ import annotations

import numpy as np
import pytest

from core.votes import DAWID_SKENE, DEFAULT_ACCURACY, MAJORITY, combine


def test_three_to_nothing_counts_more_than_two_to_one_and_a_tie_is_contested() -> None:
    c = combine(
        [
            ("a", 1, 1),
            ("a", 2, 1),
            ("a", 3, 1),
            ("b", 1, 1),
            ("b", 2, 1),
            ("b", 3, -1),
            ("t", 1, 1),
            ("t", 2, -1),
        ]
    )
    assert c.estimator == MAJORITY  # three shared images: too few to estimate anyone's accuracy
    assert c.images["a"].soft > c.images["b"].soft > 0
    assert c.images["t"].label == 0 and c.soft_labels()["t"] == 0.0 and "t" not in c.labels()
    assert c.labels() == {"a": 1, "b": 1}
    assert c.images["b"].p_yes == pytest.approx(DEFAULT_ACCURACY)


def test_a_voter_who_disagrees_with_everyone_is_weighed_down() -> None:
    rng = np.random.default_rng(0)
    votes = []
    truth = {f"i{n}": bool(rng.random() < 0.4) for n in range(40)}
    for image, yes in truth.items():
        for user in (1, 2):
            votes.append((image, user, 1 if yes != (rng.random() < 0.05) else -1))
        votes.append((image, 3, 1 if rng.random() < 0.5 else -1))  # votes at random
    c = combine(votes)
    assert c.estimator == DAWID_SKENE
    assert c.voters[3].accuracy < 0.65 < min(c.voters[1].accuracy, c.voters[2].accuracy)
    assert c.voters[3].agreement is not None and c.voters[3].agreement < c.voters[1].agreement  # type: ignore[operator]
    # The two careful voters' majority wins wherever they agree.
    agreed = {
        i for i in truth if {v for (j, u, v) in votes if j == i and u in (1, 2)} == {1 if truth[i] else -1}
    }
    assert all(c.labels()[i] == (1 if truth[i] else -1) for i in agreed)


def test_krippendorffs_alpha_matches_the_published_example_and_allows_missing_votes() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example: alpha = 0.743.
    table = {
        1: [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        2: [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        3: [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        4: [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    from core.votes import _alpha  # the same computation, on more than two values

    by_image: dict[str, dict[int, int]] = {}
    for user, row in table.items():
        for n, v in enumerate(row):
            if v is not None:
                by_image.setdefault(str(n), {})[user] = v
    assert _alpha(by_image, sorted(table)) == pytest.approx(0.743, abs=5e-4)
    assert combine([("x", 1, 1)]).alpha is None  # nobody to agree with
    assert combine([("x", 1, 1), ("x", 2, 1), ("y", 1, -1), ("y", 2, -1)]).alpha == 1.0
