"""From a run directory to the Report: its spec, one result per fold x seed and each result's test predictions
(see `predictions`), whence every table, interval, test and detection metric (see `trust`), computed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from correctsweep import predictions
from correctsweep.config import ReportConfig, Spec, load_spec
from correctsweep.errors import CorrectsweepError
from correctsweep.keys import sweep_key
from correctsweep.layout import RunLayout
from correctsweep.report.labels import fold_order
from correctsweep.report.tables import (
    OverSeeds,
    cost_table,
    fold_table,
    frontier_table,
    long_table,
    matrices,
    methods_table,
    power_table,
    seeds_table,
)
from correctsweep.results import TrialResult
from correctsweep.schedulers import stopped_trials
from correctsweep.trust import FOLD_INTERVALS, METHOD_INTERVALS, expand, fold_trust


def load_run(run_dir: Path) -> tuple[Spec, list[TrialResult]]:
    """The run's spec and every result under results/ (less those of samples a scheduler stopped); a one-line
    error when there is none."""
    layout = RunLayout(Path(run_dir))
    paths = layout.result_files()
    if not paths:
        raise CorrectsweepError(f"no results in {layout.root / 'results'}; run `correctsweep trial SPEC --fold J` "
                                f"or `correctsweep sweep SPEC` with this run directory as <storage>/<name> first")
    if not layout.spec_file.is_file():
        raise CorrectsweepError(f"{layout.root} has results but no spec.yaml; rerun one trial of its spec to write it")
    spec = load_spec(layout.spec_file, stored=True)
    stopped = {(s.fold, s.seed, s.net_key) for s in stopped_trials(layout)}
    results = [r for r in map(TrialResult.read, paths) if (r.fold, r.seed, r.net_key) not in stopped]
    return spec, _one_per_fold_seed(results, sweep_key(spec))


def _one_per_fold_seed(results: list[TrialResult], key: str) -> list[TrialResult]:
    """The result of each fold x seed: when a `search` left several samples of one, the sample of this
    sweep's settings with the best cross-validated corrector objective (never a test figure)."""
    rank = lambda r: (r.sweep_key == key, r.corrector.cv_score)  # this sweep's first
    best = {}
    for r in results:
        at = (r.fold, r.seed)
        if at not in best or rank(r) > rank(best[at]):
            best[at] = r
    return list(best.values())


def expected_folds(folds: list, names: dict[int, str]) -> list[str]:
    """The spec's folds as the run directory spells them: 'all' as every class, names as their labels."""
    by_name = {n.casefold(): c for c, n in names.items()}
    out = []
    for f in folds:
        text = str(f)
        if text == "all":
            out += [str(c) for c in names]
        elif text.isascii() and text.isdigit():
            out.append(str(int(text)))
        else:
            out.append(str(by_name.get(text.casefold(), text)))
    return out


@dataclass(frozen=True)
class Report:
    """What RUN_DIR/report/ shows, computed once: every file of it (`write.outputs`) and every section of
    report.md (`markdown`) is a function of this."""

    spec: Spec
    run_dir: Path
    results: list[TrialResult]
    """One per fold x seed (`load_run`'s choice among a search's samples)."""
    tests: dict[tuple[str, int], pd.DataFrame]
    """(fold, seed) -> its test predictions."""
    names: dict[int, str]
    """class -> its name, over every result."""
    nets: list[str]
    """The base nets of the results."""
    published: str
    """The published corrector kind(s)."""
    missing: list[tuple[str, int]]
    """The (fold, seed) pairs spec.yaml's folds x seeds expects and results/ lacks, in fold order."""
    stopped: int
    """`search` samples the scheduler stopped early (schedulers.StoppedTrial): none of them is among `results`."""
    several: bool
    """Whether some fold has several seeds: the report then shows mean ± std over seeds."""
    long: pd.DataFrame
    """long_table: metrics.parquet and metrics.csv."""
    fold_cells: pd.DataFrame
    """fold_table, its intervals as Interval cells (report.md's text)."""
    folds: pd.DataFrame
    """fold_table, each interval as three numbers (folds.csv)."""
    seeds: pd.DataFrame
    """seeds_table: per fold over seeds, stats.SeedSummary cells."""
    method_cells: pd.DataFrame
    """methods_table, its intervals as Interval cells (report.md's text)."""
    methods: pd.DataFrame
    """methods_table, each interval as three numbers (methods.csv)."""
    cost: pd.DataFrame
    """cost_table."""
    frontier: pd.DataFrame
    """frontier_table: the published corrector's Gain-Harm curve over tau on test."""
    matrices: dict[str, OverSeeds]
    """tables.MATRICES's metric -> its class x fold matrix; empty when no fold has an excluded class."""
    power: OverSeeds | None
    """The TPR_h matrix with `full` and `P`; None when no fold has an excluded class."""

    @property
    def config(self) -> ReportConfig:
        return self.spec.report

    @property
    def compares_methods(self) -> bool:
        """Whether the results hold more than one corrector kind or detector."""
        return self.methods.method.nunique() > 1

    @property
    def certifies(self) -> bool:
        """Whether some result's published corrector carries a certified bound on Harm."""
        return bool(self.folds.harm_bound.notna().any())

    @property
    def has_training_curves(self) -> bool:
        """Whether some result holds a training record."""
        return bool(self.folds.epochs_run.notna().any())


def build(run_dir: Path) -> Report:
    """The Report of `run_dir`: a one-line error (load_run's) where it has no results or no spec.yaml, and
    predictions.read's where a result's test predictions are unreadable."""
    spec, results = load_run(run_dir)
    names = {c: n for r in results for c, n in r.names.items()}
    classes = sorted(names)
    expected = {(f, s) for f in expected_folds(spec.folds, names) for s in spec.seeds}
    found = {(r.fold, r.seed) for r in results}
    excluded = sorted({int(f) for f, _ in expected | found if f != "none"})

    long = long_table(results, spec.name)
    cfg = spec.report
    layout, where = RunLayout(Path(run_dir)), lambda r: f"result fold {r.fold} seed {r.seed}"
    tests = {(r.fold, r.seed): predictions.read(layout.inside(r.paths.predictions["test"], where(r)), where(r))
             for r in results}
    full = {s: test for (f, s), test in tests.items() if f == "none"}
    trusts = {(r.fold, r.seed): fold_trust(r, tests[(r.fold, r.seed)], full.get(r.seed), cfg) for r in results}
    fold_cells = fold_table(results, trusts)
    folds = expand(fold_cells, FOLD_INTERVALS)
    method_cells = methods_table(results, tests, cfg)
    by_metric = matrices(long, classes, excluded) if excluded else {}
    return Report(
        spec=spec, run_dir=run_dir, results=results, tests=tests, names=names,
        nets=sorted({r.net for r in results}), published=", ".join(sorted({r.corrector.kind for r in results})),
        missing=sorted(expected - found, key=lambda fs: (fold_order(fs[0]), fs[1])),
        stopped=len(stopped_trials(RunLayout(Path(run_dir)))),
        several=bool(folds.groupby("fold").seed.nunique().max() > 1), long=long,
        fold_cells=fold_cells, folds=folds, seeds=seeds_table(folds, cfg.level),
        method_cells=method_cells, methods=expand(method_cells, METHOD_INTERVALS),
        cost=cost_table(results, long, classes), frontier=frontier_table(results), matrices=by_metric,
        power=power_table(by_metric["tpr_h"], long, classes) if excluded else None)
