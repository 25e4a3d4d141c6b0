"""One fold end to end, without Ray: data -> base net -> features -> corrector -> metrics.

Each stage's output is keyed by what determines it, so a rerun (or a sweep that retunes only the
corrector) reuses the trained model and the features instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from correctsweep import corrector, metrics
from correctsweep.atomic import write_json
from correctsweep.config import Spec, digest
from correctsweep.data import dataset_key, load_dataset, make_splits
from correctsweep.errors import SpecError
from correctsweep.features import extract, file_meta, read_split, split_path, write_split
from correctsweep.train import load_model, pick_device, save_model, train_base_net


def net_key(spec: Spec, fold: str, seed: int) -> str:
    # The dataset's key too: a regenerated synthetic set or changed files must not reuse a stale net.
    data = dataclasses.asdict(spec.data) | {"cache_dir": None, "dataset": dataset_key(spec.data)}
    net = dataclasses.asdict(spec.base_net) | {"device": None, "threads": None}
    return digest({"data": data, "net": net, "fold": fold, "seed": seed})


def result_path(run_dir: Path, fold: str, seed: int) -> Path:
    return Path(run_dir) / "results" / f"fold={fold}" / f"seed={seed}.json"


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


def run_trial(spec: Spec, fold: str, seed: int, log: Callable[[str], None] = print,
              report: Callable[[dict], None] | None = None) -> dict:
    run_dir = Path(spec.run_dir)
    threads = spec.base_net.threads or max(1, int(spec.resources.cpus_per_trial))
    torch.set_num_threads(threads)
    ds = load_dataset(spec.data, cache_dir=Path(spec.storage) / ".cache")
    classes = ds.classes
    fold = str(fold)
    if fold != "none" and int(fold) not in classes:
        raise SpecError(f"--fold {fold} is not a class of this dataset (classes: {classes}, or 'none')")
    excluded = None if fold == "none" else int(fold)
    splits = make_splits(ds, spec.data)
    targets = np.searchsorted(classes, ds.labels)
    excluded_index = None if excluded is None else classes.index(excluded)

    key = net_key(spec, fold, seed)
    model_dir = run_dir / "models" / f"fold={fold}" / f"seed={seed}" / f"net-{key}"
    if (model_dir / "model.json").is_file():
        model, meta = load_model(model_dir)
        log(f"fold {fold} seed {seed}: reusing trained base net {model_dir}")
    else:
        keep = lambda idx: idx[targets[idx] != excluded_index] if excluded_index is not None else idx
        log(f"fold {fold} seed {seed}: training base net on {len(keep(splits['train']))} images")
        model, res = train_base_net(ds.images, targets, keep(splits["train"]), keep(splits["val"]), len(classes),
                                    excluded_index, spec.base_net, seed,
                                    on_epoch=lambda r: (log(f"  epoch {r['epoch']}: loss {r['train_loss']:.3f} "
                                                            f"val acc {r['val_accuracy']:.3f}"),
                                                        report and report({"stage": "train"} | r)))
        meta = save_model(model, model_dir, {"classes": classes, "excluded": excluded,
                                             "train": dataclasses.asdict(res)})

    device = pick_device(spec.base_net.device)
    fmeta = file_meta(classes, excluded, spec.to_dict(), meta["weights_sha256"], key)
    sets = {}
    for split in ("correct", "test"):
        path = split_path(run_dir, fold, seed, split, key)
        if not path.is_file():
            idx = splits[split]
            pred, taps = extract(model, ds.images[torch.from_numpy(idx)], spec.features.taps, spec.features.full,
                                 spec.features.batch_size, device)
            write_split(path, ds.ids[idx], ds.labels[idx], np.asarray(classes)[pred], taps, fmeta)
            log(f"fold {fold} seed {seed}: wrote {path}")
        sets[split] = read_split(path)
    if report:
        report({"stage": "features", "rows_correct": len(sets["correct"].labels), "rows_test": len(sets["test"].labels)})
    if excluded is not None:
        assert not (sets["test"].pred_f == excluded).any(), "f predicted its excluded class"

    cfg = spec.corrector
    if excluded is None:
        cfg = dataclasses.replace(cfg, policies=[p for p in cfg.policies if p != "new_class"] or ["override"])
    workdir = run_dir / "correctors" / f"fold={fold}" / f"seed={seed}" / f"net-{key}-corr-{digest(dataclasses.asdict(cfg))}"
    log(f"fold {fold} seed {seed}: corrector search ({cfg.n_trials} trials) in {workdir}")
    result = corrector.search(sets["correct"], sets["test"], cfg, workdir, threads,
                              on_trial=lambda t: report and report({"stage": "corrector"} | t))
    test = sets["test"]
    table = metrics.per_class(test.labels, test.pred_f, result.pred_h, classes)
    summary = metrics.summary(test.labels, test.pred_f, result.pred_h, classes)
    out = {"fold": fold, "seed": seed, "excluded": excluded, "classes": classes, "net_key": key,
           "train": meta.get("train"), "summary": summary,
           "corrector": {"policy": result.policy, "tau": result.tau, "taps": result.taps, "params": result.params,
                         "n_rounds": result.n_rounds, "cv_score": result.cv_score,
                         "search_seconds": result.search_seconds,
                         "seconds_per_candidate": result.seconds_per_candidate},
           "per_class": table.reset_index().to_dict(orient="records"),
           "paths": {"model": str(model_dir.relative_to(run_dir)), "corrector": str(workdir.relative_to(run_dir))}}
    _publish(result_path(run_dir, fold, seed), out, spec)
    log(table.to_string(float_format=lambda x: metrics.format_value(x)))
    if excluded is not None:
        log(f"fold {fold}: Gain of excluded class {excluded} = {metrics.format_value(table.loc[excluded, 'gain'])}, "
            f"accuracy f {summary['accuracy_f']:.3f} -> h {summary['accuracy_h']:.3f}")
    return out
