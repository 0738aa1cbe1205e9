"""The few-shot classifier: the demo's algorithm kept exactly, and the default that never loses to zero-shot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.classifier import ClassifierParams, LinearClassifier
from core.synthetic import SyntheticConfig, generate, precision_at

ORIGINAL = ClassifierParams(method="original")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    """A small CLIP-like collection: 3k images, 20 concepts."""
    return generate(SyntheticConfig(n_images=3000, n_groups=4, seed=3))


def _toy(seed: int = 0, n: int = 20, dim: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = _unit(rng.standard_normal((n, dim)))
    y = (np.arange(n) % 3 == 0).astype(np.float32)
    return X, y, _unit(rng.standard_normal(dim))


def _demo_reference(X: np.ndarray, y: np.ndarray, init: np.ndarray, lr: float, iters: int) -> np.ndarray:
    """The demo's training loop, written out as it was published."""
    model = torch.nn.Linear(X.shape[1], 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(init).reshape(1, -1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y.reshape(-1, 1))
    for _ in range(iters):
        with torch.no_grad():
            model.weight.div_(model.weight.norm())
        opt.zero_grad()
        loss_fn(model(X_t), y_t).backward()
        opt.step()
    w = model.weight.detach().numpy().reshape(-1)
    return w / np.linalg.norm(w)


@pytest.mark.parametrize("method", ["original", "prior", "rocchio"])
def test_fit_is_deterministic_and_keeps_a_unit_weight(method: str) -> None:
    X, y, init = _toy()
    a = LinearClassifier(init, ClassifierParams(method=method)).fit(X, y)  # type: ignore[arg-type]
    b = LinearClassifier(init, ClassifierParams(method=method)).fit(X, y)  # type: ignore[arg-type]
    assert a.to_bytes() == b.to_bytes()
    assert np.linalg.norm(a.weight) == pytest.approx(1.0, abs=1e-5)


def test_original_is_the_demo_algorithm_step_for_step() -> None:
    X, y, init = _toy(seed=1)
    for lr, iters in [(0.1, 5), (0.5, 3)]:
        clf = LinearClassifier(init, ClassifierParams(method="original", lr=lr, iters=iters)).fit(X, y)
        np.testing.assert_allclose(clf.weight, _demo_reference(X, y, init, lr, iters), atol=1e-6)


def test_original_moves_toward_positives_and_continues_from_the_current_weight() -> None:
    X, y, init = _toy(seed=2)
    pos_mean, neg_mean = X[y > 0].mean(0), X[y == 0].mean(0)
    clf = LinearClassifier(init, ORIGINAL).fit(X, y)
    assert clf.weight @ pos_mean > init @ pos_mean
    assert clf.weight @ neg_mean < init @ neg_mean
    # A refit starts where the last one stopped, as in the demo: two fits == ten steps in one go.
    twice = LinearClassifier(init, ORIGINAL).fit(X, y).fit(X, y)
    np.testing.assert_allclose(twice.weight, _demo_reference(X, y, init, 0.1, 10), atol=1e-5)


def test_to_bytes_round_trip_keeps_weight_prior_and_scores() -> None:
    X, y, init = _toy(seed=4)
    clf = LinearClassifier(init, ClassifierParams()).fit(X, y)
    back = LinearClassifier.from_bytes(clf.to_bytes(), prior=init)
    np.testing.assert_array_equal(back.weight, clf.weight)
    np.testing.assert_allclose(back.prior, init, atol=1e-6)
    np.testing.assert_array_equal(back.score(X), clf.score(X))
    assert len(clf.to_bytes()) == 4 * X.shape[1]
    # Without a prior the weight is its own prior, as before.
    np.testing.assert_array_equal(LinearClassifier.from_bytes(clf.to_bytes()).prior, clf.weight)


def test_prior_method_ignores_vote_order_and_refits_from_the_prior() -> None:
    X, y, init = _toy(seed=5)
    order = np.random.default_rng(0).permutation(len(X))
    a = LinearClassifier(init).fit(X, y)
    b = LinearClassifier(init).fit(X[order], y[order])
    np.testing.assert_allclose(a.weight, b.weight, atol=1e-5)
    # Fitting again on the same votes changes nothing (the demo's warm start would keep drifting).
    np.testing.assert_allclose(LinearClassifier(init).fit(X, y).fit(X, y).weight, a.weight, atol=1e-5)


def test_votes_of_one_kind_and_no_votes_are_handled() -> None:
    X, y, init = _toy(seed=6)
    all_no = LinearClassifier(init).fit(X[y == 0], y[y == 0])
    assert all_no.weight @ X[y == 0].mean(0) < init @ X[y == 0].mean(0)
    only_yes = LinearClassifier(init).fit(X[y > 0], y[y > 0])
    assert only_yes.weight @ X[y > 0].mean(0) > init @ X[y > 0].mean(0)
    np.testing.assert_array_equal(LinearClassifier(init).fit(X[:0], y[:0]).weight, _unit(init))
    assert (
        LinearClassifier(init).fit(X, np.where(y > 0, 1, -1)).to_bytes()
        == LinearClassifier(init).fit(X, y).to_bytes()
    )


def test_bad_input_is_a_clear_error() -> None:
    X, y, init = _toy()
    with pytest.raises(ValueError, match="unknown classifier method"):
        ClassifierParams(method="svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="20 vectors but 19 labels"):
        LinearClassifier(init).fit(X, y[:-1])


def test_default_never_ranks_worse_than_zero_shot_and_beats_the_original(data) -> None:  # type: ignore[no-untyped-def]
    """Three rounds of hard-negative votes on every concept: top-9 precision never drops below the text alone."""
    X, labels = data.vectors, data.labels
    gains_default, gains_original = [], []
    for c, text in enumerate(data.text_vectors):
        zero_shot = precision_at(labels[np.argsort(-(X @ text))], c, 9)
        default, original = LinearClassifier(text), LinearClassifier(text, ORIGINAL)
        seen: list[int] = []
        for _ in range(3):
            # One round: the 9 best unlabelled images by the current default classifier.
            order = [i for i in np.argsort(-default.score(X)) if i not in seen]
            seen += order[:9]
            y = (labels[seen] == c).astype(np.float32)
            default = LinearClassifier(text).fit(X[seen], y)
            original.fit(X[seen], y)
            p9 = precision_at(labels[np.argsort(-default.score(X))], c, 9)
            assert p9 >= zero_shot, f"concept {c}: {p9:.2f} after votes < zero-shot {zero_shot:.2f}"
        gains_default.append(p9 - zero_shot)
        gains_original.append(precision_at(labels[np.argsort(-original.score(X))], c, 9) - zero_shot)
    assert np.mean(gains_default) >= 0.15
    assert np.mean(gains_default) > np.mean(gains_original)



def test_a_slipped_vote_unlike_the_other_thumbs_up_is_not_learned_by_heart(data) -> None:  # type: ignore[no-untyped-def]
    """6 👍 on a concept's wanted mode, 9 👎 on another of its modes and 10 on other images, and one
    image of the unwanted mode slipped to 👍: the noise model never ranks the slip higher than
    trusting every vote does, and for some concepts pushes it far down."""
    ranks = []
    for c in range(len(data.text_vectors)):
        modes = np.unique(data.modes[data.labels == c])
        if len(modes) < 2:
            continue
        want = np.flatnonzero((data.labels == c) & (data.modes == modes[0]))
        other = np.flatnonzero((data.labels == c) & (data.modes == modes[1]))
        if len(want) < 30 or len(other) < 15:
            continue
        idx = np.r_[want[:6], other[:9], np.flatnonzero(data.labels != c)[:10]]
        y = np.r_[np.ones(6), np.zeros(19)].astype(np.float32)
        y[6] = 1.0  # the slip: other[0]
        rank = []
        for params in (ClassifierParams(flip_rate=None), ClassifierParams()):
            s = LinearClassifier(data.text_vectors[c], params).fit(data.vectors[idx], y).score(data.vectors)
            rank.append(int((s > s[other[0]]).sum()))
        ranks.append(rank)
    assert len(ranks) >= 5
    assert all(noisy >= trusting for trusting, noisy in ranks)
    assert any(trusting < 100 <= noisy for trusting, noisy in ranks)


def test_clean_votes_move_the_classifier_as_before_under_the_noise_model(data) -> None:  # type: ignore[no-untyped-def]
    """Votes that agree with each other keep (nearly) their full weight: the same weight as trusting them."""
    c = 0
    scores = data.vectors @ data.text_vectors[c]
    idx = np.argsort(-scores)[:30]
    y = (data.labels[idx] == c).astype(np.float32)
    assert 0 < y.sum() < len(y)
    trusting = LinearClassifier(data.text_vectors[c], ClassifierParams(flip_rate=None)).fit(data.vectors[idx], y)
    default = LinearClassifier(data.text_vectors[c]).fit(data.vectors[idx], y)
    assert float(default.weight @ trusting.weight) > 0.98
