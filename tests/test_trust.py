"""Numbers you can trust: the report's figures are recomputable from predictions/ alone (read with DuckDB, no
project code), every interval holds its figure, and an undefined one reads 'n/a (reason)' with empty bounds."""
import json
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import Y, predictions, write_predictions
from sklearn.metrics import roc_auc_score

from correctsweep import metrics
from correctsweep.predictions import write as write_record
from correctsweep.report import collect
from correctsweep.trust import FOLD_INTERVALS, METHOD_INTERVALS


def no_nan_text(text):
    return re.search(r"\bnan\b", text, re.IGNORECASE) is None


def intervals_hold_their_figures(table, figures):
    for name in figures:
        defined = table[name].notna()
        assert (table[f"{name}_lo"].notna() == defined).all() and (table[f"{name}_hi"].notna() == defined).all()
        assert (table[f"{name}_lo"][defined] <= table[name][defined] + 1e-12).all()
        assert (table[name][defined] <= table[f"{name}_hi"][defined] + 1e-12).all()


def test_report_is_recomputable_from_predictions(tiny_run):
    """The tiny run's report (conftest: msp among its detectors, 200 resamples) from its predictions/ alone."""
    run = tiny_run
    rows = duckdb.sql(f"select * from read_parquet('{run}/predictions/**/*.parquet', hive_partitioning=1)").df()
    assert set(zip(rows.fold.astype(str), rows.split)) == {(f, s) for f in ("3", "none") for s in ("correct", "test")}
    test = rows[(rows.fold.astype(str) == "3") & (rows.split == "test")]
    assert test.score_msp.notna().all() and rows[rows.fold.astype(str) == "none"].score_msp.isna().all()

    folds = pd.read_csv(run / "report" / "folds.csv", dtype={"fold": str}).set_index("fold")
    methods = pd.read_csv(run / "report" / "methods.csv").set_index("method")
    gain = metrics.per_class(test.label, test.pred_f, test.h_xgboost, [1, 2, 3, 4, 5, 6, 7]).loc[3, "gain"]
    assert folds.loc["3", "gain_excluded"] == pytest.approx(gain) == methods.loc["xgboost", "gain_excluded"]
    auroc = roc_auc_score(test.label == 3, test.score_msp)
    assert methods.loc["msp", "auroc"] == pytest.approx(auroc)
    text = (run / "report" / "report.md").read_text()
    msp = next(line for line in text.split("### Fold 3 Disgust")[1].splitlines() if line.startswith("| msp |"))
    assert f"| {auroc:.3f} |" in msp

    intervals_hold_their_figures(folds, FOLD_INTERVALS)
    intervals_hold_their_figures(methods, METHOD_INTERVALS)
    assert folds.mcnemar_p.between(0, 1).all() and no_nan_text(text)
    assert (run / "report" / "roc_curves.png").stat().st_size > 1000


def test_undefined_figures_read_n_a_with_a_reason(run_builder):
    """A detector whose score is constant has no AUROC; a fold whose test holds no image of its excluded
    class has no Gain, TPR_h, P or recovery test: 'n/a (reason)' in the report, empty bounds in the CSVs."""
    run = run_builder([1, 2, "none"], [0]).add("1", 0, corrected=2).add("2", 0, corrected=1).add("none", 0)
    for fold in ("1", "2"):
        path = run.dir / "results" / f"fold={fold}" / "seed=0.json"
        r = json.loads(path.read_text())
        f, h = predictions(fold, corrected=2 if fold == "1" else 1)
        r["methods"] = {m: {"family": family, "policy": "new_class", "tau": 0.5, "gain_excluded": 0.0, "seconds": 1.0,
                            "summary": r["summary"]} for m, family in (("xgboost", "corrector"), ("she", "baseline"))}
        path.write_text(json.dumps(r))
        write_predictions(run.dir, fold, 0, f, {"xgboost": h, "she": f}, {"xgboost": (h != f) * 1.0,
                                                                          "she": np.zeros(len(Y))})
    # fold 2's test without class 2's images
    keep = Y != 2
    f, h = predictions("2", corrected=1)
    ids = np.array([f"img-{i}" for i in np.flatnonzero(keep)])  # the full model's ids of the same images
    write_record(run.dir / "predictions/fold=2/seed=0/split=test/part-k.parquet", ids, Y[keep], f[keep],
                 ["xgboost", "she"], {"xgboost": h[keep], "she": f[keep]},
                 {"xgboost": np.zeros(keep.sum()), "she": np.zeros(keep.sum())})

    report = collect(run.dir)
    text = (report / "report.md").read_text()
    assert "n/a (the score is constant on test)" in text and "n/a (no image of class 2 in test)" in text
    assert "n/a (no image of the excluded class in test)" in text and no_nan_text(text)
    methods = pd.read_csv(report / "methods.csv", dtype={"fold": str}).set_index(["fold", "method"])
    assert methods.loc[("1", "she"), "detection_na"] == "the score is constant on test"
    assert np.isnan(methods.loc[("1", "she"), "auroc"]) and methods.loc[("1", "xgboost"), "auroc"] > 0.5
    assert methods.loc[("2", "xgboost"), ["gain_excluded", "gain_excluded_lo", "gain_excluded_hi"]].isna().all()
    assert methods.loc[("2", "she"), ["p_recovery", "ties_best_recovery"]].isna().all()
    folds = pd.read_csv(report / "folds.csv", dtype={"fold": str}).set_index("fold")
    assert folds.loc["2", ["gain_excluded_lo", "power_lo", "power_hi"]].isna().all()
    assert folds.loc["1", "power"] == pytest.approx(0.5)  # TPR_h 2/4 over the full model's 4/4
    raw = (report / "folds.csv").read_text()
    assert "nan" not in raw.lower()  # empty cells, not NaN text
    intervals_hold_their_figures(folds, FOLD_INTERVALS)


def test_three_seeds_give_a_t_interval_over_seeds(run_builder):
    run = run_builder([1, "none"], [0, 1, 2])
    for seed, corrected in enumerate((1, 2, 4)):
        run.add("1", seed, corrected=corrected).add("none", seed)
    report = collect(run.dir)
    seeds = pd.read_csv(report / "folds_over_seeds.csv", dtype={"fold": str}).set_index("fold")
    gains = [0.25, 0.5, 1.0]
    assert seeds.loc["1", "gain_excluded"] == pytest.approx(np.mean(gains))
    assert seeds.loc["1", "gain_excluded_std"] == pytest.approx(np.std(gains, ddof=1))
    assert seeds.loc["1", "gain_excluded_lo"] < np.mean(gains) < seeds.loc["1", "gain_excluded_hi"]
    assert np.isnan(seeds.loc["none", "gain_excluded_lo"])
    mean_table = (report / "report.md").read_text().split("## Per fold (mean over seeds)")[1].split("\n#")[0]
    assert "| 1 Surprise | 0.583 ± 0.382 [-0.37, 1.53] |" in mean_table
    assert "n/a (undefined in every seed)" in mean_table and no_nan_text(mean_table)
