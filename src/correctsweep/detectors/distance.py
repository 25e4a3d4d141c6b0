"""Detectors that measure the geometry of detectors.tap: mahalanobis, rmd, knn."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from pytorch_ood.detector import KNN, RMD, Mahalanobis

from correctsweep.detectors.base import TAP, Detector
from correctsweep.errors import SpecError


@contextmanager
def _float64():
    """pytorch-ood allocates a fitted detector's state in torch's default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class MahalanobisScore(Detector):
    name = "mahalanobis"
    reads = TAP
    gaussian: ClassVar[type] = Mahalanobis

    def fit(self, x, y):
        self.columns = x.std(0) > 0
        with _float64():
            # contiguous labels 0..C-1, as pytorch-ood requires, even where a trained class has no row here
            self.ood = self.gaussian(None).fit_features(x[:, self.columns], torch.unique(y, return_inverse=True)[1])

    def score(self, x):
        return self.ood.predict_features(x[:, self.columns])


class RMDScore(MahalanobisScore):
    name = "rmd"
    gaussian = RMD


@dataclass
class KNNSettings:
    k: int = 10
    """The neighbour whose distance is the score. Sun et al. use 50 on ImageNet-sized sets; `correct` here has
    a few hundred rows per class."""


class KNNScore(Detector):
    name = "knn"
    reads = TAP
    Settings = KNNSettings

    @classmethod
    def check(cls, settings: KNNSettings) -> None:
        if settings.k < 1:
            raise SpecError("'detectors.knn.k' must be >= 1")

    def fit(self, x, y):
        self.k = min(self.settings.k, len(x) - 1)
        self.ood = KNN(None, k=self.k).fit_features(x, y)

    def score(self, x):
        return self.ood.predict_features(x)

    def score_fitted(self, x):
        self.ood.set_hyperparameters(k=self.k + 1)  # each row is its own nearest neighbour: skip it
        try:
            return self.ood.predict_features(x)
        finally:
            self.ood.set_hyperparameters(k=self.k)
