"""Experiment tracking for a sweep: Tune's MLflow and W&B loggers for the spec's `tracking`, and the check,
before anything is written, that the MLflow store answers."""

from __future__ import annotations

import importlib
import os

from correctsweep import reach
from correctsweep.config import Spec
from correctsweep.errors import SpecError

# tracking key -> (module, how to install it)
TRACKERS = {"mlflow": ("mlflow", "pip install -e '.[tracking]'"), "wandb": ("wandb", "pip install wandb")}


def tracking_callbacks(spec: Spec) -> list:
    """Tune's own MLflow and W&B loggers for the spec's `tracking`: each runs on the driver and keeps one
    run per trial, with the trial's config as params and every reported dict as metrics."""
    for key in spec.tracking:
        module, install = TRACKERS[key]
        try:
            importlib.import_module(module)
        except ImportError:
            raise SpecError(f"tracking.{key} needs the {module} package, which is not installed: {install}") from None
    callbacks = []
    if "mlflow" in spec.tracking:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=spec.tracking["mlflow"], experiment_name=spec.name,
                                              save_artifact=False))
    if "wandb" in spec.tracking:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=spec.tracking["wandb"]))
    return callbacks


TRACKING_TIMEOUT_S = 30.0  # importing mlflow alone takes ~5 s on 2 busy cores
MLFLOW_PROBE = "from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments(max_results=1)"


def check_tracking(spec: Spec) -> None:
    """A one-line error, before anything is written, when the MLflow tracking store does not answer.
    A file store (file://... or a plain path) is MLflow's own local format: MLflow 3 asks to opt in to
    it with MLFLOW_ALLOW_FILE_STORE, which naming one in the spec does."""
    uri = spec.tracking.get("mlflow")
    if uri is None:
        return
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    # the client retries an unreachable server for minutes; the probe asks once, with a timeout
    problem = reach.probe(MLFLOW_PROBE.format(uri=uri), TRACKING_TIMEOUT_S, env={
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    if problem:
        raise SpecError(f"tracking.mlflow {uri} does not answer ({problem}); start the server or fix the URI, "
                        "or track to a local file: tracking={mlflow: 'sqlite:///outputs/mlflow.db'}")


