"""Correctors and baselines side by side through the real entry point: a smoke run with three kinds and
every baseline ends with the methods table, the Gain-Harm plot and the cost table in its report; a
single other kind publishes as the fold's corrector, and best copies its model."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from correctsweep.cli import main
from correctsweep.corrector_store import predict_proba
from correctsweep.features import read_split

KINDS, BASELINES = ["xgboost", "fisher", "logistic"], ["msp", "energy", "mahalanobis", "knn"]


@pytest.mark.slow
def test_smoke_run_compares_kinds_and_baselines(tmp_path):
    both = ["--set", f"storage={tmp_path}", "--set", f"corrector.kinds=[{', '.join(KINDS)}]",
            "--set", f"detectors.names=[{', '.join(BASELINES)}]"]
    for fold in ("3", "none"):
        assert main(["trial", "sweeps/smoke.yaml", "--fold", fold, *both]) == 0
    run = tmp_path / "smoke"
    three = json.loads((run / "results" / "fold=3" / "seed=0.json").read_text())
    assert list(three["methods"]) == KINDS + BASELINES and three["corrector"]["kind"] == "xgboost"
    assert three["corrector"]["refit_seconds"] > 0 and three["train"]["seconds"] > 0
    none = json.loads((run / "results" / "fold=none" / "seed=0.json").read_text())
    assert list(none["methods"]) == KINDS  # the detectors need an excluded class

    assert main(["collect", str(run)]) == 0
    text = (run / "report" / "report.md").read_text()
    assert "## Correctors and baselines" in text and "### Fold 3 Disgust" in text
    table = text.split("### Fold 3 Disgust")[1].split("\n#")[0]
    assert all(f"| {m} |" in table for m in KINDS + BASELINES)
    assert "## Cost of correcting against retraining" in text
    assert (run / "report" / "methods_gain_harm.png").stat().st_size > 1000
    methods = pd.read_csv(run / "report" / "methods.csv")
    assert methods.method.tolist() == KINDS + BASELINES and methods.gain_excluded.between(0, 1).all()

    # one other kind alone: it is the fold's corrector (its search was already run above: reused)
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", f"storage={tmp_path}",
                 "--set", "corrector.kind=fisher"]) == 0
    fisher = json.loads((run / "results" / "fold=3" / "seed=0.json").read_text())
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
