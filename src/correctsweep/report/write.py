"""Write RUN_DIR/report/: every file the Report calls for, all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from correctsweep.atomic import atomic_dir
from correctsweep.layout import RunLayout
from correctsweep.report import files, plots
from correctsweep.report.build import Report, build
from correctsweep.report.markdown import report_markdown
from correctsweep.report.tables import MATRICES, seeds_numbers


def outputs(report: Report) -> Iterator[tuple[str, Callable[[Path], object]]]:
    """Each file of the report (see `files`) with what writes it to a path: the one list of the files a run's
    report has."""
    r = report
    yield files.METRICS_PARQUET, partial(r.long.to_parquet, index=False)
    yield files.METRICS_CSV, partial(r.long.to_csv, index=False)
    yield files.FOLDS, partial(r.folds.to_csv, index=False)
    yield files.METHODS, partial(r.methods.to_csv, index=False)
    yield files.COST, partial(r.cost.to_csv, index=False)
    if len(r.frontier):
        yield files.FRONTIER, partial(r.frontier.to_csv, index=False)
        yield files.FRONTIER_PLOT, partial(plots.frontier_plot, frontier=r.frontier, folds=r.folds, names=r.names,
                                           measure=r.spec.corrector.harm_measure)
    if r.several:
        yield files.FOLDS_OVER_SEEDS, lambda path: seeds_numbers(r.seeds).to_csv(path, index=False)
    if r.compares_methods:
        yield files.GAIN_HARM, partial(plots.gain_harm_plot, methods=r.methods, names=r.names)
        yield files.ROC_CURVES, partial(plots.roc_curves, results=r.results, tests=r.tests, names=r.names)
    tables = {files.matrix(m): table for m, table in r.matrices.items()}
    if r.power is not None:
        tables[files.POWER] = r.power
    for stem, table in tables.items():
        yield files.csv(stem), table.mean.to_csv
        if r.several:
            yield files.csv(stem, std=True), table.std.to_csv
    for m, table in r.matrices.items():
        yield files.heatmap(m), partial(plots.heatmap, matrix=table.mean, title=MATRICES[m], names=r.names,
                                        diverging=m == "dfpr")
    if r.has_training_curves:
        yield files.TRAINING_CURVES, partial(plots.training_curves, results=r.results, names=r.names)
    yield files.MARKDOWN, lambda path: path.write_text(report_markdown(r))


def collect(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/ (see `files`) and return its path."""
    report = build(Path(run_dir))
    out = RunLayout(report.run_dir).report_dir
    with atomic_dir(out) as tmp:
        for name, write in outputs(report):
            write(tmp / name)
    return out
