"""Seconds per corrector candidate: the project's search against a naive CV loop, in one run.

    PYTHONPATH=src python benchmarks/corrector_bench.py [--rows 2000 --features 200 --classes 7 --candidates 10]
    PYTHONPATH=src python benchmarks/corrector_bench.py --workers 1 2 --threads 2 --baseline 0

The search (correctsweep.corrector.search) reuses each CV split's quantised matrices, stops boosting
early and prunes. The naive baseline re-runs the candidates the search tried (same parameters and
taps; the first --baseline of them if given): a fresh DMatrix per CV split and max_rounds rounds
without early stopping. Both are timed on the same candidates, so the ratio is like for like. With
--default-bins the baseline also uses XGBoost's default max_bin (256) instead of the project's 64.
With --workers 1 2 the search runs once per worker count on the same data and budget, each from a
fresh journal, splitting --threads among its workers (corrector.workers), and prints its wall seconds
(the workers' start included) and best cross-validated score side by side; the naive baseline re-runs
the first search's candidates (--baseline 0 skips it).
The data are random but learnable: every class shifts a few columns of each tap, under noise.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import xgboost as xgb

from correctsweep.config import CorrectorConfig, from_mapping
from correctsweep.corrector import STUDY_NAME, search, stratified_cv_splits, study_storage, worker_threads
from correctsweep.features import FeatureSet
from correctsweep.kinds import stack_taps

TAPS = ("conv", "lstm", "fc", "softmax")


def make_split(rows, features, classes, seed, signal_seed=123):
    rng, signal = np.random.default_rng(seed), np.random.default_rng(signal_seed)
    labels = rng.integers(1, classes + 1, rows)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    shift = signal.normal(scale=0.4, size=(classes, features)) * (signal.random((classes, features)) < 0.05)
    X += shift[labels - 1].astype(np.float32)
    pred_f = np.where(rng.random(rows) < 0.7, labels, rng.integers(1, classes, rows))  # never class K
    taps = dict(zip(TAPS, np.array_split(X, len(TAPS), axis=1)))
    meta = {"classes": list(range(1, classes + 1)), "excluded": classes}
    return FeatureSet(np.arange(rows).astype(str), labels, pred_f, taps, meta)


def naive_candidate(correct, params, taps, cv_splits, max_rounds):
    """One candidate the plain way: a fresh DMatrix per split, every round, no pruning."""
    X, _ = stack_taps(correct, taps)
    y = np.searchsorted(correct.meta["classes"], correct.labels)
    for valid in cv_splits:
        train = np.setdiff1d(np.arange(len(y)), valid)
        booster = xgb.train(params, xgb.DMatrix(X[train], y[train], nthread=params["nthread"]), max_rounds)
        booster.predict(xgb.DMatrix(X[valid], nthread=params["nthread"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--features", type=int, default=200)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--baseline", type=int, default=None, help="re-run only this many candidates naively")
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--default-bins", action="store_true", help="naive baseline with XGBoost's max_bin")
    ap.add_argument("--threads", type=int, default=1,
                    help="XGBoost threads of the search, split among its workers (1: steadier on a busy box)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="corrector.workers to compare, e.g. 1 2")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    correct = make_split(args.rows, args.features, args.classes, seed=0)
    test = make_split(args.rows // 4, args.features, args.classes, seed=1)
    runs = []
    for workers in args.workers:
        cfg = from_mapping(CorrectorConfig, {"n_candidates": args.candidates, "workers": workers, "xgboost": {
            "max_rounds": args.max_rounds, "early_stopping_rounds": 20}}, "corrector")
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = search(correct, test, cfg, Path(tmp), threads=args.threads)
            wall = time.perf_counter() - started
            trials = optuna.load_study(study_name=STUDY_NAME, storage=study_storage(Path(tmp))).trials
        runs.append((workers, worker_threads(cfg, args.threads), result, wall, trials))

    print(f"data: {args.rows} rows x {args.features} features, {args.classes} classes, {cfg.cv_splits}-fold CV, "
          f"max_rounds {args.max_rounds}, {args.threads} threads, xgboost {xgb.__version__}, "
          f"{os.cpu_count()} cores")
    for workers, threads, result, wall, trials in runs:
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        print(f"workers {workers} x {threads} thread(s): {result.n_candidates} candidates "
              f"({pruned} pruned) in {result.search_seconds:.1f} s of search ({wall:.1f} s with the refit), "
              f"{result.seconds_per_candidate:.2f} s/candidate; best cv {result.cv_score:.4f}, winner "
              f"{result.n_rounds} rounds, taps {result.taps}")
    if args.baseline == 0:
        return
    workers, _, result, wall, trials = runs[0]
    tried = [t for t in trials if "params" in t.user_attrs][:args.baseline]
    ours = sum(t.duration.total_seconds() for t in tried) / len(tried)

    y = np.searchsorted(correct.meta["classes"], correct.labels)
    cv_splits = stratified_cv_splits(y, cfg.cv_splits, cfg.seed, correct.meta["classes"])
    start = time.perf_counter()
    for t in tried:
        params = t.user_attrs["params"]
        if args.default_bins:
            params = {k: v for k, v in params.items() if k != "max_bin"}
        naive_candidate(correct, params, t.user_attrs["taps"], cv_splits, args.max_rounds)
    naive = (time.perf_counter() - start) / len(tried)

    bins = "256 bins" if args.default_bins else "same bins"
    print(f"same {len(tried)} candidates as workers {workers}: search {ours:.2f} s/candidate, "
          f"naive ({bins}) {naive:.2f} s/candidate, speed-up {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
