"""Few-shot linear classifier over CLIP vectors, initialised from the concept's text vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ClassifierParams:
    """How a classifier is fitted. ``method="original"`` is the demo's algorithm, unchanged."""

    method: str = "original"
    lr: float = 0.1
    iters: int = 5


class LinearClassifier:
    """``Linear(dim, 1, bias=False)`` whose weight is kept L2-normalised, so it doubles as a search vector."""

    def __init__(self, init: np.ndarray, params: ClassifierParams | None = None) -> None:
        self.params = params or ClassifierParams()
        w = np.asarray(init, dtype=np.float32).reshape(-1)
        self._prior = w / (np.linalg.norm(w) or 1.0)
        self._weight = self._prior.copy()

    @property
    def dim(self) -> int:
        return int(self._weight.shape[0])

    @property
    def weight(self) -> np.ndarray:
        """The current unit weight vector, float32 ``(dim,)``."""
        return self._weight.copy()

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearClassifier:
        """Fit on vectors ``X (n, dim)`` with labels ``y`` in {0, 1} (or {-1, +1}); returns self."""
        X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
        y_t = torch.as_tensor((np.asarray(y).reshape(-1, 1) > 0).astype(np.float32))
        if len(X_t) == 0:
            return self
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layer = torch.nn.Linear(self.dim, 1, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(self._weight).reshape(1, -1))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        opt = torch.optim.SGD(layer.parameters(), lr=self.params.lr)
        for _ in range(self.params.iters):
            with torch.no_grad():
                layer.weight.div_(layer.weight.norm())
            opt.zero_grad()
            loss = loss_fn(layer(X_t), y_t)
            loss.backward()
            opt.step()
        with torch.no_grad():
            layer.weight.div_(layer.weight.norm())
        self._weight = layer.weight.detach().numpy().reshape(-1).astype(np.float32)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Logits ``X @ w`` (cosine similarity for unit ``X``)."""
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
        clf = cls(w if prior is None else prior, params)
        clf._weight = w / (np.linalg.norm(w) or 1.0)
        return clf
