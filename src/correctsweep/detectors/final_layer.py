"""Detectors that read f's feature tap together with its final layer: vim, dice, react, she, nci, fdbd."""

from __future__ import annotations

import torch
from pytorch_ood.detector import DICE, SHE, ReAct, ViM, fDBD
from pytorch_ood.detector import NCI as NCIDetector

from correctsweep.detectors.base import FEATURES, Detector


class ViMScore(Detector):
    name = "vim"
    reads = FEATURES

    def fit(self, x, y):
        # about half the feature dimensions as the principal subspace, as ViM's paper keeps for ResNet-50's 2048
        self.ood = ViM(None, d=x.shape[1] // 2, w=self.head.weight, b=self.head.bias).fit_features(x, y)

    def score(self, x):
        return self.ood.predict_features(x)


class DICEScore(Detector):
    name = "dice"
    reads = FEATURES

    def fit(self, x, y):
        self.ood = DICE(None, w=self.head.weight, b=self.head.bias, p=0.9).fit_features(x, y)

    def score(self, x):
        return self.ood.predict_features(x)


class ReActScore(Detector):
    name = "react"
    reads = FEATURES

    def fit(self, x, y):
        # pytorch-ood's ReAct clips feature maps: the features as 1 x 1 maps, the head flattening them back
        self.ood = ReAct(None, head=lambda maps: self.head(maps.flatten(1)), percentile=0.9)
        self.ood.fit_feature_maps(x[:, :, None, None], y)

    def score(self, x):
        return self.ood.predict_feature_maps(x[:, :, None, None])


class SHEScore(Detector):
    name = "she"
    reads = FEATURES

    def fit(self, x, y):
        # SHE compares an image with the mean of its predicted class's correctly classified rows; where a
        # class f can predict has none, there is nothing to compare with and the score stays constant
        right = y[self.head(x).argmax(1) == y]
        self.ood = SHE(None, self.head).fit_features(x, y) if right.unique().numel() == self.head.out_features else None

    def score(self, x):
        return torch.zeros(len(x)) if self.ood is None else self.ood.predict_features(x)


class NCIScore(Detector):
    name = "nci"
    reads = FEATURES

    def fit(self, x, y):
        self.ood = NCIDetector(None, self.head).fit_features(x)

    def score(self, x):
        return self.ood.predict_features(x)


class FDBDScore(Detector):
    name = "fdbd"
    reads = FEATURES

    def fit(self, x, y):
        self.ood = fDBD(None, self.head).fit_features(x)

    def score(self, x):
        return self.ood.predict_features(x)
