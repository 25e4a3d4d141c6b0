"""Aggregate a run directory's results into tables, matrices, figures and a Markdown report (SPEC §3):
`collect(RUN_DIR)` replaces RUN_DIR/report/ with the files `files` names.

The stages, a module each: `build` reads the run (spec.yaml, results/fold=J/seed=S.json, the test
predictions each result names) into a `Report` with every table (`tables`); `plots` draws its figures,
`markdown` writes report.md from it, and `write` writes all of it. `labels` names and orders classes and folds.
"""

from correctsweep.report.build import load_run
from correctsweep.report.write import collect

__all__ = ["collect", "load_run"]
