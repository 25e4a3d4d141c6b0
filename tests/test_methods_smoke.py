"""Correctors and detectors side by side through the real entry points: the tiny run (conftest: a sweep
with every corrector kind and a few detectors) ends with the methods table, the Gain-Harm plot and the
cost table in its report; a single other kind publishes as the fold's corrector, and best copies its model."""
import json

import numpy as np
import pandas as pd
import yaml
from conftest import DETECTORS, KINDS, sets

from correctsweep.cli import main
from correctsweep.corrector_store import predict_proba
from correctsweep.features import read_split


def result(run, fold):
    return json.loads((run / "results" / f"fold={fold}" / "seed=0.json").read_text())


def test_run_compares_kinds_and_detectors(tiny_run):
    run = tiny_run
    three = result(run, 3)
    assert list(three["methods"]) == KINDS + DETECTORS and three["corrector"]["kind"] == "xgboost"
    assert three["corrector"]["refit_seconds"] > 0 and three["train"]["seconds"] > 0
    assert list(result(run, "none")["methods"]) == KINDS  # the detectors need an excluded class

    text = (run / "report" / "report.md").read_text()
    assert "## Correctors and detectors" in text and "### Fold 3 Disgust" in text
    table = text.split("### Fold 3 Disgust")[1].split("\n#")[0]
    assert all(f"| {m} |" in table for m in KINDS + DETECTORS)
    assert "## Cost of correcting against retraining" in text
    assert (run / "report" / "methods_gain_harm.png").stat().st_size > 1000
    methods = pd.read_csv(run / "report" / "methods.csv")
    assert methods.method.tolist() == KINDS + DETECTORS and methods.gain_excluded.between(0, 1).all()


def test_another_kind_alone_is_the_folds_corrector_and_best_copies_it(tiny_copy, tiny_spec):
    run = tiny_copy
    three = result(run, 3)
    # one other kind alone (`corrector.kind: fisher`, no kinds list): its search, run by the sweep, is reused
    assert main(["trial", str(tiny_spec), "--fold", "3", *sets(f"storage={run.parent}", "corrector.kinds=[]",
                                                                 "corrector.kind=fisher")]) == 0
    fisher = result(run, 3)
    assert fisher["corrector"]["kind"] == "fisher" and fisher["corrector"]["cv_score"] == \
        three["methods"]["fisher"]["cv_score"]
    assert main(["best", str(run)]) == 0
    config = yaml.safe_load((run / "best" / "best_config.yaml").read_text())
    chosen = config["folds"][0]
    assert chosen["corrector"]["kind"] == "fisher" and chosen["artifacts"]["corrector"].endswith("model.npz")
    corrector = run / "best" / chosen["artifacts"]["corrector"].rsplit("/", 1)[0]
    test = read_split(next((run / "features" / "fold=3" / "seed=0" / "split=test").glob("*.parquet")))
    stored = pd.read_parquet(run / fisher["paths"]["corrector"] / "predictions.parquet")
    assert np.allclose(predict_proba(corrector, test), stored.filter(like="p_").to_numpy(), atol=1e-5)
