"""Compact embeddings: a whitened PCA basis of the stacked taps, fitted on the `correct` split only.

XGBoost's cost per boosting round grows with the number of columns (one round took 246 ms at 940
columns against 15 ms at 64 on 6,240 rows x 7 classes, one thread), and the stacked taps have
~1,000 columns. Projecting them onto a few dozen principal components makes a candidate of the
corrector search an order of magnitude cheaper. Columns are standardised first, so that a tap's
scale (pooled maxima of the conv map against softmax probabilities) does not decide the basis, and
the components are whitened. Columns with a NaN anywhere (the excluded class's logit, which f never
trained) carry no information and are dropped.

The basis is unsupervised, so fitting it on all of `correct` and then cross-validating inside
`correct` leaks no label; `test` never takes part. It is saved beside the corrector as plain arrays
(projection.npz) so a saved corrector can be reapplied without pickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from correctsweep.atomic import atomic_path

NULL_VARIANCE = 1e-9  # relative to the largest component's; see Projection.fit


@dataclass
class Projection:
    columns: np.ndarray
    """int [d_in]: the stacked columns kept (those without NaN on `correct`)."""
    shift: np.ndarray
    """float [d_in]: subtracted from the kept columns (the standardiser's and PCA's means together)."""
    basis: np.ndarray
    """float [d_in, dims]: maps the shifted columns to whitened components."""

    @property
    def dims(self) -> int:
        return self.basis.shape[1]

    @classmethod
    def fit(cls, X: np.ndarray, dims: int, seed: int = 0) -> Projection:
        """At most `dims` whitened components of the standardised, NaN-free columns of X, leaving out
        components without variance: whitening one (rank-deficient taps such as softmax, whose
        columns sum to 1, or dims reaching the rows) divides by ~0 and yields non-finite inputs."""
        columns = np.flatnonzero(~np.isnan(X).any(0))
        kept = X[:, columns].astype(np.float64)
        scaler = StandardScaler().fit(kept)
        pca = PCA(min(dims, *kept.shape), whiten=True, random_state=seed).fit(scaler.transform(kept))
        # float32 taps resolve ~1e-7 relative, so a variance ratio below 1e-9 is rounding
        live = pca.explained_variance_ > NULL_VARIANCE * pca.explained_variance_.max()
        components, variance = pca.components_[live], pca.explained_variance_[live]
        # (x - mu) / s - m, then @ V.T / sqrt(ev)  ==  (x - (mu + s m)) @ (V.T / s[:, None] / sqrt(ev))
        basis = components.T / scaler.scale_[:, None] / np.sqrt(variance)[None, :]
        return cls(columns, scaler.mean_ + scaler.scale_ * pca.mean_, basis)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((X[:, self.columns] - self.shift) @ self.basis).astype(np.float32)

    def names(self) -> list[str]:
        return [f"pc.{i}" for i in range(self.dims)]

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, columns=self.columns, shift=self.shift, basis=self.basis)

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["columns"], z["shift"], z["basis"])
