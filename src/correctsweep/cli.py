"""The `correctsweep` command: data, taps, trial, sweep, collect, best, predict, export."""

from __future__ import annotations

import argparse
import sys

from correctsweep.atomic import write_text
from correctsweep.config import load_spec
from correctsweep.errors import CorrectsweepError
from correctsweep.plugins import import_module


def cmd_data(args) -> None:
    from correctsweep.data import count_table, load_dataset, make_splits
    from correctsweep.layout import RunLayout

    spec = load_spec(args.spec, args.set)
    ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
    print(f"{spec.data.source}: {len(ds.labels)} images, {len(ds.classes)} classes, "
          f"{ds.images.shape[1]}x{ds.images.shape[2]}x{ds.images.shape[3]}, {ds.skipped} skipped as corrupt")
    if (ds.split != "").any():
        import pandas as pd

        own = pd.crosstab([ds.named(c) for c in ds.labels], ds.split, margins=True, margins_name="all")
        print("\nthe dataset's own split column:\n" + own.to_string())
    print("\nthe spec's split:\n" + count_table(ds, make_splits(ds, spec.data)).to_string())


def cmd_taps(args) -> None:
    from correctsweep.taps import tap_table

    print(tap_table(load_spec(args.spec, args.set)))


def cmd_trial(args) -> None:
    from correctsweep.entry import run_trial
    from correctsweep.layout import RunLayout
    from correctsweep.trial import core_warning

    spec = load_spec(args.spec, args.set)
    if warning := core_warning(spec):
        print(f"correctsweep: warning: {warning}", file=sys.stderr)
    run_trial(spec, args.fold, args.seed)
    # What collect expects of the run (its folds and seeds), written once the trial has succeeded, so
    # a rejected command changes nothing; a sweep writes it once for all its trials.
    layout = RunLayout.of(spec)
    write_text(layout.spec_file, spec.to_yaml())
    layout.push(["spec.yaml"])


def cmd_sweep(args) -> None:
    from correctsweep.sweep import run_sweep

    run_sweep(load_spec(args.spec, args.set), address=args.address, resume=args.resume, verbose=args.verbose)


def cmd_collect(args) -> None:
    from correctsweep.layout import RunLayout
    from correctsweep.report import collect

    layout = RunLayout.at(args.run_dir)
    layout.check_writable()
    layout.pull(["spec.yaml", "results", "predictions"])
    report = collect(layout.root)
    layout.push(["report"])
    print(f"report: {report / 'report.md'}")


def cmd_best(args) -> None:
    from correctsweep.best import select_best
    from correctsweep.layout import RunLayout

    layout = RunLayout.at(args.run_dir)
    layout.check_writable()
    layout.pull(["spec.yaml", "results", "predictions", "models", "correctors"])
    best = select_best(layout.root)
    layout.push(["best"])
    print(f"best: {best / 'best_config.yaml'}")


def cmd_predict(args) -> None:
    from correctsweep.entry import load_corrected
    from correctsweep.predict import main as predict

    predict(args, load_corrected(args.run_dir, args.fold, args.seed, args.kind, args.device))


def cmd_export(args) -> None:
    from correctsweep.export import main as export

    export(args)


def trusted_imports(parser) -> None:
    """--import: the commands that read a run directory import no module it names (see plugins.user_code)."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module of yours first, for a run made with your own net or plug-in "
                             "(a run directory never decides what code is imported; repeatable)")


def _applying(sub) -> None:
    """The predict and export sub-commands: they apply the corrected classifier a run selected."""
    for name, fn, help_ in (("predict", cmd_predict, "apply a fold's corrected classifier h to images"),
                            ("export", cmd_export, "write a fold's f and g as an ONNX pair with a manifest")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or its best/ folder")
        p.add_argument("--fold", required=True, help="excluded class: its label or name, or 'none'")
        p.add_argument("--seed", type=int, help="that seed's corrector (default: the one best selected)")
        p.add_argument("--kind", help="another corrector kind searched in that fold, e.g. fisher")
        p.set_defaults(fn=fn)
        trusted_imports(p)
    predict = sub.choices["predict"]
    predict.add_argument("input", metavar="INPUT",
                         help="a folder of images, an image, a .parquet table, or split:test / split:correct")
    predict.add_argument("--out", default="predictions.parquet",
                         help="output table: Parquet, or CSV for a .csv suffix (default: predictions.parquet)")
    predict.add_argument("--force", action="store_true",
                         help="replace an existing --out file that is not an earlier predictions table")
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sub.choices["export"].add_argument("--onnx", required=True, metavar="DIR", help="folder to write the ONNX pair in")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="correctsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("data", cmd_data, "print the spec's dataset: images per class and split"),
                            ("taps", cmd_taps, "print the spec's net's tappable nodes with their shapes"),
                            ("trial", cmd_trial, "run one fold end to end without Ray"),
                            ("sweep", cmd_sweep, "run every fold x seed as Ray Tune trials, then collect and best")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("spec", help="sweep spec YAML, e.g. sweeps/default.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec key, e.g. --set data.path=/x (repeatable)")
        p.set_defaults(fn=fn)
    sub.choices["trial"].add_argument("--fold", required=True, help="excluded class: its label or name, or 'none'")
    sub.choices["trial"].add_argument("--seed", type=int, default=0, help="training seed")
    sub.choices["sweep"].add_argument("--address", help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    sub.choices["sweep"].add_argument("--resume", action="store_true",
                                      help="continue the interrupted sweep of this spec (finished trials are kept)")
    sub.choices["sweep"].add_argument("--verbose", action="store_true",
                                      help="show Ray's and the trials' own output here (default: in RUN_DIR/logs/)")
    for name, fn, help_ in (("collect", cmd_collect, "aggregate a run's results into RUN_DIR/report/"),
                            ("best", cmd_best, "select the best corrector per fold and overall into RUN_DIR/best/")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("run_dir", metavar="RUN_DIR",
                       help="a run directory, <storage>/<name>: a path (e.g. outputs/smoke) or a URI")
        p.set_defaults(fn=fn)
        trusted_imports(p)
    _applying(sub)
    args = parser.parse_args(argv)
    try:
        for module in getattr(args, "imports", []):
            import_module(module, "--import")
        args.fn(args)
    except CorrectsweepError as e:
        print(f"correctsweep: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not _interrupted(e):
            raise
        return _interrupt_exit()
    except KeyboardInterrupt:
        return _interrupt_exit()
    return 0


def _interrupted(e: BaseException | None) -> bool:
    """Whether a Ctrl-C is behind this exception: a library's cleanup can turn one into an error of its own
    (Optuna's journal lock, interrupted inside its release, unlinks its file twice: FileNotFoundError)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _interrupt_exit() -> int:
    # every stage writes atomically and resumes, so an interrupted command has lost nothing
    print("correctsweep: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
