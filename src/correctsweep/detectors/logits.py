"""Detectors that read f's logits (the excluded class's column dropped): msp, energy, maxlogit, entropy, gen,
klmatching."""

from __future__ import annotations

from pytorch_ood.detector import GEN, EnergyBased, Entropy, KLMatching, MaxLogit, MaxSoftmax

from correctsweep.detectors.base import Detector


class Msp(Detector):
    name = "msp"

    def score(self, x):
        return 1.0 + MaxSoftmax.score(x)  # pytorch-ood's -max softmax on the [0, 1) scale of earlier runs


class Energy(Detector):
    name = "energy"

    def score(self, x):
        return EnergyBased.score(x)


class MaxLogitScore(Detector):
    name = "maxlogit"

    def score(self, x):
        return MaxLogit.score(x)


class EntropyScore(Detector):
    name = "entropy"

    def score(self, x):
        return Entropy.score(x)


class GenScore(Detector):
    name = "gen"

    def score(self, x):
        return GEN.score(x, gamma=0.1)


class KLMatchingScore(Detector):
    name = "klmatching"

    def fit(self, x, y):
        self.ood = KLMatching(None).fit_logits(x, y)

    def score(self, x):
        return self.ood.predict_logits(x)
