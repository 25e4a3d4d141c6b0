"""data.source features: a run from a table of f's outputs (here a scikit-learn model's on a table the test makes,
string labels) with no image or net: trials, report, best, `predict` on the table's rows reproducing h, export
of g alone; and every bad table is one line."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from correctsweep import load_corrected
from correctsweep.cli import main
from correctsweep.features import FeatureSet
from correctsweep.from_features import outputs
from correctsweep.kinds.base import stack_taps
from correctsweep.results import TrialResult

NAMES = ["bolt", "nut", "screw", "washer"]  # string labels: classes 0..3 in this order


def write_table(root: Path, folds=("0", "1", "2", "3", "none"), rows_per_class=40, seed=0) -> Path:
    """f = logistic regression on 4-d points, trained once per fold without its class; per fold the other half
    of the points with label, logits, a list tap `emb`, plain columns x0..x3 and sample ids."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 2 * rows_per_class)
    X = rng.normal(0, 1.0, (len(y), 4)) + 2.0 * np.eye(4)[y]
    train = rng.permutation(len(y))[: len(y) // 2]
    rest = np.setdiff1d(np.arange(len(y)), train)
    for fold in folds:
        keep = train if fold == "none" else train[y[train] != int(fold)]
        f = LogisticRegression(max_iter=300).fit(X[keep], y[keep])
        logits = np.full((len(rest), 4), np.nan)
        logits[:, f.classes_] = f.decision_function(X[rest])
        table = pd.DataFrame({"sample_id": [f"s{i}" for i in rest], "label": np.asarray(NAMES)[y[rest]],
                              "logits": list(logits), "emb": list(X[rest][:, :2] @ np.array([[1.0, 0.5], [0.5, 1]]))})
        table[[f"x{i}" for i in range(4)]] = X[rest]
        (root / f"fold={fold}").mkdir(parents=True, exist_ok=True)
        table.to_parquet(root / f"fold={fold}" / "part-0.parquet")
    return root


def spec_file(tmp_path, table, **more) -> Path:
    spec = {"name": "parts", "storage": str(tmp_path / "out"), "data": {"source": "features", "path": str(table)},
            "folds": ["screw", "none"],
            "corrector": {"kinds": ["xgboost", "logistic"], "n_candidates": 2, "cv_splits": 2, "threads": 1,
                          "xgboost": {"max_rounds": 20}},
            "detectors": {"names": ["msp", "knn"]}, "report": {"bootstrap": 200}} | more
    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_features_table_is_corrected_reported_predicted_and_exported(tmp_path):
    table = write_table(tmp_path / "table")
    spec = spec_file(tmp_path, table)
    for fold in ("screw", "none"):
        assert main(["trial", str(spec), "--fold", fold]) == 0
    run = tmp_path / "out" / "parts"
    assert main(["collect", str(run)]) == 0 and main(["best", str(run)]) == 0
    folds = pd.read_csv(run / "report" / "folds.csv", dtype={"fold": str})
    assert list(folds.fold) == ["2", "none"] and list(folds.excluded_name.fillna("")) == ["screw", ""]
    result = TrialResult.read(run / "results" / "fold=2" / "seed=0.json")
    assert result.net == "features" and result.class_names == NAMES and result.paths.model == ""
    assert set(result.methods) == {"xgboost", "logistic", "msp", "knn"}
    assert not (run / "models").exists() and not list((run / "best").rglob("weights.pt"))

    # predict on the fold's rows (label and sample ids given) reproduces the trial's h on its test rows
    assert main(["predict", str(run), "--fold", "screw", str(table / "fold=2"), "--out", str(tmp_path / "h.csv")]) == 0
    h = pd.read_csv(tmp_path / "h.csv")
    published = pd.read_parquet(run / result.paths.predictions["test"])
    both = published.merge(h, left_on="sample_id", right_on="id")
    assert len(both) == len(published) and (both.label_x == both.label_y).all()
    assert (both[f"h_{result.corrector.kind}"] == both.pred_h).all()
    # the same from Python, on rows without labels or ids
    clf = load_corrected(run, fold="screw")
    given = pd.read_parquet(table / "fold=2")
    rows = given.drop(columns=["label", "sample_id"])
    assert (clf.predict(rows) == h.set_index("id").pred_h.loc[given.sample_id].to_numpy()).all()

    # export writes g alone, whose probabilities on the rows' stacked taps are the classifier's
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    assert main(["export", str(run), "--fold", "screw", "--onnx", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["g.onnx", "manifest.json"]
    pred_f, taps = outputs(clf.as_batch(rows), clf.classes, clf.names, 2, "rows")
    X, _ = stack_taps(FeatureSet(given.sample_id.to_numpy(), pred_f, pred_f, taps, {}), clf.selection.record.taps)
    g = ort.InferenceSession(str(tmp_path / "onnx" / "g.onnx"), providers=["CPUExecutionProvider"])
    proba = g.run(["probabilities"], {"features": X})[0]
    assert np.abs(proba - clf.predict_proba(rows)).max() < 1e-4


def frame(root, fold="2", **columns):
    (root / f"fold={fold}").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(root / f"fold={fold}" / "part-0.parquet")


def dropped(column):
    def write(root):
        write_table(root)
        for path in root.glob("fold=*/part-0.parquet"):
            pd.read_parquet(path).drop(columns=column).to_parquet(path)
    return write


LABELS = list(np.repeat(NAMES, 10))
LOGITS = [np.arange(4.0)] * 40  # f says washer everywhere

# how the table is wrong, the spec's other settings -> what the one line says
BAD = [
    (dropped("label"), {}, "lacks column label"),
    (dropped("logits"), {}, "has neither pred_f nor logits"),
    (lambda root: frame(root, label=LABELS, logits=[np.arange(3.0)] * 40), {},
     "logits hold 3 numbers per row, but there are 4 classes"),
    (lambda root: frame(root, label=LABELS, pred_f=["screw"] * 40, x=np.ones(40)), {},
     "f predicts its excluded class screw in 40 row"),
    (lambda root: frame(root, label=LABELS, pred_f=["rivet"] * 40, x=np.ones(40)), {},
     "pred_f 'rivet' is none of the classes"),
    (lambda root: frame(root, label=LABELS, pred_f=LABELS), {}, "has no feature column and no logits"),
    (lambda root: frame(root, fold="none", label=LABELS, logits=LOGITS), {},
     "has no partition fold=2 \\(it has none\\)"),
    (lambda root: (root.mkdir(), pd.DataFrame({"label": LABELS, "logits": LOGITS}).to_parquet(root / "t.parquet")),
     {}, "not partitioned by fold, so it holds one model's outputs: fold none alone"),
    (lambda root: frame(root, label=LABELS, logits=LOGITS, note=["x"] * 40), {},
     "column note \\((large_)?string\\) is neither a feature"),
    (lambda root: frame(root, label=LABELS, logits=LOGITS, split=["train"] * 40), {},
     "split value\\(s\\) \\['train'\\] are not correct or test"),
    (lambda root: frame(root, label=LABELS, logits=LOGITS, emb=[[1.0]] * 39 + [[1.0, 2.0]]), {},
     "column emb must hold lists of numbers of one length"),
    (lambda root: frame(root, label=LABELS, logits=LOGITS), {"features": {"taps": ["emb"]}},
     "features.taps: 'emb' is no tap of .* its taps: logits, softmax"),
    (lambda root: frame(root, label=LABELS, logits=LOGITS), {"detectors": {"names": ["she"]}},
     "she needs f's final layer"),
]


@pytest.mark.parametrize("write, more, line", BAD)
def test_a_bad_features_table_is_one_line(write, more, line, tmp_path, capsys):
    write(tmp_path / "table")
    spec = spec_file(tmp_path, tmp_path / "table", folds=["screw"], **({"detectors": {"names": []}} | more))
    assert main(["trial", str(spec), "--fold", "screw"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(line, err), err
    assert not (tmp_path / "out" / "parts").exists()
