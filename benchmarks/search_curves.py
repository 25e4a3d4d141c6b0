"""A `search` sweep's samples side by side, stopped ones included, from what each trial reported to Tune.

    python benchmarks/search_curves.py RUN_DIR OUT_DIR

Reads every trial's result.json in RUN_DIR's Tune experiments (one line per report: each epoch's validation
accuracy while the net trains, then the finished trial's test summary) and writes to OUT_DIR:
  trials.csv   one row per sample: its `search` values, whether it finished or the scheduler stopped it, the
               epochs it trained, its best validation accuracy, and for a finished one f's test accuracy
               (overall and balanced) and its stage seconds;
  curves.csv   one row per sample and epoch: validation accuracy, train loss, learning rate, seconds;
  curves.png   validation accuracy by epoch, a line per sample (dashed: stopped by the scheduler).
A sample Tune retried after a failure is shown by its last attempt.
collect's report keeps one sample per fold x seed; this is where the samples are compared as a search.
"""

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

from correctsweep.schedulers import was_stopped

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def last_attempt(lines: list[dict]) -> list[dict]:
    """The reports of a trial's last attempt: a trial Tune retried after a failure trains again from epoch 1,
    its reports appended to the same file."""
    start, last_epoch = 0, 0
    for i, r in enumerate(lines):
        if r.get("stage") == "train" and "epoch" in r:
            if r["epoch"] <= last_epoch:
                start = i
            last_epoch = r["epoch"]
    return lines[start:]


def read_trial(path: Path) -> tuple[dict, list[dict]]:
    lines = last_attempt([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    epochs = [r for r in lines if r.get("stage") == "train" and "val_accuracy" in r]
    done = next((r for r in lines if r.get("stage") == "done"), None)
    config = lines[-1]["config"]
    row = {"trial": lines[-1]["trial_id"], "fold": config["fold"], "seed": config["seed"]}
    row |= {k.removeprefix("base_net."): v for k, v in config.items() if k.startswith("base_net.")}
    row |= {"status": "finished" if done else ("stopped" if was_stopped(lines[-1]) else "unfinished"),
            "epochs": max((r["epoch"] for r in epochs), default=0),
            "best_val_accuracy": max((r["val_accuracy"] for r in epochs), default=float("nan"))}
    if done:
        row |= {k: done[k] for k in ("accuracy_f", "balanced_accuracy_f") if k in done}
        row |= {k: round(v, 1) for k, v in done.items() if k.startswith("seconds_")}
    curve = [{"trial": row["trial"], **{k: r[k] for k in ("epoch", "val_accuracy", "train_loss", "lr", "seconds")}}
             for r in epochs]
    return row, curve


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args()
    paths = sorted(args.run_dir.glob("tune-*/*/result.json"))
    read = [read_trial(p) for p in paths if p.stat().st_size]
    if not read:
        raise SystemExit(f"no trial results under {args.run_dir}/tune-*/: is it a sweep's run directory?")
    trials = pd.DataFrame([row for row, _ in read]).sort_values("best_val_accuracy", ascending=False)
    curves = pd.DataFrame([point for _, curve in read for point in curve])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    trials.to_csv(args.out_dir / "trials.csv", index=False, float_format="%.4g")
    curves.to_csv(args.out_dir / "curves.csv", index=False, float_format="%.4g")

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in trials.itertuples():
        curve = curves[curves.trial == row.trial]
        ax.plot(curve.epoch, curve.val_accuracy, "--" if row.status == "stopped" else "-", lw=1,
                label=f"{row.trial} ({row.status})" if row.status != "stopped" else None)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"{len(trials)} samples; dashed: stopped early")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out_dir / "curves.png", dpi=120)
    print(trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
