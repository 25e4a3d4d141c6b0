"""How a sweep should share this machine's CPUs between trials, from training throughput.

    python benchmarks/schedule_bench.py [SPEC] [--images 3000] [--epochs 1] [--set key=value ...]

Trains the spec's base net with our trainer on `--images` of its training images (the full model,
2 epochs by default, validation excluded from the rate) in three layouts, one after the other:
  one trial, all CPUs       one process with torch threads = this machine's CPUs;
  one trial per CPU         as many 1-thread processes as CPUs, all at once (what `resources.cpus_per_trial: 1`
                            runs in a sweep), their images/s summed;
  one trial, 1 thread       a single 1-thread process alone, for reference.
The layout with the higher summed images/s is the one that finishes a sweep of several trials sooner
(a fold's training dominates its time); its ratio is what a spec's `resources` comment quotes.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def child(args):
    from correctsweep.config import load_spec
    from correctsweep.data import load_dataset, make_splits
    from correctsweep.train import TrainSet, train_base_net

    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec, args.set)
    ds = load_dataset(spec.data, cache_dir=Path(spec.storage) / ".cache")
    splits, targets = make_splits(ds, spec.data), np.searchsorted(ds.classes, ds.labels)
    train_idx = np.random.default_rng(0).permutation(splits["train"])[:args.images]
    cfg = dataclasses.replace(spec.base_net, epochs=args.epochs, min_epochs=0, device="cpu")
    _, result = train_base_net(TrainSet(ds.images, targets, train_idx, splits["val"][:64], len(ds.classes)), cfg, 0)
    print(json.dumps({"images_per_second": result.images_per_second}))


def run(args, threads: int, processes: int) -> list[float]:
    cmd = [sys.executable, __file__, args.spec, "--child", "--threads", str(threads), "--images", str(args.images),
           "--epochs", str(args.epochs)] + [f"--set={s}" for s in args.set]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("a training process failed")
    return [json.loads(o.strip().splitlines()[-1])["images_per_second"] for o in outs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default="sweeps/default.yaml")
    ap.add_argument("--images", type=int, default=3000, help="training images per process")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    cpus = len(os.sched_getaffinity(0))
    args.set = args.set + [f"storage={os.environ.get('BENCH_STORAGE', tempfile.gettempdir() + '/correctsweep-bench')}"]
    run(args, 1, 1)  # decodes the data into the cache, outside the timed layouts
    rows = [("one trial, all CPUs", f"1 x {cpus} threads", run(args, cpus, 1)),
            ("one trial per CPU", f"{cpus} x 1 thread", run(args, 1, cpus)),
            ("one trial, 1 thread", "1 x 1 thread", run(args, 1, 1))]
    base = sum(rows[0][2])
    print(f"{args.spec}: {args.images} training images x {args.epochs} epochs per process, {cpus} CPUs, "
          f"torch {torch.__version__}")
    print(f"{'layout':24}{'processes':>16}{'images/s':>12}{'vs all-CPU':>12}  per process")
    for name, layout, rates in rows:
        print(f"{name:24}{layout:>16}{sum(rates):12.1f}{sum(rates) / base:11.2f}x  "
              + ", ".join(f"{r:.1f}" for r in rates))


if __name__ == "__main__":
    main()
