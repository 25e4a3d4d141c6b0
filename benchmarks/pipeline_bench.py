"""Where a fold's time goes, each figure beside a naive baseline measured in the same run.

    python benchmarks/pipeline_bench.py [SPEC] [--fold 3] [--nets resnet18 ...] [--set key=value ...]

Runs one fold of SPEC (default: sweeps/default.yaml on a small budget: 2 epochs, 5 corrector
candidates, XGBoost only) through `run_trial` in a temporary run directory, then measures the naive
way of doing each stage on the same data, model and candidates:
  training    our loop (images resident on the device, batches gathered by index, bf16 autocast on a
              GPU) vs a torch DataLoader over float32 images at batch 64, fp32, one epoch each;
  extraction  `features.extract` vs a DataLoader loop at batch 64 in fp32 over the same images;
  Parquet     bytes per image of the pooled taps we write vs the full maps (features.full);
  corrector   the search's seconds per candidate vs the naive CV loop of benchmarks/corrector_bench.py
              (fresh DMatrix per split, every round, no early stopping) on the candidates it tried;
  whole fold  run_trial's wall time vs the naive rates above applied to the same work.
Then the fold's own stage seconds (data, train, extract, corrector, write), as a sweep records them,
and each net of --nets (torchvision names, default resnet18) beside the spec's net on the same images:
our trainer's images/s over one epoch and `features.extract`'s images/s with each net's default taps.
Last, the training arithmetic (`--precision-only` runs this part alone): our trainer's images/s with
the code before (NCHW fp32, the paper net's ReLU before its max-pool), then each change added in turn:
max-pool before ReLU, channels-last, bf16 autocast; on 1 and 2 threads, interleaved over --repeats
rounds (median shown) so that a noisy neighbour slows them all alike.
"""

import argparse
import contextlib
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset

from correctsweep import corrector, nets
from correctsweep.config import load_spec, settings_of
from correctsweep.data import load_dataset, make_splits, resolve_fold
from correctsweep.features import extract, file_meta, pool_taps, read_split, write_split
from correctsweep.layout import RunLayout
from correctsweep.nets import paper
from correctsweep.train import TrainSet, class_weights, load_model, pick_device, train_base_net
from correctsweep.trial import run_trial

sys.path.insert(0, str(Path(__file__).parent))
from corrector_bench import naive_candidate  # noqa: E402

# XGBoost alone, like the naive loop it is measured against (a spec's other kinds and detectors are left out)
BUDGET = ["base_net.epochs=2", "base_net.min_epochs=0", "base_net.patience=2", "corrector.n_candidates=5",
          "corrector.kinds=[]", "detectors.names=[]"]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def naive_train_epoch(images, targets, num_classes, excluded_index, device, cfg):
    """One epoch the textbook way: float32 tensors on the host, a shuffling DataLoader, fp32."""
    model = nets.build(cfg, num_classes, excluded_index).to(device).train()
    loader = DataLoader(TensorDataset(images.float(), torch.from_numpy(targets)), batch_size=64, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(targets, num_classes).to(device))
    for x, y in loader:
        loss = loss_fn(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def naive_extract(model, images, taps, device):
    model.eval()
    out = []
    for (x,) in DataLoader(TensorDataset(images.float()), batch_size=64):
        logits, raw = model.forward_taps(x.to(device), taps)
        pooled = pool_taps(raw, logits, taps, False, model.excluded_index, model.pooling)
        out.append({k: v.cpu().numpy() for k, v in pooled.items()})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default="sweeps/default.yaml")
    ap.add_argument("--fold", default="3")
    ap.add_argument("--nets", nargs="*", default=["resnet18"], help="torchvision nets measured beside the spec's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--precision-only", action="store_true", help="only the fp32 / channels-last / bf16 comparison")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the precision comparison")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="correctsweep-bench-"))
    spec = load_spec(args.spec, BUDGET + args.set + [f"storage={work}"])
    device = pick_device(spec.base_net.device)
    threads = spec.base_net.threads or int(spec.resources.cpus_per_trial)
    torch.set_num_threads(threads)
    ds = load_dataset(spec.data, cache_dir=work / ".cache")  # decode/generate outside the timed fold
    if args.precision_only:
        splits, targets = make_splits(ds, spec.data), np.searchsorted(ds.classes, ds.labels)
        excluded_index = ds.classes.index(int(resolve_fold(args.fold, ds)))
        train_idx = splits["train"][targets[splits["train"]] != excluded_index]
        return compare_precision(spec, ds, targets, train_idx, splits["val"][:64], excluded_index, args.repeats)

    out, fold_seconds = timed(lambda: run_trial(spec, args.fold, 0, log=lambda _: None))
    run = Path(spec.run_dir)
    model, _ = load_model(run / out.paths.model, device)
    classes, excluded = ds.classes, out.excluded
    excluded_index = None if excluded is None else classes.index(excluded)
    splits = make_splits(ds, spec.data)
    targets = np.searchsorted(classes, ds.labels)
    train_idx = splits["train"][targets[splits["train"]] != excluded_index] if excluded is not None else splits["train"]
    eval_idx = np.concatenate([splits["correct"], splits["test"]])
    train = out.train
    ours_train = train["images_per_second"]
    _, naive_train_s = timed(lambda: naive_train_epoch(ds.images[train_idx], targets[train_idx], len(classes),
                                                       excluded_index, device, spec.base_net))
    naive_train = len(train_idx) / naive_train_s

    images = ds.images[torch.from_numpy(eval_idx)]
    tap_names = spec.features.taps or model.default_taps()
    (_, taps), ours_extract_s = timed(lambda: extract(model, images, tap_names, False, spec.features.batch_size,
                                                      device))
    _, naive_extract_s = timed(lambda: naive_extract(model, images, tap_names, device))
    _, full_taps = extract(model, images[:256], tap_names, True, spec.features.batch_size, device)

    meta = file_meta(classes, ds.class_names, excluded, {}, "", "bench")
    sizes = {}
    for name, tap_set in (("pooled", {k: v[:256] for k, v in taps.items()}), ("full", full_taps)):
        path = RunLayout(work / "bytes").features_file(args.fold, 0, name, "bench")
        write_split(path, ds.ids[eval_idx[:256]], ds.labels[eval_idx[:256]], ds.labels[eval_idx[:256]], tap_set, meta)
        sizes[name] = path.stat().st_size / 256

    c = out.corrector
    study = optuna.load_study(study_name=corrector.STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run / out.paths.corrector / "study.journal"))))
    tried = [t for t in study.trials if "params" in t.user_attrs]
    correct = read_split(RunLayout(run).features_file(out.fold, 0, "correct", out.features_key))
    cfg = spec.corrector
    y = np.searchsorted(classes, correct.labels)
    cv_splits = corrector.stratified_cv_splits(y, cfg.cv_splits, cfg.seed, classes)
    _, naive_corr_s = timed(lambda: [naive_candidate(correct, t.user_attrs["params"], t.user_attrs["taps"], cv_splits,
                                                     settings_of(cfg, "xgboost").max_rounds) for t in tried])
    naive_per_candidate = naive_corr_s / len(tried)

    trained_images = len(train_idx) * train["epochs_run"]
    naive_fold = trained_images / naive_train + naive_extract_s + naive_per_candidate * len(tried)
    rows = [
        ("base-net training, images/s", ours_train, naive_train, "DataLoader, batch 64, fp32"),
        ("feature extraction, images/s", len(eval_idx) / ours_extract_s, len(eval_idx) / naive_extract_s,
         "DataLoader, batch 64, fp32"),
        ("Parquet bytes per image", sizes["pooled"], sizes["full"], "full maps (features.full)"),
        ("corrector, s per candidate", c.seconds_per_candidate, naive_per_candidate,
         "fresh DMatrix, all rounds, no pruning"),
        ("corrector search per fold, s", c.search_seconds, naive_per_candidate * len(tried), "same candidates"),
        ("whole fold, s", fold_seconds, naive_fold, "naive rates x the same work"),
    ]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {threads} threads"
    print(f"{args.spec} fold {args.fold}: {len(train_idx)} training images x {train['epochs_run']} epochs at "
          f"{spec.data.image_size}px, {len(eval_idx)} extracted, {len(tried)} candidates; {gpu}; "
          f"torch {torch.__version__}")
    print(f"{'':32}{'ours':>12}{'naive':>12}{'ratio':>9}  baseline")
    for name, ours, naive, what in rows:
        better = ours / naive if "images/s" in name else naive / ours  # >1 means ours is better
        print(f"{name:32}{ours:12.2f}{naive:12.2f}{better:8.2f}x  {what}")
    total = sum(out.stage_seconds.values())
    print("the fold's stages, s: "
          + ", ".join(f"{k} {v:.1f} ({v / total:.0%})" for k, v in out.stage_seconds.items()))
    compare_nets(spec, args.nets, ds, targets, train_idx, splits["val"][:64], images, excluded_index, device)
    compare_precision(spec, ds, targets, train_idx, splits["val"][:64], excluded_index, args.repeats)


def compare_nets(spec, names, ds, targets, train_idx, val_idx, images, excluded_index, device):
    """Each net's training (one epoch, our trainer) and extraction (its default taps) images/s, the spec's first."""
    print(f"\nnets on the same {len(train_idx)} training and {len(images)} extracted images "
          f"({ds.images.shape[1]}x{ds.images.shape[2]}x{ds.images.shape[3]}), one epoch each:")
    print(f"{'net':24}{'train img/s':>12}{'extract img/s':>15}{'vs ' + spec.base_net.arch:>12}")
    first = None
    for arch in [spec.base_net.arch, *names]:
        cfg = dataclasses.replace(spec.base_net, arch=arch, epochs=1, min_epochs=0)
        data = TrainSet(ds.images, targets, train_idx, val_idx, len(ds.classes), excluded_index)
        model, result = train_base_net(data, cfg, 0)
        _, seconds = timed(lambda m=model: extract(m, images, m.default_taps(), False, spec.features.batch_size,
                                                   device))
        rates = (result.images_per_second, len(images) / seconds)
        first = first or rates
        print(f"{arch:24}{rates[0]:12.1f}{rates[1]:15.1f}{rates[0] / first[0]:11.2f}x")



def published_block(c_in: int, c_out: int) -> torch.nn.Sequential:
    """The paper net's conv block as it was before (ReLU, then max-pool): the code being compared against."""
    return torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.BatchNorm2d(c_out),
                               torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(2))


# name -> (base_net overrides, the paper net's blocks as before)
ARITHMETIC = {"before: NCHW fp32": (dict(channels_last=False, precision="fp32"), True),
              "NCHW, pool before ReLU": (dict(channels_last=False, precision="fp32"), False),
              "channels-last fp32": (dict(channels_last=True, precision="fp32"), False),
              "channels-last bf16": (dict(channels_last=True, precision="bf16"), False)}


def compare_precision(spec, ds, targets, train_idx, val_idx, excluded_index, repeats):
    """Our trainer's images/s (one epoch, validation excluded) under each arithmetic, 1 and 2 threads."""
    print(f"\ntraining arithmetic, {spec.base_net.arch} on {len(train_idx)} images at {spec.data.image_size}px, "
          f"batch {spec.base_net.batch_size}, one epoch each, median of {repeats} interleaved rounds, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}:")
    print(f"{'':26}" + "".join(f"{f'{t} thread' + 's' * (t > 1):>14}{'ratio':>8}" for t in (1, 2)))
    rates = {name: {1: [], 2: []} for name in ARITHMETIC}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(repeats):
            for name, (how, before) in ARITHMETIC.items():
                cfg = dataclasses.replace(spec.base_net, epochs=1, min_epochs=0, device="cpu", **how)
                with mock.patch.object(paper, "conv_block", published_block) if before else contextlib.nullcontext():
                    _, result = train_base_net(
                        TrainSet(ds.images, targets, train_idx, val_idx, len(ds.classes), excluded_index), cfg, 0)
                rates[name][threads].append(result.images_per_second)
    base = {t: np.median(rates["before: NCHW fp32"][t]) for t in (1, 2)}
    for name in ARITHMETIC:
        print(f"{name:26}" + "".join(f"{np.median(rates[name][t]):14.1f}{np.median(rates[name][t]) / base[t]:7.2f}x"
                                     for t in (1, 2)))


if __name__ == "__main__":
    main()
