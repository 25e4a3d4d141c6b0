"""One fold end to end, without Ray: data -> base net -> features -> corrector -> metrics.

Each stage's output is keyed by what determines it, so a rerun (or a sweep that retunes only the
corrector) reuses the trained model and the features instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from correctsweep import corrector, metrics
from correctsweep.atomic import write_json
from correctsweep.config import Spec, digest
from correctsweep.data import class_indices, dataset_key, load_dataset, make_splits
from correctsweep.errors import SpecError
from correctsweep.features import extract, file_meta, read_split, write_split
from correctsweep.layout import RunLayout
from correctsweep.policy import policies_for
from correctsweep.train import load_model, pick_device, save_model, train_base_net


def net_key(spec: Spec, fold: str, seed: int) -> str:
    # The dataset's key too: a regenerated synthetic set or changed files must not reuse a stale net.
    data = dataclasses.asdict(spec.data) | {"cache_dir": None, "dataset": dataset_key(spec.data)}
    net = dataclasses.asdict(spec.base_net) | {"device": None, "threads": None}
    return digest({"data": data, "net": net, "fold": fold, "seed": seed})


def normalise_fold(text: str) -> str:
    """'none' or a class label as the run directory spells it: '03' is '3'."""
    text = str(text).strip()
    if text == "none":
        return text
    if not text.isdigit():
        raise SpecError(f"--fold {text!r} must be one excluded class label (e.g. 3) or 'none'; "
                        "`correctsweep sweep` runs every fold")
    return str(int(text))


def _publish(path: Path, out: dict, spec: Spec) -> None:
    """Make `out` the fold's current result, the one collect reads. When the sweep searches base-net
    settings, several trials share a fold and seed: the one with the best cross-validated corrector
    objective (never a test figure) wins among those of the same sweep settings."""
    out["sweep_key"] = digest(spec.to_dict() | {"base_net": None})
    if spec.search and path.is_file():
        old = json.loads(path.read_text())
        if old.get("sweep_key") == out["sweep_key"] and old["corrector"]["cv_score"] >= out["corrector"]["cv_score"]:
            return
    write_json(path, out)


class StageClock:
    """Wall seconds per pipeline stage, so a result says where its time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def run_trial(spec: Spec, fold: str, seed: int, log: Callable[[str], None] = print,
              report: Callable[[dict], None] | None = None) -> dict:
    """One excluded class (or 'none', the full model) and seed end to end; publishes and returns the
    result. Each stage reuses its cached output when the key that determines it is unchanged:
    the base net (net_key: data, split, base_net settings, fold, seed), the features (the net's key
    and weights) and the corrector search (the net's key and the corrector settings)."""
    layout, fold, clock = RunLayout.of(spec), normalise_fold(fold), StageClock()
    threads = spec.base_net.threads or max(1, int(spec.resources.cpus_per_trial))
    torch.set_num_threads(threads)
    with clock("data"):
        ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
        classes = ds.classes
        if fold != "none" and int(fold) not in classes:
            raise SpecError(f"--fold {fold} is not a class of this dataset (classes: {classes}, or 'none')")
        excluded = None if fold == "none" else int(fold)
        splits = make_splits(ds, spec.data)
    layout.pull(layout.fold_parts(fold, seed))
    key = net_key(spec, fold, seed)
    model_dir = layout.model_dir(fold, seed, key)
    with clock("train"):
        model, meta = _base_net(spec, ds, splits, excluded, seed, model_dir, log, report)
    device = pick_device(spec.base_net.device)
    with clock("extract"):
        sets = _features(spec, layout, ds, splits, model, meta, excluded, key, seed, device, log)
    if report:
        report({"stage": "features", "rows_correct": len(sets["correct"].labels), "rows_test": len(sets["test"].labels)})
    if excluded is not None:
        assert not (sets["test"].pred_f == excluded).any(), "f predicted its excluded class"
    del model
    if device.type == "cuda":  # the corrector's GPU matrices should not queue behind the net's cache
        torch.cuda.empty_cache()
    with clock("corrector"):
        result, workdir = _correct(spec, layout, sets, excluded, key, fold, seed, threads, log, report)
    with clock("write"):
        test = sets["test"]
        table = metrics.per_class(test.labels, test.pred_f, result.pred_h, classes)
        out = {"fold": fold, "seed": seed, "excluded": excluded, "classes": classes, "net_key": key,
               "train": meta.get("train"), "summary": metrics.summary(test.labels, test.pred_f, result.pred_h, classes),
               "device": {"base_net": device.type, "corrector": result.params["device"], "threads": threads},
               "corrector": _corrector_record(result),
               "per_class": table.reset_index().to_dict(orient="records"),
               "paths": {"model": layout.relative(model_dir), "corrector": layout.relative(workdir)}}
    out["stage_seconds"] = clock.seconds  # this run's stages; a reused stage shows its (short) reuse
    _publish(layout.result_file(fold, seed), out, spec)
    layout.push(layout.fold_parts(fold, seed))
    log(table.to_string(float_format=lambda x: metrics.format_value(x)))
    log("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in clock.seconds.items()))
    if excluded is not None:
        log(f"fold {fold}: Gain of excluded class {excluded} = {metrics.format_value(table.loc[excluded, 'gain'])}, "
            f"accuracy f {out['summary']['accuracy_f']:.3f} -> h {out['summary']['accuracy_h']:.3f}")
    return out


def _correct(spec: Spec, layout: RunLayout, sets: dict, excluded, key: str, fold: str, seed: int, threads: int,
             log, report) -> tuple[corrector.CorrectorResult, Path]:
    """The corrector search on the fold's features, resumed or reused from its journal (keyed by the
    net's key and every corrector setting, the policies the fold may use included)."""
    cfg = dataclasses.replace(spec.corrector, policies=policies_for(spec.corrector.policies, excluded))
    workdir = layout.corrector_dir(fold, seed, key, digest(dataclasses.asdict(cfg)))
    log(f"fold {fold} seed {seed}: corrector search ({cfg.n_trials} trials) in {workdir}")
    result = corrector.search(sets["correct"], sets["test"], cfg, workdir, threads,
                              on_trial=lambda t: report and report({"stage": "corrector"} | t))
    return result, workdir


def _corrector_record(result: corrector.CorrectorResult) -> dict:
    """What a result JSON says of the chosen corrector (its probabilities and predictions stay in
    the corrector's own folder)."""
    return {"policy": result.policy, "tau": result.tau, "taps": result.taps, "pca_dims": result.pca_dims,
            "params": result.params, "n_rounds": result.n_rounds, "cv_score": result.cv_score,
            "search_seconds": result.search_seconds, "seconds_per_candidate": result.seconds_per_candidate,
            "n_candidates": result.n_candidates}


def _base_net(spec: Spec, ds, splits, excluded, seed, model_dir: Path, log, report):
    """The fold's trained net: reused from `model_dir` (keyed by net_key) or trained and saved there."""
    if (model_dir / "model.json").is_file():
        log(f"fold {excluded or 'none'} seed {seed}: reusing trained base net {model_dir}")
        return load_model(model_dir)
    classes = ds.classes
    targets = class_indices(ds.labels, classes, "the dataset")
    excluded_index = None if excluded is None else classes.index(excluded)
    keep = lambda idx: idx if excluded_index is None else idx[targets[idx] != excluded_index]
    log(f"fold {excluded or 'none'} seed {seed}: training base net on {len(keep(splits['train']))} images")
    on_epoch = lambda r: (log(f"  epoch {r['epoch']}: loss {r['train_loss']:.3f} val acc {r['val_accuracy']:.3f}"),
                          report and report({"stage": "train"} | r))
    model, res = train_base_net(ds.images, targets, keep(splits["train"]), keep(splits["val"]), len(classes),
                                excluded_index, spec.base_net, seed, on_epoch=on_epoch)
    meta = save_model(model, model_dir, {"classes": classes, "excluded": excluded, "train": dataclasses.asdict(res)})
    return model, meta


def _features(spec: Spec, layout: RunLayout, ds, splits, model, meta, excluded, key: str, seed: int, device,
              log) -> dict:
    """`correct` and `test` features of the fold's net, extracted once per net (keyed by its net_key)."""
    fold = "none" if excluded is None else str(excluded)
    fmeta = file_meta(ds.classes, excluded, spec.to_dict(), meta["weights_sha256"], key)
    sets = {}
    for split in ("correct", "test"):
        path = layout.features_file(fold, seed, split, key)
        if not path.is_file():
            idx = splits[split]
            pred, taps = extract(model, ds.images[torch.from_numpy(idx)], spec.features.taps, spec.features.full,
                                 spec.features.batch_size, device)
            write_split(path, ds.ids[idx], ds.labels[idx], np.asarray(ds.classes)[pred], taps, fmeta)
            log(f"fold {fold} seed {seed}: wrote {path}")
        sets[split] = read_split(path)
    return sets
