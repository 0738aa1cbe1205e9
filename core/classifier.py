"""Few-shot linear classifier over CLIP vectors, initialised from the concept's text vector.

Three methods, chosen by :attr:`ClassifierParams.method`:

* ``"original"`` — the demo's algorithm, unchanged: ``Linear(dim, 1, bias=False)`` started from the
  current weight, ``BCEWithLogitsLoss``, ``SGD(lr)``, ``iters`` steps, weight L2-normalised before each
  forward pass. Its logits are raw cosines (about -0.1..0.4 for CLIP), so each step moves little and
  a refit continues from the previous weight.
* ``"prior"`` — class-balanced logistic regression with CLIP's logit scale, a learned bias and the text
  vector kept as a prior: ``mean_w BCE(scale * x.w + b, y) + prior_weight/2 * |w - w_text|^2``,
  solved to convergence (Newton) on all labels from the prior every time (order of votes does
  not matter). The prior is what keeps a few labels from pulling the classifier below zero-shot;
  the scale and bias let it actually separate positives from the hard negatives next to them.
  Each vote's loss is weighed by how sure its label is (a group's agreement, see ``core.votes``).
  Two guards keep few votes from undoing the prior: votes of one kind only (a round of all 👎)
  move the weight at most to cosine ``one_sided_min_cos`` from the prior, and when the fit, judged
  by approximate leave-one-out on the votes themselves, orders the chat's (👍, 👎) pairs worse than
  the prior does, the prior is kept. Votes are read as noisy evidence: a label-noise model fitted by
  EM weighs each vote by how likely it is right given the other votes (leave-one-out), so a slipped
  👍 unlike the chat's other 👍 is not learned by heart (``ClassifierParams.flip_rate``).
* ``"rocchio"`` — classic relevance feedback: ``w_text + beta * mean(pos) - gamma * mean(neg)``.

Every method returns a unit weight, so the weight doubles as the kNN search vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["original", "prior", "rocchio"]
METHODS: tuple[str, ...] = ("original", "prior", "rocchio")


@dataclass(frozen=True)
class ClassifierParams:
    """How a classifier is fitted; ``lr`` and ``iters`` belong to ``"original"``."""

    method: Method = "prior"
    lr: float = 0.1
    iters: int = 5
    scale: float = 20.0  # logit scale for "prior": turns cosines into usable logits
    prior_weight: float = (
        1.0  # strength of the pull back to the text vector for "prior" (chosen on bench H1-H3)
    )
    max_iter: int = 30  # Newton steps for "prior" (it usually converges in under 10)
    # A fit on votes of one kind only (all 👎, or all 👍) stays within this cosine of the prior: with
    # nothing to contrast them with, the votes say little about which direction is right.
    one_sided_min_cos: float = 0.95
    # Keep the prior when the fitted weight, judged leave-one-out on the votes, orders the chat's
    # (👍, 👎) pairs worse than the prior does by more than this share of pairs ("prior" only;
    # see :func:`_approximate_loo`). None turns the guard off.
    loo_margin: float | None = 0.1
    loo_min_votes: int = 5  # ... once each kind has this many votes (below, leave-one-out is too noisy)
    # Votes as noisy evidence ("prior" only): the expected share of slipped votes, the mean of a Beta
    # prior on the flip rates that EM estimates from how each vote agrees with the others (see
    # :func:`_fit_prior`). None trusts every vote fully. Chosen on bench H1-H2 (bench/results/labelling.md).
    flip_rate: float | None = 0.1
    flip_strength: float = 1.0  # the Beta prior's pseudo-votes: weak, the votes decide
    noise_steps: int = 10  # EM steps (each a warm-started Newton fit and one leave-one-out pass)
    beta: float = 0.75  # "rocchio": weight of the positives' mean
    gamma: float = 0.25  # "rocchio": weight of the negatives' mean

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown classifier method {self.method!r}; choose from {', '.join(METHODS)}")


class LinearClassifier:
    """A linear scorer whose weight is kept L2-normalised, so it doubles as a search vector."""

    def __init__(
        self, init: np.ndarray, params: ClassifierParams | None = None, weight: np.ndarray | None = None
    ) -> None:
        self.params = params or ClassifierParams()
        self._prior = _unit(np.asarray(init, dtype=np.float32).reshape(-1))
        self._weight = (
            self._prior.copy() if weight is None else _unit(np.asarray(weight, np.float32).reshape(-1))
        )
        self.bias = 0.0  # in cosine units: score(x) > -bias means "more likely yes than no"
        self.kept_prior = False  # the last fit fell back to the prior (leave-one-out guard)

    @property
    def dim(self) -> int:
        return int(self._weight.shape[0])

    @property
    def weight(self) -> np.ndarray:
        """The current unit weight vector, float32 ``(dim,)``."""
        return self._weight.copy()

    @property
    def prior(self) -> np.ndarray:
        """The unit vector the classifier started from (the concept's text or image vector)."""
        return self._prior.copy()

    @property
    def boundary(self) -> float | None:
        """The decision boundary in cosine units: ``score(x) > boundary`` means "more likely 👍 than 👎".

        Learned by the ``"prior"`` method from votes of both kinds; None before (or for other methods).
        """
        return -self.bias if self.bias else None

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LinearClassifier:
        """Fit on vectors ``X (n, dim)`` with labels ``y`` in {0, 1} (or {-1, +1}); returns self.

        ``sample_weight`` (default 1) is how sure each label is, e.g. a group's agreement on it; the
        ``"prior"`` method weighs each vote's loss by it, the others ignore it.
        """
        X = np.asarray(X, dtype=np.float32).reshape(-1, self.dim)
        pos = (np.asarray(y).reshape(-1) > 0).astype(np.float32)
        if len(X) != len(pos):
            raise ValueError(f"{len(X)} vectors but {len(pos)} labels")
        weight = (
            np.ones(len(pos)) if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1)
        )
        if len(weight) != len(pos):
            raise ValueError(f"{len(pos)} labels but {len(weight)} sample weights")
        keep = weight > 0
        X, pos, weight = X[keep], pos[keep], weight[keep]
        self.kept_prior = False
        if len(X) == 0:
            return self
        if self.params.method == "original":
            self._weight = _fit_original(X, pos, self._weight, self.params)
        elif self.params.method == "rocchio":
            self._weight = _fit_rocchio(X, pos, self._prior, self.params)
        else:
            fit = _fit_prior(X, pos, weight, self._prior, self.params)
            self._weight, self.bias = fit.weight, fit.bias
            if (
                self.params.loo_margin is not None
                and fit.loo_auc is not None
                and min(pos.sum(), (1 - pos).sum()) >= self.params.loo_min_votes
            ):
                keep = np.ones(len(pos), bool) if fit.trusted is None else fit.trusted
                prior_auc = _auc(X[keep] @ self._prior, pos[keep])
                if fit.loo_auc < prior_auc - self.params.loo_margin:
                    self.kept_prior = True
                    self._weight = self._prior.copy()
                    s = X @ self._prior
                    self.bias = -float((s[pos > 0].mean() + s[pos == 0].mean()) / 2)
        if pos.all() or not pos.any():
            self._weight = _within(self._weight, self._prior, self.params.one_sided_min_cos)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Scores ``X @ w`` (cosine similarity for unit ``X``); higher = more like the concept."""
        return np.asarray(X, dtype=np.float32) @ self._weight

    def to_bytes(self) -> bytes:
        """The weight as little-endian float32 bytes."""
        return self._weight.astype("<f4").tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, prior: np.ndarray | None = None, params: ClassifierParams | None = None
    ) -> LinearClassifier:
        """Restore a classifier saved with :meth:`to_bytes` (``prior`` defaults to the weight)."""
        w = np.frombuffer(data, dtype="<f4").astype(np.float32)
        return cls(w if prior is None else prior, params, weight=w)


def _unit(w: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(w))
    if abs(norm - 1.0) < 1e-6:  # already unit: keep it bit for bit (a saved weight restores exactly)
        return np.asarray(w, dtype=np.float32)
    return (w / (norm or 1.0)).astype(np.float32)


def _fit_original(X: np.ndarray, pos: np.ndarray, start: np.ndarray, p: ClassifierParams) -> np.ndarray:
    """The demo's loop, kept step for step (including a normalisation before every forward pass)."""
    import torch  # only this method needs it; the default fits in numpy without loading torch

    X_t = torch.as_tensor(X)
    y_t = torch.as_tensor(pos.reshape(-1, 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = torch.nn.Linear(X.shape[1], 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(start).reshape(1, -1))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(layer.parameters(), lr=p.lr)
    for _ in range(p.iters):
        with torch.no_grad():
            layer.weight.div_(layer.weight.norm())
        opt.zero_grad()
        loss = loss_fn(layer(X_t), y_t)
        loss.backward()
        opt.step()
    return _unit(layer.weight.detach().numpy().reshape(-1))


def _fit_rocchio(X: np.ndarray, pos: np.ndarray, prior: np.ndarray, p: ClassifierParams) -> np.ndarray:
    """Rocchio relevance feedback on unit vectors."""
    w = prior.astype(np.float64)
    if pos.any():
        w = w + p.beta * X[pos > 0].mean(axis=0)
    if (pos == 0).any():
        w = w - p.gamma * X[pos == 0].mean(axis=0)
    return _unit(w)


def _within(w: np.ndarray, prior: np.ndarray, min_cos: float) -> np.ndarray:
    """``w`` turned towards ``prior`` (in their common plane) until their cosine is at least ``min_cos``."""
    cos = float(w @ prior)
    if cos >= min_cos:
        return w
    orth = w.astype(np.float64) - cos * prior
    norm = float(np.linalg.norm(orth))
    if norm < 1e-9:
        return prior.copy()
    return _unit(min_cos * prior + np.sqrt(1.0 - min_cos**2) * orth / norm)


def _auc(scores: np.ndarray, pos: np.ndarray) -> float:
    """Share of (👍, 👎) pairs that ``scores`` order correctly (ties count half): Mann–Whitney AUC."""
    s_pos, s_neg = scores[pos > 0], scores[pos == 0]
    diff = s_pos[:, None] - s_neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@dataclass(frozen=True)
class _PriorFit:
    weight: np.ndarray  # unit
    bias: float  # cosine units
    loo_auc: float | None  # AUC of the approximate leave-one-out scores; None with one class
    flips: tuple[float, float] | None = None  # estimated (false 👍, false 👎) rates; None without the noise model
    trusted: np.ndarray | None = None  # votes the noise model believes (P(right) >= 0.5); None without it


def _fit_prior(
    X: np.ndarray, pos: np.ndarray, sample_weight: np.ndarray, prior: np.ndarray, p: ClassifierParams
) -> _PriorFit:
    """Balanced logistic regression pulled towards ``prior``: the unit weight, the bias (cosine units)
    and the approximate leave-one-out AUC on the votes.

    Newton's method with a backtracking line search. The Hessian ``A'DA + R`` is ``dim x dim`` but has
    rank ``n`` (the number of votes) above a diagonal, so each step solves an ``n x n`` system
    (Woodbury identity): a few milliseconds for a hundred votes, where L-BFGS in torch took ~50 ms.

    With ``p.flip_rate`` set, votes are read as noisy: a true 👎 is voted 👍 with rate ``rho0`` and a
    true 👍 voted 👎 with rate ``rho1``, so ``P(vote 👍) = (1 - rho1) sigma(z) + rho0 (1 - sigma(z))``
    (the label-noise model of Bootkrajang & Kabán 2012), fitted by EM. The E-step asks, for each
    vote, how likely it is right given the vote and the classifier fitted on the *other* votes
    (approximate leave-one-out, so a vote cannot vouch for itself); the M-step refits with each vote's
    loss weighed by that probability and re-estimates the flip rates under a Beta prior centred on
    ``p.flip_rate``. A slipped 👍 — an image the other votes say is unlike the chat's 👍 — then
    counts little instead of being learned by heart, while a clean chat's votes, which the other
    votes confirm, keep (nearly) their full weight.
    """
    y = pos.astype(np.float64)
    # With one class only, a free bias would explain every vote and teach the weight nothing.
    learn_bias = bool(pos.any() and not pos.all())
    A = p.scale * X.astype(np.float64)
    r = np.full(X.shape[1], p.prior_weight)
    theta0 = prior.astype(np.float64)
    if learn_bias:
        A = np.hstack([A, np.ones((len(A), 1))])
        r = np.append(r, 1e-3)  # the bias is all but free
        theta0 = np.append(theta0, 0.0)
    K = (A / r) @ A.T

    c = _balanced(sample_weight, y)
    theta = _newton(A, K, r, theta0, theta0, c, y, p.max_iter)
    trust: np.ndarray | None = None
    flips: tuple[float, float] | None = None
    if p.flip_rate is not None and learn_bias and p.noise_steps > 0:
        rho0 = rho1 = p.flip_rate
        a = p.flip_strength * p.flip_rate  # Beta(a, b) pseudo-counts of slipped / right votes
        b = p.flip_strength * (1.0 - p.flip_rate)
        truth = y
        for _ in range(p.noise_steps):
            z = _approximate_loo(A, K, theta, c, y)
            base = float((sample_weight * truth).sum() / sample_weight.sum())
            truth = _true_yes(z, y, rho0, rho1, base)
            # The share of true 👎 voted 👍, and of true 👍 voted 👎.
            rho0 = float((sample_weight * (1 - truth) * y).sum() + a) / float(
                (sample_weight * (1 - truth)).sum() + a + b
            )
            rho1 = float((sample_weight * truth * (1 - y)).sum() + a) / float(
                (sample_weight * truth).sum() + a + b
            )
            trust = np.where(y > 0, truth, 1 - truth)
            c = _balanced(sample_weight * trust, y)
            theta = _newton(A, K, r, theta0, theta, c, y, p.max_iter)
        flips = (rho0, rho1)
    w = theta[: X.shape[1]]
    b0 = float(theta[-1]) if learn_bias else 0.0
    loo = _approximate_loo(A, K, theta, c, y) if learn_bias else None
    trusted = None if trust is None else trust >= 0.5
    loo_auc = None
    if loo is not None:
        keep = np.ones(len(y), bool) if trusted is None else trusted
        if y[keep].any() and not y[keep].all():
            loo_auc = _auc(loo[keep], y[keep])
    # Score s.x.w + b = 0 at cosine x.(w/|w|) = -b / (s |w|): the decision boundary in cosine units.
    return _PriorFit(_unit(w), b0 / (p.scale * (float(np.linalg.norm(w)) or 1.0)), loo_auc, flips, trusted)


def _balanced(sample_weight: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per-vote loss weights for a loss where 👍 and 👎 weigh half each, whatever the vote counts:
    rounds of hard negatives are mostly 👎, and an unbalanced loss would learn "everything is no"."""
    n_pos = float(sample_weight[pos > 0].sum())
    n_neg = float(sample_weight[pos <= 0].sum())
    return np.asarray(sample_weight * np.where(pos > 0, 0.5 / max(n_pos, 1e-9), 0.5 / max(n_neg, 1e-9)))


def _true_yes(z: np.ndarray, vote: np.ndarray, rho0: float, rho1: float, base: float) -> np.ndarray:
    """P(the image is a true 👍 | its vote, the other votes' classifier logit ``z``).

    The balanced fit's logit assumes even odds; ``base`` (the share of 👍 among the votes) puts the
    real prior odds back before Bayes' rule is applied to the vote.
    """
    base = min(max(base, 1e-3), 1 - 1e-3)
    q = 1.0 / (1.0 + np.exp(-(z + np.log(base / (1 - base)))))
    yes = np.where(vote > 0, (1 - rho1) * q, rho1 * q)
    no = np.where(vote > 0, rho0 * (1 - q), (1 - rho0) * (1 - q))
    return np.asarray(yes / np.maximum(yes + no, 1e-12))


def _newton(
    A: np.ndarray,
    K: np.ndarray,
    r: np.ndarray,
    theta0: np.ndarray,
    start: np.ndarray,
    c: np.ndarray,
    y: np.ndarray,
    max_iter: int,
) -> np.ndarray:
    """Minimise ``c . logloss(A theta, y) + 1/2 |theta - theta0|^2_r`` from ``start`` (Woodbury Newton)."""

    def objective(theta: np.ndarray) -> float:
        z = A @ theta
        return float(c @ (np.logaddexp(0.0, z) - y * z) + 0.5 * (r * (theta - theta0) ** 2).sum())

    theta = start.copy()
    f = objective(theta)
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-(A @ theta)))
        g = A.T @ (c * (prob - y)) + r * (theta - theta0)
        s = np.sqrt(c * prob * (1.0 - prob))
        u = g / r
        M = np.eye(len(s)) + s[:, None] * K * s[None, :]
        q = np.linalg.solve(M, s * (A @ u))
        step = u - (A.T @ (s * q)) / r
        decrease = float(g @ step)
        if decrease < 1e-10:
            break
        t = 1.0
        while t > 1e-4:
            f_new = objective(theta - t * step)
            if f_new <= f - 0.25 * t * decrease:
                break
            t *= 0.5
        theta, f = theta - t * step, f_new
    return theta


def _approximate_loo(
    A: np.ndarray, K: np.ndarray, theta: np.ndarray, c: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Each vote's score by the fit on all the *other* votes, without refitting n times.

    Approximate leave-one-out for penalised GLMs (Rad & Maleki 2020, "ALO"): one Newton step from the
    full fit, ``z_-i = z_i + l'_i h_i / (1 - l''_i h_i)`` with ``h_i = a_i' H^-1 a_i``. ``H^-1`` comes
    from the same Woodbury form as the fit, so this costs one ``n x n`` solve.
    """
    z = A @ theta
    prob = 1.0 / (1.0 + np.exp(-z))
    d1 = c * (prob - y)
    d2 = c * prob * (1.0 - prob)
    s = np.sqrt(d2)
    B = K * s[None, :]
    M = np.eye(len(s)) + s[:, None] * K * s[None, :]
    h = np.diag(K) - np.einsum("ij,ji->i", B, np.linalg.solve(M, B.T))
    return np.asarray(z + d1 * h / np.maximum(1.0 - d2 * h, 1e-9))
