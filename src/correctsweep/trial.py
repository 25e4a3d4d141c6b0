"""One fold end to end, without Ray: data -> base net -> features -> corrector -> metrics.

Each stage's output is keyed by what determines it, so a rerun (or a sweep that retunes only the
corrector) reuses the trained model and the features instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from correctsweep import certify, checkpoints, corrector, detectors, metrics, nets, predictions
from correctsweep.atomic import remove_partials, write_json
from correctsweep.config import Spec
from correctsweep.data import Dataset, class_indices, load_dataset, make_splits, resolve_fold
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet, extract, file_meta, read_split, write_split
from correctsweep.keys import corrector_key, features_key, net_key, sweep_key
from correctsweep.layout import RunLayout
from correctsweep.policy import Labels, policies_for, targets
from correctsweep.results import CorrectorRecord, MethodRecord, ResultPaths, TrialResult
from correctsweep.train import TrainSet, load_model, pick_device, save_model, train_base_net


def trial_threads(spec: Spec) -> int:
    """The threads a trial runs on: base_net.threads, else the CPUs Ray gives it."""
    return spec.base_net.threads or max(1, int(spec.resources.cpus_per_trial))


def core_warning(spec: Spec) -> str | None:
    """A line when the corrector's workers want more cores than this machine has (they run anyway)."""
    return corrector.core_warning(spec.corrector, trial_threads(spec))


@dataclass
class NetPlan:
    """What the trial will ask of its net, checked on a probe of it before anything is written."""

    taps: list[str]
    """features.taps, or the net's defaults."""
    detectors_tap: str
    """detectors.tap, or the layer before the net's classifier."""
    feature_tap: str
    """The layer before the net's classifier: what the detectors on f's final layer read."""
    name: str
    """The net as the report names it: paper, a torchvision model or a user's module."""
    has_net: bool = True
    """False: f's outputs come as a features table (data.source features), with no net to train or publish."""


def plan_net(spec: Spec, ds: Dataset) -> NetPlan:
    """The net's taps and the detectors' inputs, checked on the net built once on the CPU: an unknown tap
    or a net whose output is not [B, K] is a SpecError in one line, before any trial writes anything."""
    probe = nets.probe(spec.base_net, len(ds.classes), ds.images.shape[1], ds.images.shape[-1])
    taps = list(spec.features.taps or probe.net.default_taps())
    probe.check_taps(taps)
    feature = probe.net.feature_tap()
    plan = NetPlan(taps, spec.detectors.tap or feature, feature, spec.base_net.arch)
    probe.check_taps([plan.detectors_tap], "detectors.tap")
    detectors.validate(spec.detectors.names, plan.detectors_tap, taps, probe.net.final_layer() is not None, feature)
    return plan


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


@dataclass
class FoldRun:
    """One fold x seed as every stage of the trial sees it."""

    spec: Spec
    layout: RunLayout
    ds: Dataset
    splits: dict[str, np.ndarray]
    """split name -> row indices into ds (data.make_splits)."""
    plan: NetPlan
    fold: str
    """The excluded class's label as the run directory spells it, or 'none'."""
    seed: int
    net_key: str
    threads: int
    clock: StageClock
    log: Callable[[str], None]
    progress: Callable[[dict], None] | None
    """Receives each epoch, stage and candidate as a mapping (a sweep reports them to Tune)."""
    device: torch.device
    """Where f trains and extracts."""
    checkpoint: checkpoints.Checkpoint | None = None
    """f's trained weights (base_net.weights), checked when planned; None: f is trained here."""

    @property
    def excluded(self) -> int | None:
        return None if self.fold == "none" else int(self.fold)

    def say(self, text: str) -> None:
        self.log(f"fold {self.fold} seed {self.seed}: {text}")

    def tell(self, stage: str, values: dict) -> None:
        if self.progress:
            self.progress({"stage": stage} | values)


@dataclass
class FoldFeatures:
    """The fold's features of the splits the corrector is fitted (`correct`) and scored (`test`) on."""

    correct: FeatureSet
    test: FeatureSet
    key: str
    """The features key (keys.features_key): the net and the taps they hold."""


def run_trial(spec: Spec, fold: str, seed: int, log: Callable[[str], None] = print,
              progress: Callable[[dict], None] | None = None) -> TrialResult:
    """One excluded class (a label or a class name, or 'none', the full model) and seed end to end;
    publishes and returns the result. Each stage reuses its cached output when the key that determines
    it is unchanged (see `keys`) and recomputes an output that does not read back whole. Inputs are
    validated before anything is written, and one process at a time runs a fold, seed and net: it first
    removes what a killed writer left half-written there. (A features table's trial, which builds on this
    module's stages, is `from_features.run_table_trial`; `entry.run_trial` chooses.)"""
    layout, clock = RunLayout.of(spec), StageClock()
    layout.check_writable()
    pick_device(spec.base_net.device), pick_device(spec.corrector.device, "corrector.device")  # before any write
    threads = trial_threads(spec)
    torch.set_num_threads(threads)
    with clock("data"):
        ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
        fold = resolve_fold(fold, ds)
        splits = make_splits(ds, spec.data)
        plan = plan_net(spec, ds)
        checkpoint = checkpoints.plan(spec.base_net, fold, seed, ds.classes, ds.class_names)
    layout.pull(layout.fold_parts(fold, seed))
    key = net_key(spec, fold, seed, checkpoint and checkpoint.sha256)
    run = FoldRun(spec, layout, ds, splits, plan, fold, seed, key, threads, clock, log, progress,
                  pick_device(spec.base_net.device), checkpoint)
    with layout.lock(fold, seed, run.net_key):
        clear_partials(run)
        return _stages(run)


def clear_partials(run: FoldRun) -> None:
    """Remove what a killed writer left half-written in the fold x seed's folders (under its lock)."""
    for part in run.layout.fold_parts(run.fold, run.seed):
        if (run.layout.root / part).is_dir() and remove_partials(run.layout.root / part):
            run.say(f"removed files a killed run left half-written in {part}")


def _stages(run: FoldRun) -> TrialResult:
    """The trial's stages after the data: train, load or reuse the net, extract (or reuse) the features, then
    `correct_and_publish`."""
    excluded = run.excluded
    model_dir = run.layout.model_dir(run.fold, run.seed, run.net_key)
    with run.clock("train"):
        model, meta = _base_net(run, model_dir)
    final = model.final_layer()
    final_layer = detectors.FinalLayer(final[0].numpy(), final[1].numpy()) if final else None
    with run.clock("extract"):
        sets = _features(run, model, meta)
    run.tell("extract", {"rows_correct": len(sets.correct.labels), "rows_test": len(sets.test.labels)})
    if excluded is not None:
        assert not (sets.test.pred_f == excluded).any(), "f predicted its excluded class"
    del model
    if run.device.type == "cuda":  # the corrector's GPU matrices should not queue behind the net's cache
        torch.cuda.empty_cache()
    return correct_and_publish(run, sets, final_layer, meta)


def correct_and_publish(run: FoldRun, sets: FoldFeatures, final_layer: detectors.FinalLayer | None,
                        meta: dict) -> TrialResult:
    """The stages after f's features: search (or reuse) the correctors, run the detectors, score them on test
    and publish the result. A run from a features table (`from_features`) starts here."""
    spec, excluded = run.spec, run.excluded
    with run.clock("corrector"):
        found = _correct(run, sets)
    detections = []
    if spec.detectors.names and excluded is not None:  # they flag the excluded class, which fold none lacks
        with run.clock("detectors"):
            detections = detectors.detect(spec.detectors, run.plan.detectors_tap, sets.correct, sets.test,
                                          spec.corrector, final_layer, run.plan.feature_tap)
    with run.clock("write"):
        out = _result(run, sets, found, detections, meta)
    # several sampled nets of a `search` share a fold and seed: each writes its own result, collect picks
    write_json(run.layout.result_file(run.fold, run.seed, f"net-{run.net_key}" if spec.search else None),
               out.to_dict())
    # a net a scheduler once stopped has now finished (say, a sweep without it): its result stands
    run.layout.stopped_file(run.fold, run.seed, run.net_key).unlink(missing_ok=True)
    run.layout.push(run.layout.fold_parts(run.fold, run.seed))
    _log_result(run, out)
    return out


def _result(run: FoldRun, sets: FoldFeatures, found: dict, detections: list[detectors.Detection],
            meta: dict) -> TrialResult:
    """The fold x seed's result: the published kind's h scored on `test`, every method beside it, where its
    artifacts are, and this run's stage seconds (a reused stage shows its short reuse)."""
    ds, layout, classes, test = run.ds, run.layout, run.ds.classes, sets.test
    result, workdir = found[run.spec.corrector.kind]
    written = _write_predictions(run, sets, found, detections)
    table = metrics.per_class(test.labels, test.pred_f, result.pred_h, classes)
    return TrialResult(
        fold=run.fold, seed=run.seed, excluded=run.excluded, classes=classes,
        class_names=[ds.class_names[c] for c in classes], net=run.plan.name, net_key=run.net_key,
        features_key=sets.key, sweep_key=sweep_key(run.spec),
        summary=metrics.summary(test.labels, test.pred_f, result.pred_h, classes),
        per_class=table.reset_index().to_dict(orient="records"), corrector=_corrector_record(result),
        methods=_methods(found, detections, test, classes, run.excluded),
        paths=ResultPaths(model=layout.relative(layout.model_dir(run.fold, run.seed, run.net_key))
                          if run.plan.has_net else "",
                          corrector=layout.relative(workdir),
                          predictions={split: layout.relative(p) for split, p in written.items()},
                          correctors={kind: layout.relative(w) for kind, (_, w) in found.items()}),
        train=meta.get("train"),
        # the scikit-learn kinds name no device: they run on the CPU
        device={"base_net": run.device.type, "corrector": result.params.get("device", "cpu"), "threads": run.threads},
        stage_seconds=run.clock.seconds, frontier=_frontier(run, result, test))


def _frontier(run: FoldRun, result: corrector.CorrectorResult, test: FeatureSet) -> list[certify.FrontierPoint]:
    """The published corrector's Gain-Harm curve on `test` over the taus it could have had (its own included)."""
    target, conf = targets(result.proba, result.classes, result.policy, run.excluded)
    taus = np.append(certify.corrector_taus(run.spec.corrector), result.tau)
    return certify.frontier(target, conf, Labels(test.labels, test.pred_f, result.classes, run.excluded),
                            taus[np.isfinite(taus)])


def _log_result(run: FoldRun, out: TrialResult) -> None:
    """The per-class table, the stage seconds and the excluded class's Gain, as the trial's last lines."""
    table = pd.DataFrame(out.per_class).set_index("class")
    run.log(table.rename(index=run.ds.named).to_string(float_format=lambda x: metrics.format_value(x)))
    run.log("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in out.stage_seconds.items()))
    if run.excluded is not None:
        run.log(f"fold {run.fold}: Gain of excluded class {run.ds.named(run.excluded)} = "
                f"{metrics.format_value(table.loc[run.excluded, 'gain'])}, "
                f"accuracy f {out.summary['accuracy_f']:.3f} -> h {out.summary['accuracy_h']:.3f}")
    c = out.corrector.certificate
    if c is not None:
        run.log(f"fold {run.fold}: " + (f"tau {c.tau:.4g} certified: {c.harm_measure} Harm at most {c.max_harm} with "
                                        f"probability {c.confidence}" if c.corrects else
                                        f"no tau certified {c.harm_measure} Harm at most {c.max_harm}: h = f")
                + f"; on test pooled Harm {metrics.format_value(out.summary['pooled_harm'])}, "
                f"mean {metrics.format_value(out.summary['macro_harm'])}")


def _correct(run: FoldRun, sets: FoldFeatures) -> dict[str, tuple[corrector.CorrectorResult, Path]]:
    """One corrector search per kind (corrector.all_kinds) on the fold's features, each resumed or reused
    from its own journal (keyed by the features and every setting of its search, the policies the fold
    may use included); kind -> (result, workdir)."""
    # The kinds run here, one after another on the same features, rather than as a Tune grid over
    # corrector.kind: a grid would make one result per kind for each fold x seed, where a result file,
    # collect and best hold one. So every kind's test summary joins that one result (`methods`), and
    # corrector.kind's result stays the fold's `corrector`, so reports of a single kind are unchanged.
    found, spec = {}, run.spec
    for kind in spec.corrector.all_kinds:
        cfg = dataclasses.replace(spec.corrector, kind=kind, policies=policies_for(spec.corrector.policies,
                                                                                   run.excluded))
        workdir = run.layout.corrector_dir(run.fold, run.seed, run.net_key, corrector_key(cfg, sets.key))
        run.say(f"{kind} corrector search ({cfg.n_candidates} candidates) in {workdir}")
        on_candidate = lambda c, kind=kind: run.tell("corrector", {"kind": kind} | c)
        found[kind] = corrector.search(sets.correct, sets.test, cfg, workdir, run.threads,
                                       on_candidate=on_candidate), workdir
    return found


def _write_predictions(run: FoldRun, sets: FoldFeatures, found: dict,
                       detections: list[detectors.Detection]) -> dict[str, Path]:
    """Every method's h and novelty score per image of `correct` and `test` (see `predictions`); split -> file."""
    correct, test, excluded, spec = sets.correct, sets.test, run.excluded, run.spec
    at = None if excluded is None else [int(c) for c in test.meta["classes"]].index(excluded)
    kinds = {kind: r for kind, (r, _) in found.items()}
    splits = {"test": (test, {k: r.pred_h for k, r in kinds.items()} | {d.name: d.pred_h for d in detections},
                       ({k: r.proba[:, at] for k, r in kinds.items()} if at is not None else {})
                       | {d.name: d.score_test for d in detections}),
              "correct": (correct, {d.name: np.where(d.score_correct >= d.threshold, excluded, correct.pred_f)
                                    for d in detections}, {d.name: d.score_correct for d in detections})}
    out = {}
    for split, (fs, h, score) in splits.items():
        path = run.layout.predictions_file(run.fold, run.seed, split, run.net_key)
        predictions.write(path, fs.sample_ids, fs.labels, fs.pred_f, spec.corrector.all_kinds + spec.detectors.names,
                          h, score)
        if not spec.search:  # each sampled net of a search keeps its own file; otherwise this result replaces all
            predictions.remove_others(path)
        out[split] = path
    return out


def _corrector_record(result: corrector.CorrectorResult) -> CorrectorRecord:
    """What a result says of the chosen corrector: its search's record (its probabilities and predictions
    stay in the corrector's own folder)."""
    return result.record()


def _methods(found: dict, detections: list[detectors.Detection], test, classes, excluded) -> dict[str, MethodRecord]:
    """Every kind's and detector's h on `test`, scored alike: what collect's methods table compares."""
    scored = {kind: (r.pred_h, dict(family="corrector", policy=r.policy, tau=r.tau, cv_score=r.cv_score,
                                    seconds=r.search_seconds + r.refit_seconds, certificate=r.certificate))
              for kind, (r, _) in found.items()}
    scored |= {d.name: (d.pred_h, dict(family="detector", policy="new_class", tau=d.threshold,
                                       correct_score=d.correct_score, seconds=d.seconds, certificate=d.certificate))
               for d in detections}
    out = {}
    for name, (pred_h, record) in scored.items():
        gain = metrics.per_class(test.labels, test.pred_f, pred_h, classes)["gain"]
        out[name] = MethodRecord(**record, gain_excluded=float(gain[excluded]) if excluded is not None else math.nan,
                                 summary=metrics.summary(test.labels, test.pred_f, pred_h, classes))
    return out


def _base_net(run: FoldRun, model_dir: Path):
    """The fold's net: reused from `model_dir` (keyed by the net key), or loaded from its checkpoint or trained,
    and saved there."""
    if (model_dir / "model.json").is_file():
        try:
            loaded = load_model(model_dir)
            run.say(f"reusing trained base net {model_dir}")
            return loaded
        except CorrectsweepError as e:
            run.say(f"{e}: training it again")
            shutil.rmtree(model_dir)
    ds, excluded = run.ds, run.excluded
    excluded_index = None if excluded is None else ds.classes.index(excluded)
    if run.checkpoint is not None:
        run.say(f"base net from checkpoint {run.checkpoint.path}")
        model, record = run.checkpoint.load(run.spec.base_net, len(ds.classes), excluded_index), run.checkpoint.record
    else:
        model, record = _train(run, excluded_index)
    meta = save_model(model, model_dir, {"classes": ds.classes, "excluded": excluded,
                                         "channels": int(ds.images.shape[1]), "train": record}, run.spec.base_net)
    return model, meta


def _train(run: FoldRun, excluded_index: int | None):
    """f trained on the fold's train split (its excluded class left out); (net, training record)."""
    ds, splits = run.ds, run.splits
    targets = class_indices(ds.labels, ds.classes, "the dataset")
    keep = lambda idx: idx if excluded_index is None else idx[targets[idx] != excluded_index]
    data = TrainSet(ds.images, targets, keep(splits["train"]), keep(splits["val"]), len(ds.classes), excluded_index)
    run.say(f"training base net on {len(data.train_idx)} images")
    on_epoch = lambda r: (run.log(f"  epoch {r['epoch']}: loss {r['train_loss']:.3f} val acc {r['val_accuracy']:.3f}"),
                          run.tell("train", r))
    model, res = train_base_net(data, run.spec.base_net, run.seed, on_epoch=on_epoch)
    return model, dataclasses.asdict(res)


def _features(run: FoldRun, model, meta: dict) -> FoldFeatures:
    """`correct` and `test` features of the fold's net, extracted once per net and taps (see `write_features`)."""
    def extracted(idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        pred, values = extract(model, run.ds.images[torch.from_numpy(idx)], run.plan.taps, run.spec.features.full,
                               run.spec.features.batch_size, run.device)
        return np.asarray(run.ds.classes)[pred], values

    return write_features(run, meta["weights_sha256"], extracted)


def write_features(run: FoldRun, source: str, produce: Callable[[np.ndarray], tuple[np.ndarray, dict]]
                   ) -> FoldFeatures:
    """`correct` and `test` features, once per f and taps (the features key): a stored file is reused when it
    reads back whole and comes from `source` (the net's weights checksum, or a table's key); otherwise
    `produce(rows)` gives f's labels and taps of those rows (their indices into ds), written and read back."""
    ds, spec = run.ds, run.spec
    fkey = features_key(spec, run.net_key, run.plan.taps)
    fmeta = file_meta(ds.classes, ds.class_names, run.excluded, spec.to_dict(), source, run.net_key) | \
        {"features_key": fkey}
    sets = {}
    for split in ("correct", "test"):
        path, idx = run.layout.features_file(run.fold, run.seed, split, fkey), run.splits[split]
        sets[split] = _stored_features(path, len(idx), source, run.log)
        if sets[split] is None:
            pred_f, values = produce(idx)
            write_split(path, ds.ids[idx], ds.labels[idx], pred_f, values, fmeta)
            run.say(f"wrote {path}")
            sets[split] = read_split(path)
    return FoldFeatures(sets["correct"], sets["test"], fkey)


def _stored_features(path: Path, rows: int, weights_sha256: str, log):
    """The stored features file, read once, if it reads back whole and comes from the loaded net;
    else None (and a broken file is removed, to be extracted again)."""
    if not path.is_file():
        return None
    try:
        fs = read_split(path)
    except (OSError, ValueError, KeyError) as e:  # pyarrow's ArrowInvalid is a ValueError
        log(f"features file {path} is unreadable ({str(e)[:80]}): extracting again")
        fs = None
    if fs is not None and (len(fs.labels) != rows or fs.meta.get("weights_sha256") != weights_sha256):
        log(f"features file {path} does not match the split or the net: extracting again")
        fs = None
    if fs is None:
        path.unlink()
    return fs
