"""How often the certified bound on Harm fails: the calibration (`certify`) repeated over many random re-splits,
the share of them whose Harm on the held-apart rows exceeded max_harm printed beside delta = 1 - confidence.

1. Synthetic scores, whose true Harm at each tau is known (a Beta tail), for each Harm measure.
2. Given run directories: each certified result's corrector rows that g was not fitted on (its calibration and
   test rows, kept in the corrector's predictions.parquet) pooled and re-split, stratified by class, into a
   calibration part of the original size and a test part, --resplits times; the winner's policy and its probabilities
   are the run's, so only the draw of the calibration rows changes. A violation is a re-split whose test part's
   Harm (the spec's measure) exceeds max_harm. Pooled over results, the rate must be at most delta within
   binomial noise (the printed 95 % interval of the rate must reach down to delta).

    PYTHONPATH=src python benchmarks/certify_bench.py [--resplits 500] [RUN_DIR ...]
        [--halves RUN_DIR ... --kind xgboost --max-harm 0.02 0.05 0.1]

3. --halves: any finished run, certified or not: each fold's test record (which g never saw) split in halves
   at each re-split, calibration and evaluation, with the kind's new_class score: what certified Harm would
   keep of its Gain (the FER+ spec's bound was chosen from this), and a violation count on real data.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

from correctsweep import certify, metrics, predictions
from correctsweep.config import CorrectorConfig
from correctsweep.corrector_store import read_predictions, read_record
from correctsweep.layout import RunLayout
from correctsweep.policy import Labels, targets
from correctsweep.report import load_run

RIGHT, WRONG = (2, 5), (5, 2)  # g's score of the excluded class on f's right / wrong rows


def rate_line(name: str, failures: int, trials: int, delta: float) -> str:
    """The violation rate with its 95 % Clopper-Pearson interval: within delta unless the whole interval lies
    above it."""
    lower = beta.ppf(0.025, failures, trials - failures + 1) if failures else 0.0
    upper = certify.upper_bound(failures, trials, 0.025)
    verdict = "EXCEEDS delta" if lower > delta else "within delta"
    return (f"{name:<44} {failures:>5} of {trials:<6} = {failures / trials:.3f} [{lower:.3f}, {upper:.3f}] "
            f"(delta {delta:.2f}) {verdict}")


def synthetic(resplits: int, rng: np.random.Generator) -> None:
    """Calibration draws of 400 rows over 7 classes (one excluded); per class Harm_i at tau is known exactly:
    class c's right answers score Beta(2, 5 + c / 2), so the classes differ. The tau judged is the lowest that
    certifies, the riskiest any choice among them could make (the guarantee holds for all of them at once),
    beside the lowest tau whose Harm on the calibration rows is under the bound, taken at face value."""
    classes, excluded = list(range(7)), 6
    print("synthetic scores, 400 calibration rows, confidence 0.9; the lowest certified tau, and taken at face value")
    for measure, bound in (("pooled", 0.05), ("mean", 0.15), ("worst", 0.25)):
        # a fine grid, so that the certified tau sits close to where Harm reaches the bound: the test is tight
        cfg = CorrectorConfig(max_harm=bound, confidence=0.9, harm_measure=measure, tau_grid=400)
        rule, taus = certify.Rule.of(cfg), certify.corrector_taus(cfg)
        combine = {"pooled": np.mean, "mean": np.mean, "worst": np.max}[measure]  # f right on 70 % of each class

        def true(tau, combine=combine):
            return combine([beta.sf(tau, 2, 5 + c / 2) for c in classes[:-1]])

        failures = naive = 0
        for _ in range(resplits):
            y = rng.choice(classes, 400)
            pred_f = np.where(rng.random(400) < 0.7, y, (y + 1) % 6)
            pred_f[y == excluded] = rng.choice(6, int((y == excluded).sum()))
            score = np.where(pred_f == y, rng.beta(2, 5 + y / 2), rng.beta(*WRONG))
            labels, target = Labels(y, pred_f, classes, excluded), np.full(400, excluded)
            certified = certify.certified_taus(target, score, labels, rule, taus)
            failures += bool(certified) and true(min(certified)) > bound
            broken, kept = certify.harm_counts(target, score, labels, taus)
            at_face = taus[metrics.harm_of(broken, kept, measure) <= bound]
            naive += bool(at_face.size) and true(at_face.min()) > bound
        print(rate_line(f"  {measure} Harm <= {bound}, certified", failures, resplits, rule.delta))
        print(rate_line(f"  {measure} Harm <= {bound}, at face value", naive, resplits, rule.delta))


def _stratified(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random calibration part of `size` rows drawn stratified by class (each class in proportion)."""
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked.append(rng.choice(rows, int(round(size * len(rows) / len(labels))), replace=False))
    return np.concatenate(picked)


@dataclass
class Rows:
    """Rows of one result that g was not fitted on, and how h is made of them."""

    y: np.ndarray
    pred_f: np.ndarray
    target: np.ndarray
    conf: np.ndarray
    labels: Labels
    size: int
    """Calibration rows per re-split."""


def resplits(rows: Rows, cfg: CorrectorConfig, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n stratified re-splits of `rows` into a calibration part of rows.size and the rest: per re-split the
    certified tau and, on the rest, the excluded class's Gain, the pooled and mean Harm, and the bound's Harm."""
    rule, taus, classes = certify.Rule.of(cfg), certify.corrector_taus(cfg), rows.labels.classes
    out = []
    for _ in range(n):
        calibration = np.zeros(len(rows.y), dtype=bool)
        calibration[_stratified(rows.y, rows.size, rng)] = True
        part = Labels(rows.y[calibration], rows.pred_f[calibration], classes, rows.labels.excluded)
        found = certify.certify(rows.target[calibration], rows.conf[calibration], part, rule, taus, cfg)
        rest = ~calibration
        h = np.where(rows.conf[rest] >= found.tau, rows.target[rest], rows.pred_f[rest])
        c = metrics.counts(rows.y[rest], rows.pred_f[rest], h, classes)
        broken, kept = c.hit_f - c.hit_both, c.hit_f
        gain = metrics.rates(c)["gain"][list(classes).index(rows.labels.excluded)] if rows.labels.excluded is not None \
            else math.nan
        out.append({"tau": found.tau, "gain": gain, "pooled_harm": metrics.harm_of(broken, kept, "pooled"),
                    "mean_harm": metrics.harm_of(broken, kept, "mean"),
                    "harm": metrics.harm_of(broken, kept, cfg.harm_measure)})
    return pd.DataFrame(out)


def certified_rows(run_dir: str) -> tuple[CorrectorConfig, list[tuple[str, Rows]]]:
    """Each certified result's published corrector on its calibration and test rows (g fitted on neither)."""
    spec, results = load_run(run_dir)
    layout, out = RunLayout(Path(run_dir)), []
    for r in results:
        workdir = layout.root / r.paths.corrector
        record = read_record(workdir)
        rows = pd.concat([read_predictions(workdir, "calibration"), read_predictions(workdir, "test")])
        proba = rows[[f"p_{c}" for c in record.classes]].to_numpy()
        target, conf = targets(proba, record.classes, record.policy, r.excluded)
        y, pred_f = rows.label.to_numpy(), rows.pred_f.to_numpy()
        out.append((f"fold {r.fold} seed {r.seed}", Rows(y, pred_f, target, conf, Labels(y, pred_f, record.classes,
                                                                                       r.excluded),
                                                       record.certificate.calibration_rows)))
    return spec.corrector, out


def test_halves(run_dir: str, kind: str) -> list[tuple[str, Rows]]:
    """Any finished run's folds with an excluded class: its test record (which g never saw) with `kind`'s
    new_class score (g's probability of the excluded class), half of it calibration at each re-split."""
    _, results = load_run(run_dir)
    out = []
    for r in results:
        if r.excluded is None:
            continue
        test = predictions.read(run_dir, r.paths.predictions["test"], f"fold {r.fold} seed {r.seed}")
        y, pred_f = test.label.to_numpy(), test.pred_f.to_numpy()
        out.append((f"fold {r.fold} seed {r.seed}", Rows(y, pred_f, np.full(len(y), r.excluded),
                                                         test[f"score_{kind}"].to_numpy(),
                                                         Labels(y, pred_f, r.classes, r.excluded), len(y) // 2)))
    return out


def report(name: str, found: list[tuple[str, pd.DataFrame]], cfg: CorrectorConfig) -> None:
    """Per result the violations and mean figures over its re-splits, then the rate over all."""
    failures = trials = 0
    for label, table in found:
        broke = int((table.harm > cfg.max_harm).sum())
        failures, trials = failures + broke, trials + len(table)
        print(f"  {label:<18} broke {broke:>4} of {len(table)}; Gain {table.gain.mean():.3f}, pooled Harm "
              f"{table.pooled_harm.mean():.3f}, mean Harm {table.mean_harm.mean():.3f}, no tau in "
              f"{int(np.isinf(table.tau).sum())}")
    if trials:
        print(rate_line(f"  {name}", failures, trials, 1 - cfg.confidence))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories of certified sweeps (their calibration rows)")
    parser.add_argument("--halves", nargs="*", default=[], help="any finished runs: halves of their test records")
    parser.add_argument("--kind", default="xgboost", help="--halves: the corrector kind whose score to certify")
    parser.add_argument("--max-harm", type=float, nargs="*", default=[0.05], help="--halves: the bounds to try")
    parser.add_argument("--resplits", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    synthetic(args.resplits, rng)
    for run in args.runs:
        cfg, rows = certified_rows(run)
        print(f"{run}: {args.resplits} stratified re-splits of each result's calibration + test rows "
              f"({cfg.harm_measure} Harm at most {cfg.max_harm}, confidence {cfg.confidence})")
        report("all results", [(label, resplits(r, cfg, args.resplits, rng)) for label, r in rows], cfg)
    for run in args.halves:
        rows = test_halves(run, args.kind)
        for bound in args.max_harm:
            cfg = CorrectorConfig(max_harm=bound, confidence=0.9)
            print(f"{run}: {args.kind}'s new_class score, {args.resplits} re-splits of each test record into "
                  f"halves (pooled Harm at most {bound}, confidence 0.9)")
            report("all results", [(label, resplits(r, cfg, args.resplits, rng)) for label, r in rows], cfg)


if __name__ == "__main__":
    main()
