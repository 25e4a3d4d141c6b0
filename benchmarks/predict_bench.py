"""Images per second of a fold's corrected classifier h, side by side in one run on this machine.

    PYTHONPATH=src python benchmarks/predict_bench.py [RUN_DIR] [--fold 3] [--images 1024] [--repeat 3]

RUN_DIR: a run whose fold searched every corrector kind (default: a smoke trial of fold 3 with
corrector.kinds=[xgboost, fisher, logistic] and corrector.xgboost.pca_dims=8, made in a temporary folder).
Rows, each on the same --images images (the test split repeated), in batches of features.batch_size:
  f alone          the base net's forward and argmax: what the uncorrected classifier costs
  f + g (kind)     CorrectedClassifier.run: the net reading every extracted tap, pooling, g and the policy
  ONNX pair (kind) the exported f.onnx and g.onnx under onnxruntime (CPU), then the policy
  predict command  `correctsweep predict` on the images written as PNG files: decoding, h and the
                   Parquet output, the published kind
Each figure is the best of --repeat runs.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from correctsweep import cli
from correctsweep.data import make_splits
from correctsweep.export import OnnxPair, export_onnx
from correctsweep.predict import load_corrected, predict_file, run_dataset

KINDS = ["xgboost", "fisher", "logistic"]


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def batches(images: torch.Tensor, size: int):
    return [images[i:i + size] for i in range(0, len(images), size)]


def smoke_run(storage: Path) -> Path:
    assert cli.main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", f"storage={storage}", "--set",
                     f"corrector.kinds=[{', '.join(KINDS)}]", "--set", "corrector.xgboost.pca_dims=8"]) == 0
    return storage / "smoke"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--fold", default="3")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    run = Path(args.run_dir) if args.run_dir else smoke_run(work)

    clf = load_corrected(run, args.fold, kind=KINDS[0], device="cpu")
    ds = run_dataset(clf.spec)
    test = ds.images[make_splits(ds, clf.spec.data)["test"]]
    images = test.repeat((args.images + len(test) - 1) // len(test), 1, 1, 1)[:args.images]
    size = clf.batch_size
    rows = []

    @torch.no_grad()
    def f_alone():
        for b in batches(images, size):
            clf.net(b).argmax(1)

    rows.append(("f alone", best_of(args.repeat, f_alone)))
    pairs = {}
    for kind in KINDS:
        k = load_corrected(run, args.fold, kind=kind, device="cpu")
        rows.append((f"f + g ({kind})", best_of(args.repeat, lambda k=k: [k.run(b) for b in batches(images, size)])))
        pairs[kind] = OnnxPair(export_onnx(k, work / f"onnx-{kind}"))
    for kind, pair in pairs.items():
        arrays = [b.numpy() for b in batches(images, size)]
        rows.append((f"ONNX pair ({kind})", best_of(args.repeat, lambda p=pair, a=arrays: [p.run(x) for x in a])))

    folder = work / "pngs"
    folder.mkdir()
    for n, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy().squeeze()).save(folder / f"{n:05d}.png")
    published = load_corrected(run, args.fold, device="cpu")
    command = lambda: predict_file(published, str(folder), work / "h.parquet", log=lambda m: None)
    rows.append((f"predict command, PNG files ({published.selection.record.kind})", best_of(args.repeat, command)))

    print(f"{args.images} images of {images.shape[1]}x{images.shape[2]}x{images.shape[3]}, batches of {size}, "
          f"torch {torch.get_num_threads()} threads, fold {args.fold} of {run}")
    print(f"| {'path':<40} | images/s | ms per image |\n|{'-' * 42}|----------|--------------|")
    for name, seconds in rows:
        print(f"| {name:<40} | {args.images / seconds:8.0f} | {1000 * seconds / args.images:12.2f} |")


if __name__ == "__main__":
    main()
