"""fisher and logistic: linear correctors on whitened taps.

Both see the chosen taps standardised and projected onto whitened principal components fitted on
`correct` (projection.Projection, null components dropped). Centring and whitening is the first step
of the stochastic-separation corrector, and it gives logistic regression's penalty the same scale in
every direction. Both end as linear scores X @ coef.T + intercept, one row of coef per discriminant,
each owned by a class, and are saved as those arrays (model.npz).

fisher: the error corrector of Gorban, Tyukin, Mirkes et al. (Entropy 23:1090, 2021; public MATLAB
code "Error-corrector"): Fisher linear discriminants in the whitened space, one per class against
the rest and, for the excluded class, optionally one per k-means cluster of its rows against the
other classes' rows (their "multi-corrector": an unseen class need not be one convex blob in f's
features, and by stochastic separation each cluster is linearly separable from the rest). A class
scores the best (max) of its discriminants. Each discriminant is scikit-learn's
LinearDiscriminantAnalysis (lsqr solver) with shrinkage of the within-class covariance towards a
scaled identity, the regulariser the search tunes (the reference inverts Cov(rest) + Cov(cluster);
LDA pools the two weighted by size, the same direction up to that weighting).
Probabilities: an LDA decision function is the log posterior odds of its group against the rest
under its Gaussian model, so a sigmoid makes it a one-vs-rest probability, and the K of them are
normalised to sum to 1 as one-vs-rest classifiers usually are. A separate calibration (Platt scaling
per class) would need rows held out inside every CV split and would not change the order of the
scores; the tau scan picks its threshold on these very numbers, so a monotone map is all it needs.

logistic: multinomial logistic regression (scikit-learn, lbfgs) with its inverse penalty C searched
on a log scale; the softmax of its scores.
"""

from __future__ import annotations

import functools
import warnings
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.special import expit, softmax
from sklearn.cluster import KMeans
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from correctsweep.atomic import atomic_path
from correctsweep.errors import SpecError
from correctsweep.kinds.base import CVSplits, Kind, positive_ints
from correctsweep.onnxgraph import OnnxNodes, cast, const, node

MODEL_FILE = "model.npz"
CACHED_SUBSETS = 4  # (tap subset, dims) projections of `correct` kept for the next candidates
WHITEN_DIMS = (4, 128)  # searched (log scale) when whiten_dims is null
MAX_CLUSTERS = 8  # fisher's clusters of the excluded class, searched from 1 (one discriminant)
MIN_CLUSTER_ROWS = 5  # fewer rows per cluster than this and a cluster's centre is mostly noise
MAX_ITER = 1000  # lbfgs on whitened inputs converges in far fewer; the default 100 can stop short


@dataclass
class LinearModel:
    coef: np.ndarray
    """float [m, d]: one row per discriminant."""
    intercept: np.ndarray
    """float [m]."""
    owner: np.ndarray
    """int [m]: the class index each discriminant scores; every class owns at least one."""
    link: str
    """softmax (logistic) or ovr (fisher: sigmoid of each class's score, normalised)."""

    def scores(self, X: np.ndarray) -> np.ndarray:
        """[n, K]: each class's best discriminant."""
        each = X @ self.coef.T + self.intercept
        return np.stack([each[:, self.owner == c].max(1) for c in range(self.owner.max() + 1)], axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        s = self.scores(X)
        if self.link == "softmax":
            return softmax(s, axis=1)
        p = expit(s)
        return p / p.sum(1, keepdims=True)

    def save(self, workdir: Path) -> None:
        with atomic_path(Path(workdir) / MODEL_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, coef=self.coef, intercept=self.intercept, owner=self.owner)

    @classmethod
    def load(cls, workdir: Path, link: str) -> LinearModel:
        with np.load(Path(workdir) / MODEL_FILE, allow_pickle=False) as z:
            return cls(z["coef"], z["intercept"], z["owner"], link)

    def to_onnx(self, source: str, target: str) -> OnnxNodes:
        """predict_proba in float64: each class's best discriminant, then softmax or normalised sigmoids."""
        nodes = [cast(source, "l.x", "float64"), node("MatMul", ["l.x", "l.coef"], ["l.xw"]),
                 node("Add", ["l.xw", "l.intercept"], ["l.each"])]
        consts = [const("l.coef", self.coef.T.astype(np.float64)),
                  const("l.intercept", self.intercept.astype(np.float64))]
        per_class = []
        for c in range(int(self.owner.max()) + 1):
            consts.append(const(f"l.own{c}", np.flatnonzero(self.owner == c).astype(np.int64)))
            nodes += [node("Gather", ["l.each", f"l.own{c}"], [f"l.g{c}"], axis=1),
                      node("ReduceMax", [f"l.g{c}"], [f"l.s{c}"], axes=[1], keepdims=1)]
            per_class.append(f"l.s{c}")
        nodes.append(node("Concat", per_class, ["l.scores"], axis=1))
        if self.link == "softmax":
            nodes.append(node("Softmax", ["l.scores"], [target], axis=1))
        else:
            total = node("ReduceSum", ["l.p", "l.axis"], ["l.sum"], keepdims=1)
            nodes += [node("Sigmoid", ["l.scores"], ["l.p"]), total, node("Div", ["l.p", "l.sum"], [target])]
            consts.append(const("l.axis", np.array([1], dtype=np.int64)))
        return OnnxNodes(nodes, consts, dtype="float64")


@dataclass
class WhitenedSettings:
    whiten_dims: Any = None
    """The whitened principal components (fitted on `correct`) the kind sees. null: the search picks 4 to
    128 (log scale); an integer fixes it; a list lets the search choose among its entries. Components
    without variance on `correct` are dropped."""


class Whitened(Kind):
    """What fisher and logistic share: whitened inputs, CV by plain refits, linear models."""

    model_file = MODEL_FILE
    link: str
    Settings = WhitenedSettings

    def __init__(self, setup):
        super().__init__(setup)
        self.inputs = functools.lru_cache(maxsize=CACHED_SUBSETS)(setup.inputs)

    @classmethod
    def check(cls, settings: WhitenedSettings) -> None:
        if settings.whiten_dims is not None and not positive_ints(settings.whiten_dims, allow_none=False):
            raise SpecError(f"'corrector.{cls.name}.whiten_dims' must be null (searched), a positive integer or a "
                            "list of them, e.g. [16, 64]")

    def suggest_dims(self, trial: optuna.Trial) -> int:
        dims = self.settings.whiten_dims
        if isinstance(dims, list):
            return trial.suggest_categorical("pca_dims", dims)
        return trial.suggest_int("pca_dims", *WHITEN_DIMS, log=True) if dims is None else dims

    def cv(self, params: dict, taps: tuple[str, ...], dims: int | None) -> CVSplits:
        X, _ = self.inputs(taps, dims)
        for valid in self.setup.cv_splits:
            train = self.setup.train_rows(valid)
            yield valid, self.fit(X[train], self.setup.y[train], params).predict_proba(X[valid]), {}

    def refit(self, X: np.ndarray, names: list[str], attrs: dict) -> LinearModel:
        return self.fit(X, self.setup.y, attrs["params"])

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, params: dict) -> LinearModel:
        """y: class indices; every class occurs in it (the CV splits are stratified)."""

    @classmethod
    def load(cls, workdir: Path) -> LinearModel:
        return LinearModel.load(workdir, cls.link)


class Fisher(Whitened):
    name = "fisher"
    link = "ovr"

    def suggest(self, trial: optuna.Trial) -> dict:
        params = {"shrinkage": trial.suggest_float("shrinkage", 1e-3, 1.0, log=True)}
        if self.setup.excluded is not None:  # only the excluded class is split; fold none has none
            params["clusters"] = trial.suggest_int("clusters", 1, MAX_CLUSTERS)
        return params

    def fit(self, X: np.ndarray, y: np.ndarray, params: dict) -> LinearModel:
        excluded, classes = self.setup.excluded, self.setup.classes
        target = None if excluded is None else classes.index(excluded)
        coef, intercept, owner = [], [], []
        for c in range(len(classes)):
            own = y == c
            for group in self._groups(X, own, params.get("clusters", 1) if c == target else 1):
                rows = group | ~own  # a cluster stands against the other classes, not its sibling clusters
                with warnings.catch_warnings():
                    # a one-row cluster has no covariance of its own: LDA takes it as 0, as the reference does
                    warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
                    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=params["shrinkage"])
                    lda.fit(X[rows], group[rows])
                coef.append(lda.coef_[0])
                intercept.append(lda.intercept_[0])
                owner.append(c)
        return LinearModel(np.array(coef), np.array(intercept), np.array(owner), self.link)

    def _groups(self, X: np.ndarray, own: np.ndarray, clusters: int) -> list[np.ndarray]:
        """Row masks: the class's rows, or their k-means clusters (fewer where it has few rows)."""
        k = min(clusters, int(own.sum()) // MIN_CLUSTER_ROWS)
        if k <= 1:
            return [own]
        rows = np.flatnonzero(own)
        labels = KMeans(k, n_init=4, random_state=self.setup.cfg.seed).fit_predict(X[rows])
        masks = [np.zeros(len(own), dtype=bool) for _ in range(k)]
        for i, mask in enumerate(masks):
            mask[rows[labels == i]] = True
        return masks


class Logistic(Whitened):
    name = "logistic"
    link = "softmax"

    def suggest(self, trial: optuna.Trial) -> dict:
        return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}

    def fit(self, X: np.ndarray, y: np.ndarray, params: dict) -> LinearModel:
        model = LogisticRegression(C=params["C"], max_iter=MAX_ITER).fit(X, y)
        return LinearModel(model.coef_, model.intercept_, np.arange(len(model.classes_)), self.link)
