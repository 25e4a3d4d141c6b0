"""How often the certified bound on Harm fails: the calibration (`certify`) repeated over many random re-splits,
the share of them whose Harm on the held-apart rows exceeded max_harm printed beside delta = 1 - confidence.

1. Synthetic scores, whose true Harm at each tau is known (a Beta tail), for each Harm measure.
2. Given run directories: each certified result's corrector rows that g was not fitted on (its calibration and
   test rows, kept in the corrector's predictions.parquet) pooled and re-split, stratified by class, into a
   calibration part of the original size and a test part, --resplits times; the winner's policy and its probabilities
   are the run's, so only the draw of the calibration rows changes. A violation is a re-split whose test part's
   Harm (the spec's measure) exceeds max_harm. Pooled over results, the rate must be at most delta within
   binomial noise (the printed 95 % upper bound of the rate).

    PYTHONPATH=src python benchmarks/certify_bench.py [--resplits 500] [RUN_DIR ...]
"""

import argparse
import math

import numpy as np
import pandas as pd
from scipy.stats import beta

from correctsweep import certify, metrics
from correctsweep.config import CorrectorConfig
from correctsweep.corrector_store import read_predictions, read_record
from correctsweep.layout import RunLayout
from correctsweep.policy import Labels, targets
from correctsweep.report import load_run

RIGHT, WRONG = (2, 5), (5, 2)  # g's score of the excluded class on f's right / wrong rows


def rate_line(name: str, failures: int, trials: int, delta: float) -> str:
    upper = certify.upper_bound(failures, trials, 0.05)
    verdict = "ok" if failures / trials <= delta or upper >= delta else "EXCEEDS delta"
    return (f"{name:<44} {failures:>5} of {trials:<6} = {failures / trials:.3f}  (95 % upper {upper:.3f}; "
            f"delta {delta:.2f}) {verdict}")


def synthetic(resplits: int, rng: np.random.Generator) -> None:
    """Calibration draws of 400 rows over 7 classes (one excluded); per class Harm_i at tau is known exactly:
    class c's right answers score Beta(2, 5 + c / 2), so the classes differ."""
    classes, excluded = list(range(7)), 6
    print("synthetic scores, 400 calibration rows, confidence 0.9")
    for measure, bound in (("pooled", 0.05), ("mean", 0.15), ("worst", 0.25)):
        cfg = CorrectorConfig(max_harm=bound, confidence=0.9, harm_measure=measure)
        rule, taus = certify.Rule.of(cfg), certify.corrector_taus(cfg)
        failures = 0
        for _ in range(resplits):
            y = rng.choice(classes, 400)
            pred_f = np.where(rng.random(400) < 0.7, y, (y + 1) % 6)
            pred_f[y == excluded] = rng.choice(6, int((y == excluded).sum()))
            right = pred_f == y
            score = np.where(right, rng.beta(2, 5 + y / 2), rng.beta(*WRONG))
            labels = Labels(y, pred_f, classes, excluded)
            found = certify.certify(np.full(400, excluded), score, labels, rule, taus, cfg)
            per_class = np.array([beta.sf(found.tau, 2, 5 + c / 2) if math.isfinite(found.tau) else 0.0
                                  for c in classes[:-1]])
            # f is right on 70 % of each trained class, drawn uniformly: its right answers spread evenly
            true = {"pooled": per_class.mean(), "mean": per_class.mean(), "worst": per_class.max()}[measure]
            failures += true > bound
        print(rate_line(f"  {measure} Harm <= {bound}", failures, resplits, rule.delta))


def _stratified(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random calibration part of `size` rows drawn stratified by class (each class in proportion)."""
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked.append(rng.choice(rows, int(round(size * len(rows) / len(labels))), replace=False))
    return np.concatenate(picked)


def resplit_run(run_dir: str, resplits: int, rng: np.random.Generator) -> tuple[int, int, float]:
    spec, results = load_run(run_dir)
    cfg, layout = spec.corrector, RunLayout(run_dir)
    failures = trials = 0
    if cfg.max_harm is None:
        print(f"{run_dir}: not certified (corrector.max_harm is null); skipped")
        return 0, 0, 0.0
    rule, taus = certify.Rule.of(cfg), certify.corrector_taus(cfg)
    for r in results:
        workdir = layout.root / r.paths.corrector
        record = read_record(workdir)
        rows = pd.concat([read_predictions(workdir, "calibration"), read_predictions(workdir, "test")])
        proba = rows[[f"p_{c}" for c in record.classes]].to_numpy()
        target, conf = targets(proba, record.classes, record.policy, r.excluded)
        y, pred_f = rows.label.to_numpy(), rows.pred_f.to_numpy()
        size = record.certificate.calibration_rows
        held = 0
        for _ in range(resplits):
            calibration = np.zeros(len(y), dtype=bool)
            calibration[_stratified(y, size, rng)] = True
            labels = Labels(y[calibration], pred_f[calibration], record.classes, r.excluded)
            found = certify.certify(target[calibration], conf[calibration], labels, rule, taus, cfg)
            test = ~calibration
            h = np.where(conf[test] >= found.tau, target[test], pred_f[test])
            harm = metrics.harm(y[test], pred_f[test], h, record.classes, cfg.harm_measure)
            held += not harm > cfg.max_harm
        failures += resplits - held
        trials += resplits
        print(f"  fold {r.fold} seed {r.seed}: {resplits - held} of {resplits} re-splits broke the bound "
              f"({size} calibration rows of {len(y)})")
    return failures, trials, rule.delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories of certified sweeps")
    parser.add_argument("--resplits", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    synthetic(args.resplits, rng)
    for run in args.runs:
        print(f"{run}: {args.resplits} stratified re-splits of each result's calibration + test rows")
        failures, trials, delta = resplit_run(run, args.resplits, rng)
        if trials:
            print(rate_line("  all results", failures, trials, delta))


if __name__ == "__main__":
    main()
