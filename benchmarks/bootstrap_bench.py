"""Seconds per fold of the stratified bootstrap (stats.bootstrap_intervals and bootstrap_power) beside one
plain computation of the fold's metrics (metrics.per_class and metrics.summary), in one run.

    PYTHONPATH=src python benchmarks/bootstrap_bench.py [--resamples 1000 --repeat 3]

Sizes: 1,500 test images over 7 classes (RAF-DB's test split is ~3,000, a fold's ~1,500 here) and
3,000 over 8 (FER+). Predictions are random but shaped like a fold's: f never predicts the excluded
class and is right ~70 % elsewhere, h recovers about half the excluded class. Each figure is the best of
--repeat runs. "1 resample, naive" is the plain computation times the resamples: what calling the
metrics once per resample would cost.
"""

import argparse
import time

import numpy as np

from correctsweep import metrics, stats

SIZES = ((1500, 7), (3000, 8))


def fold(n, k, seed=0):
    rng = np.random.default_rng(seed)
    classes = list(range(1, k + 1))
    excluded = 3
    labels = rng.choice(classes, n)
    others = [c for c in classes if c != excluded]
    pred_f = np.where((labels != excluded) & (rng.random(n) < 0.7), labels, rng.choice(others, n))
    pred_h = np.where((labels == excluded) & (rng.random(n) < 0.5), excluded, pred_f)
    return classes, excluded, labels, pred_f, pred_h


def best_of(repeat, run, *args):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - started)
    return min(times)


def plain_metrics(labels, pred_f, pred_h, classes):
    metrics.per_class(labels, pred_f, pred_h, classes)
    metrics.summary(labels, pred_f, pred_h, classes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'images':>7} {'classes':>7} {'plain metrics':>14} {'bootstrap':>10} {'power':>8} {'naive':>8}  (seconds)")
    for n, k in SIZES:
        classes, excluded, labels, pred_f, pred_h = fold(n, k)
        full = np.where(labels == excluded, excluded, pred_f)  # a full model that knows the excluded class
        plain = best_of(args.repeat, plain_metrics, labels, pred_f, pred_h, classes)
        boot = best_of(args.repeat, stats.bootstrap_intervals, labels, pred_f, pred_h, classes, excluded,
                       args.resamples)
        power = best_of(args.repeat, stats.bootstrap_power, labels, pred_h, full, classes, excluded, args.resamples)
        print(f"{n:>7} {k:>7} {plain:>14.4f} {boot:>10.3f} {power:>8.3f} {plain * args.resamples:>8.2f}")


if __name__ == "__main__":
    main()
