"""collect on a run directory built by hand: known matrix cells, std over seeds, P, missing results,
class names, the marked excluded cells, Table 4 and the training curves."""
import json
import math
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, NAMES, Y, predictions, write_predictions

from correctsweep import metrics
from correctsweep.cli import main
from correctsweep.report import collect
from correctsweep.report.build import build
from correctsweep.report.plots import heatmap, training_curves
from correctsweep.report.write import outputs
from correctsweep.results import TrialResult

MATRICES = ("retention", "harm", "gain", "dfpr", "tpr_h")


@pytest.fixture
def run(run_builder):
    # spec: every class and none, seeds 0 and 1; fold 2 has only seed 0 and fold 3 never ran; fold 2's
    # result has no training record (a net reused from an older run)
    return (run_builder(["all", "none"], [0, 1])
            .add("1", 0, corrected=2, epochs=5).add("1", 1, corrected=3, epochs=4).add("2", 0, corrected=1)
            .add("none", 0, full_misses=1, epochs=6).add("none", 1, epochs=3))


def read(report, name):
    return pd.read_csv(report / f"{name}.csv", index_col="class")


def missing_line(report):
    return (report / "report.md").read_text().split("**Missing results**")[1].split("\n")[0]


def test_matrices_are_seed_means_with_std(run):
    report = collect(run.dir)
    gain, gain_std = read(report, "matrix_gain"), read(report, "matrix_gain_std")
    assert list(gain.columns) == ["1", "2", "3"] and list(gain.index) == CLASSES
    # fold 1: f misses all 4 images of class 1, h recovers 2 of them in seed 0 and 3 in seed 1
    assert gain.loc[1, "1"] == pytest.approx(0.625)
    assert gain_std.loc[1, "1"] == pytest.approx(np.std([0.5, 0.75], ddof=1))
    assert gain.loc[2, "2"] == pytest.approx(0.25) and math.isnan(gain_std.loc[2, "2"])  # a single seed
    assert gain["3"].isna().all()  # the fold that never ran is a blank column, not a dropped one
    assert math.isnan(read(report, "matrix_retention").loc[1, "1"])  # f is never right on class 1
    assert read(report, "matrix_harm").loc[2, "1"] == 0
    # class 2 receives class 1's 4 images under f, and 2 then 1 of them under h, out of 8 non-2 images
    assert read(report, "matrix_dfpr").loc[2, "1"] == pytest.approx(np.mean([2 / 8 - 4 / 8, 1 / 8 - 4 / 8]))
    assert read(report, "matrix_tpr_h").loc[3, "1"] == 1.0
    assert not (report / "matrix_ratio.csv").exists()


def test_power_and_full_model_columns(run):
    power = read(collect(run.dir), "tpr_h_power")
    assert list(power.columns) == ["1", "2", "3", "full", "P"]
    # the full model misses 1 of class 1's 4 images in seed 0 and none in seed 1
    assert power.full.tolist() == pytest.approx([0.875, 1.0, 1.0])
    assert power.P.loc[1] == pytest.approx(0.625 / 0.875)
    assert power.P.loc[2] == pytest.approx(0.25)
    assert math.isnan(power.P.loc[3])  # fold 3 has no result


def test_fold_table_has_every_fold_and_seed(run):
    folds = pd.read_csv(collect(run.dir) / "folds.csv", dtype={"fold": str})
    assert list(zip(folds.fold, folds.seed)) == [("1", 0), ("1", 1), ("2", 0), ("none", 0), ("none", 1)]
    assert folds.gain_excluded[:3].tolist() == [0.5, 0.75, 0.25] and folds.gain_excluded[3:].isna().all()
    assert folds.accuracy_f[0] == pytest.approx(8 / 12) and folds.accuracy_h[0] == pytest.approx(10 / 12)
    assert folds.balanced_accuracy_h[0] == pytest.approx((0.5 + 1 + 1) / 3)
    assert (folds.policy == "override").all() and (folds.search_seconds == 1.5).all()
    # f on its trained classes beside the same seed's full model on them: in fold 2, f is right on every
    # image of classes 1 and 3, the full model of seed 0 misses 1 of class 1's 4
    assert folds.balanced_accuracy_f_trained.tolist() == pytest.approx([1, 1, 1, 2.75 / 3, 1])
    assert folds.full_f_same_classes.tolist() == pytest.approx([1, 1, 0.875, 2.75 / 3, 1])


def test_report_names_missing_results_and_links_heatmaps(run):
    report = collect(run.dir)
    text = (report / "report.md").read_text()
    missing = missing_line(report)
    assert all(f"fold {f} seed {s}" in missing for f, s in (("2", 1), ("3", 0), ("3", 1)))
    assert "fold 1 " not in missing and "fold none" not in missing
    assert "0.625 ± 0.177" in text and "| n/a |" in text
    for m in MATRICES:
        assert f"(heatmap_{m}.png)" in text
        assert (report / f"heatmap_{m}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_long_table_is_readable_by_pandas_and_duckdb(run):
    report = collect(run.dir)
    table = pd.read_parquet(report / "metrics.parquet")
    n_summary = len(metrics.summary(Y, Y, Y, CLASSES))
    assert list(table.columns) == ["run", "fold", "seed", "class", "metric", "value"]
    assert len(table) == 5 * (len(CLASSES) * len(metrics.METRIC_COLUMNS) + n_summary)
    assert table["class"].isna().sum() == 5 * n_summary and (table.run == "run").all()
    assert pd.read_csv(report / "metrics.csv").shape == table.shape
    path = report / "metrics.parquet"
    gain = duckdb.sql(f"select value from '{path}' where fold = '1' and seed = 1 and class = 1 and metric = 'gain'")
    assert gain.fetchall() == [(0.75,)]
    summary = duckdb.sql(f"select count(*) from '{path}' where class is null and metric = 'accuracy_f'")
    assert summary.fetchall() == [(5,)]


def test_rerun_replaces_the_whole_report(run):
    collect(run.dir)
    for fold in ("1", "none"):
        (run.dir / "results" / f"fold={fold}" / "seed=1.json").unlink()
    report = collect(run.dir)
    assert not list(report.glob("*_std.csv")) and "±" not in (report / "report.md").read_text()
    assert "fold 1 seed 1" in missing_line(report)


def test_full_model_only_has_no_matrices(run_builder):
    run = run_builder(["none"], [0]).add("none", 0)
    report = collect(run.dir)
    assert not list(report.glob("matrix_*")) and not list(report.glob("*.png"))
    assert "Missing" not in (report / "report.md").read_text()
    assert len(pd.read_csv(report / "folds.csv")) == 1


@pytest.mark.parametrize("command", ["collect", "best"])
def test_empty_run_dir_is_a_one_line_error(tmp_path, capsys, command):
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "correctsweep trial" in err
    assert not (tmp_path / "report").exists() and not (tmp_path / "best").exists()


def section(text, heading):
    return text.split(f"{heading}\n")[1].split("\n#")[0]


def test_report_tables_name_classes_and_bold_the_excluded_cell(run):
    text = (collect(run.dir) / "report.md").read_text()
    gain = section(text, "### Gain")
    assert "| class | 1 Surprise | 2 Fear | 3 Disgust |" in gain
    assert "| 1 Surprise | **0.625 ± 0.177** | n/a | n/a |" in gain
    assert "| 2 Fear | n/a | **0.250** | n/a |" in gain
    assert "| 3 Disgust | n/a | n/a | **n/a** |" in gain  # fold 3 never ran: marked all the same
    assert section(text, "### Harm").count("**") == 2 * 3  # one bold cell per row
    assert "| 1 Surprise | 0 | 0.500 [0.00, 1.00] |" in section(text, "## Per fold and seed")
    # the CSVs keep the class numbers other tools join on
    assert list(read(run.dir / "report", "matrix_gain").columns) == ["1", "2", "3"]


def test_report_has_table_4_layout(run):
    text = (collect(run.dir) / "report.md").read_text()
    table = section(text, "## TPR of h by class and excluded class (the paper's Table 4)")
    assert "| class | 1 Surprise | 2 Fear | 3 Disgust | full | P |" in table
    # TPR_h of class 1: 0.5 and 0.75 in fold 1's seeds, untouched in fold 2; full model 0.75 and 1.0
    assert "| 1 Surprise | **0.625 ± 0.177** | 1.000 | n/a | 0.875 ± 0.177 | 0.714 |" in table
    assert "| 2 Fear | 1.000 ± 0.000 | **0.250** | n/a | 1.000 ± 0.000 | 0.250 |" in table


def test_heatmap_names_classes_and_outlines_the_excluded_cell(run, tmp_path):
    gain = read(collect(run.dir), "matrix_gain")
    ax = heatmap(tmp_path / "gain.png", gain, "Gain", dict(zip(CLASSES, NAMES))).axes[0]
    names = ["1 Surprise", "2 Fear", "3 Disgust"]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    outlined = [(round(p.get_x() + p.get_width() / 2), round(p.get_y() + p.get_height() / 2)) for p in ax.patches]
    assert outlined == [(0, 0), (1, 1), (2, 2)]  # (column, row) of cells (class j, fold j)
    # a matrix with only some folds outlines the cells of those folds' classes
    ax = heatmap(tmp_path / "part.png", gain[["3"]], "Gain", dict(zip(CLASSES, NAMES))).axes[0]
    assert [(p.get_x() + 0.45, p.get_y() + 0.45) for p in ax.patches] == [(0, 2)]


def test_folds_csv_has_epochs_and_report_shows_training_curves(run):
    report = collect(run.dir)
    folds = pd.read_csv(report / "folds.csv", dtype={"fold": str})
    assert folds.epochs_run.tolist()[:2] == [5, 4] and folds.best_epoch.tolist()[:2] == [4, 3]
    assert folds.epochs_run.isna().tolist() == [False, False, True, False, False]  # fold 2: no training record
    curves = section((report / "report.md").read_text(), "## Training curves")
    assert "(training_curves.png)" in curves and "fold 2 seed 0" in curves
    assert (report / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_curves_star_the_kept_epoch(run, tmp_path):
    results = [TrialResult.read(p) for p in sorted(run.dir.glob("results/fold=*/seed=*.json"))]
    loss, acc = training_curves(tmp_path / "curves.png", results, dict(zip(CLASSES, NAMES))).axes
    assert [t.get_text() for t in acc.get_legend().get_texts()] == [
        "fold 1 Surprise seed 0", "fold 1 Surprise seed 1", "fold none seed 0", "fold none seed 1"]
    stars = [line for line in acc.get_lines() if line.get_marker() == "*"]
    kept = {(r.fold, r.seed): r.train["history"][r.train["best_epoch"] - 1] for r in results if r.train}
    assert [(s.get_xdata()[0], s.get_ydata()[0]) for s in stars] == [
        (h["epoch"], h["val_accuracy"]) for h in kept.values()]
    assert len(loss.get_lines()) == len(acc.get_lines()) == 2 * len(kept)


def with_methods(run):
    """Add what a trial with several kinds and a baseline records: every result gets a refit time and, in a
    fold with an excluded class, `methods`: the published kind as it ran, and 'msp' recovering that class whole,
    its score 1 on the class's images and 0 elsewhere (both in the predictions file)."""
    for path in run.dir.glob("results/fold=*/seed=*.json"):
        r = json.loads(path.read_text())
        r["corrector"]["refit_seconds"] = 0.5
        if r["excluded"] is not None:
            f, whole = predictions(r["fold"], corrected=4)
            test = pd.read_parquet(run.dir / r["paths"]["predictions"]["test"])
            write_predictions(run.dir, r["fold"], r["seed"], f, {"xgboost": test.h_xgboost, "msp": whole},
                              {"xgboost": test.score_xgboost, "msp": (Y == r["excluded"]).astype(float)})
            gain = next(c["gain"] for c in r["per_class"] if c["class"] == r["excluded"])
            r["methods"] = {"xgboost": {"family": "corrector", "policy": "override", "tau": 0.5, "gain_excluded": gain,
                                        "summary": r["summary"], "seconds": 2.0},
                            "msp": {"family": "baseline", "policy": "new_class", "tau": 0.5, "gain_excluded": 1.0,
                                    "seconds": 0.25, "summary": metrics.summary(Y, f, whole, CLASSES)}}
        path.write_text(json.dumps(r))
    return run


def test_methods_table_and_gain_harm_plot(run_builder):
    run = with_methods(run_builder([1, 2, "none"], [0, 1]).add("1", 0, corrected=2, epochs=4)
                       .add("1", 1, corrected=3, epochs=4).add("2", 0, corrected=1, epochs=5)
                       .add("none", 0, full_misses=1, epochs=6))
    report = collect(run.dir)
    methods = pd.read_csv(report / "methods.csv", dtype={"fold": str})
    assert list(zip(methods.fold, methods.seed, methods.method)) == [
        ("1", 0, "xgboost"), ("1", 0, "msp"), ("1", 1, "xgboost"), ("1", 1, "msp"),
        ("2", 0, "xgboost"), ("2", 0, "msp")]
    assert methods.gain_excluded.tolist() == [0.5, 1.0, 0.75, 1.0, 0.25, 1.0]
    assert (methods.macro_harm == 0).all() and methods.balanced_accuracy_h[methods.method == "msp"].eq(1).all()
    text = (report / "report.md").read_text()
    by_method = section(text, "### Every fold: mean ± std over folds and seeds")
    assert "| xgboost | 0.500 ± 0.250 |" in by_method and "| msp | 1.000 ± 0.000 |" in by_method
    fold = lambda name: text.split(f"### Fold {name} (f: balanced accuracy")[1].split("\n#")[0]
    # over its two seeds; ≈: McNemar finds no difference from the best (msp) on 2 and 1 discordant images
    assert "| xgboost | 0.625 ± 0.177 ≈ |" in fold("1 Surprise")
    assert "| msp | 1.000 [1.00, 1.00] ≈ |" in fold("2 Fear")  # one seed: its bootstrap interval
    # msp's score is 1 on the excluded class only: a perfect ranking; xgboost's marks the images h moved
    assert methods.auroc[methods.method == "msp"].eq(1).all() and methods.fpr_at_95_tpr[1] == 0
    assert methods.auroc[0] == pytest.approx(0.5 * 0.5 + 0.5)  # 2 of 4 ranked above all 8 others, 2 tied with them
    assert methods.p_recovery_holm[5] == pytest.approx(2 * 0.5 ** 3)  # 3 images only msp recovers
    assert methods.ties_best_recovery.all() and (methods.gain_excluded_lo <= methods.gain_excluded).all()
    assert "![Gain against Harm](methods_gain_harm.png)" in text and (report / "methods_gain_harm.png").stat().st_size


def test_cost_of_correcting_against_retraining(run_builder):
    run = with_methods(run_builder([1, 2, "none"], [0]).add("1", 0, corrected=2, epochs=4)
                       .add("2", 0, corrected=1, epochs=5).add("none", 0, full_misses=1, epochs=6))
    report = collect(run.dir)
    cost = pd.read_csv(report / "cost.csv", dtype={"fold": str}).set_index("fold")
    # train seconds = epochs (conftest's record); search 1.5 s and refit 0.5 s everywhere
    assert cost.correct_over_train.tolist() == pytest.approx([2 / 4, 2 / 5, 2 / 6])
    assert cost.loc["1", "tpr_h_excluded"] == 0.5 and cost.loc["1", "full_tpr_excluded"] == 0.75
    assert cost.loc["2", "full_tpr_excluded"] == 1.0 and math.isnan(cost.loc["none", "tpr_h_excluded"])
    text = (report / "report.md").read_text()
    assert "## Cost of correcting against retraining" in text and "| 1 Surprise | 0 | xgboost | 4.000 |" in text


def test_one_method_has_no_methods_section(run):
    report = collect(run.dir)
    assert "## Correctors and detectors" not in (report / "report.md").read_text()
    assert not (report / "methods_gain_harm.png").exists()


@pytest.mark.parametrize("case", ["full model only", "folds and seeds", "several methods"])
def test_outputs_names_every_file_collect_writes_and_report_md_links(request, case):
    if case == "full model only":
        run = request.getfixturevalue("run_builder")(["none"], [0]).add("none", 0)
    else:
        run = request.getfixturevalue("run")
        if case == "several methods":
            with_methods(run)
    report = collect(run.dir)
    listed = [name for name, _ in outputs(build(run.dir))]
    assert len(set(listed)) == len(listed) and sorted(listed) == sorted(p.name for p in report.iterdir())
    links = re.findall(r"\]\(([^)]+)\)", (report / "report.md").read_text())
    assert set(links) == {name for name in listed if name.endswith(".png")}
