"""Compact embeddings side by side: the corrector search on full-width taps against whitened PCA.

    python benchmarks/pca_bench.py RUN_DIR [--folds 1 3 7] [--seed 0] [--dims 32 64] [--set key=value ...]

Reads the features a sweep or trial already wrote to RUN_DIR (their spec from RUN_DIR/spec.yaml,
with --set overrides on top) and, for each fold, runs the same corrector search (same candidates
budget, CV splits and sampler seed) once per setting of corrector.xgboost.pca_dims: null (full width) and
each --dims value. Prints per fold and setting the seconds per candidate, the excluded class's
Gain, the mean Harm over classes and h's balanced accuracy on test, and the per-setting means.
"""

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from correctsweep import corrector, metrics
from correctsweep.config import load_spec, settings_of
from correctsweep.features import read_split
from correctsweep.layout import RunLayout


def one(run: Path, result: dict, cfg, threads: int) -> dict:
    key = result.get("features_key", result["net_key"])  # runs before features_key named files by the net
    sets = {s: read_split(RunLayout(run).features_file(result["fold"], result["seed"], s, key))
            for s in ("correct", "test")}
    with tempfile.TemporaryDirectory() as work:
        found = corrector.search(sets["correct"], sets["test"], cfg, Path(work), threads)
    test = sets["test"]
    table = metrics.per_class(test.labels, test.pred_f, found.pred_h, result["classes"])
    excluded = result["excluded"]
    return {"s per candidate": found.seconds_per_candidate, "candidates": found.n_candidates,
            "gain excluded": table.at[excluded, "gain"] if excluded is not None else np.nan,
            "mean harm": metrics.nanmean(table["harm"]),
            "bal acc h": metrics.balanced_accuracy(test.labels, found.pred_h, result["classes"]),
            "dims used": found.pca_dims}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--folds", nargs="*", help="excluded classes (default: every result in the run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dims", nargs="+", type=int, default=[64])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(args.run_dir / "spec.yaml", args.set, stored=True)
    threads = spec.corrector.threads or max(1, int(spec.resources.cpus_per_trial))
    paths = sorted((args.run_dir / "results").glob(f"fold=*/seed={args.seed}.json"))
    results = [json.loads(p.read_text()) for p in paths]
    results = [r for r in results if r["excluded"] is not None and (not args.folds or r["fold"] in args.folds)]
    rows = []
    for r in results:
        for dims in [None, *args.dims]:
            xgboost = dataclasses.replace(settings_of(spec.corrector, "xgboost"), pca_dims=dims)
            cfg = dataclasses.replace(spec.corrector, kind="xgboost", settings={"xgboost": xgboost})
            row = {"fold": r["fold"], "pca_dims": "full" if dims is None else dims}
            rows.append(row | one(args.run_dir, r, cfg, threads))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{args.run_dir}: corrector.n_candidates={spec.corrector.n_candidates}, "
          f"cv_splits={spec.corrector.cv_splits}, {threads} thread(s)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\nmeans over folds:")
    means = table.drop(columns="fold").groupby("pca_dims", sort=False).mean()
    print(means.to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
