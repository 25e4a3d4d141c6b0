"""Seconds per fold of the stratified bootstrap (stats.bootstrap_intervals and bootstrap_power) beside one
plain computation of the fold's metrics (metrics.per_class and metrics.summary), in one run; and, given a
run directory, the seconds `collect` takes on it with report.bootstrap at 100 (the least allowed) and at
1000, with the interval stage (trust: every fold's and method's intervals, tests and detection metrics)
timed alone, so collect without it is the difference.

    PYTHONPATH=src python benchmarks/bootstrap_bench.py [--resamples 1000 --repeat 3] [RUN_DIR]

A run directory to time, e.g. a smoke run's:
    correctsweep trial sweeps/smoke.yaml --fold 3 --set storage=/tmp/b && \
    correctsweep trial sweeps/smoke.yaml --fold none --set storage=/tmp/b   # then RUN_DIR = /tmp/b/smoke

Sizes: 1,500 test images over 7 classes (RAF-DB's test split is ~3,000, a fold's ~1,500 here) and
3,000 over 8 (FER+). Predictions are random but shaped like a fold's: f never predicts the excluded
class and is right ~70 % elsewhere, h recovers about half the excluded class. Each figure is the best of
--repeat runs. "1 resample, naive" is the plain computation times the resamples: what calling the
metrics once per resample would cost.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from correctsweep import metrics, predictions, stats
from correctsweep.report import collect, load_run
from correctsweep.trust import fold_trust, method_rows

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


def interval_stage(run_dir: Path) -> None:
    """What collect spends on trust: every result's fold intervals and McNemar, and its methods' rows."""
    spec, results = load_run(run_dir)
    tests = {(r.fold, r.seed): predictions.read(run_dir, r.paths.predictions["test"], "bench") for r in results}
    for r in results:
        fold_trust(r, tests[(r.fold, r.seed)], tests.get(("none", r.seed)), spec.report)
        if r.excluded is not None and r.methods:
            method_rows(r, tests[(r.fold, r.seed)], spec.report)


def time_collect(run_dir: Path, repeat: int) -> None:
    """collect and its interval stage at 100 and 1000 resamples, on a copy of `run_dir`."""
    spec, results = load_run(run_dir)
    methods = max(len(r.methods) for r in results)
    print(f"\n{run_dir}: {len(results)} results, up to {methods} methods a fold; seconds, best of {repeat}")
    print(f"{'resamples':>9} {'collect':>8} {'interval stage':>15} {'collect without it':>19}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report", "locks"))
        for resamples in (100, 1000):
            raw = yaml.safe_load((copy / "spec.yaml").read_text())
            raw["report"] = {"bootstrap": resamples, "level": spec.report.level}
            (copy / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            whole = best_of(repeat, collect, copy)
            stage = best_of(repeat, interval_stage, copy)
            print(f"{resamples:>9} {whole:>8.2f} {stage:>15.2f} {whole - stage:>19.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory whose collect to time")
    args = parser.parse_args()
    print(f"{'images':>7} {'classes':>7} {'plain metrics':>14} {'bootstrap':>10} {'power':>8} {'naive':>8}  (seconds)")
    for n, k in SIZES:
        classes, excluded, labels, pred_f, pred_h = fold(n, k)
        full = np.where(labels == excluded, excluded, pred_f)  # a full model that knows the excluded class
        plain = best_of(args.repeat, plain_metrics, labels, pred_f, pred_h, classes)
        how = stats.Resampling(args.resamples)
        boot = best_of(args.repeat, stats.bootstrap_intervals, labels, pred_f, pred_h, classes, excluded, how)
        power = best_of(args.repeat, stats.bootstrap_power, labels, pred_h, full, classes, excluded, how)
        print(f"{n:>7} {k:>7} {plain:>14.4f} {boot:>10.3f} {power:>8.3f} {plain * args.resamples:>8.2f}")
    if args.run_dir:
        time_collect(args.run_dir, args.repeat)


if __name__ == "__main__":
    main()
