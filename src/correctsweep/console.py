"""What a sweep shows on the terminal: one line per trial state and stage with an overall ETA
(`ProgressLines`), a trial's output copied to its log file (`Tee`), and the closing tables."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ray import tune

from correctsweep.metrics import format_value
from correctsweep.schedulers import was_stopped


class Tee:
    """A stream writing to the trial's log file and to the worker's own output (which Ray shows
    on the driver's terminal only with --verbose)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


STAGES = ("train", "extract", "corrector")  # what a trial reports, in order, before "done"


class ProgressLines(tune.Callback):
    """One line per trial state change and per finished stage, instead of Tune's wide tables, and an
    overall line (trials done, running and failed, and an ETA from the stage times measured so far)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.stage, self.since = {}, {}  # trial id -> its current stage, and when that stage began
        self.seconds = {s: [] for s in STAGES}  # measured seconds of each finished stage

    @staticmethod
    def name(trial) -> str:
        sampled = "".join(f" {k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f" {k.split('.', 1)[1]}={v}"
                          for k, v in trial.config.items() if k.startswith("base_net."))
        return f"fold {trial.config['fold']} seed {trial.config['seed']}{sampled}"

    @staticmethod
    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.stage[trial.trial_id], self.since[trial.trial_id] = STAGES[0], time.monotonic()
        self.say(f"{self.name(trial)}: started (log: {self.logs}/fold={trial.config['fold']}-"
                 f"seed={trial.config['seed']}-{trial.trial_id}.log)")
        self.say(self.overall(trials, trial, "RUNNING"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stage, last = result.get("stage"), self.stage.get(trial.trial_id)
        if last is not None and stage != last:
            now = time.monotonic()
            if last in self.seconds:
                self.seconds[last].append(now - self.since.get(trial.trial_id, now))
            self.since[trial.trial_id] = now
            self.say(f"{self.name(trial)}: {last} done")
        self.stage[trial.trial_id] = stage
        if stage == "done":
            bound = result["harm_bound"]
            certified = "" if math.isnan(bound) else f" (certified bound {bound})"
            self.say(f"{self.name(trial)}: f acc {result['accuracy_f']:.3f} -> h {result['accuracy_h']:.3f}, "
                     f"excluded-class Gain {format_value(result['gain_excluded'])}, pooled Harm "
                     f"{format_value(result['pooled_harm'])}{certified} (node {result['node'][:8]})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result
        self.say(f"{self.name(trial)}: stopped by the scheduler at epoch {last['epoch']} (validation accuracy "
                 f"{last['val_accuracy']:.3f})" if was_stopped(last) else f"{self.name(trial)}: finished")
        self.say(self.overall(trials, trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: FAILED (see {trial.path}/error.txt)")
        self.say(self.overall(trials, trial, "ERROR"))

    def overall(self, trials, current, status: str) -> str:
        states = {t.trial_id: t.status for t in trials} | {current.trial_id: status}
        done, failed = sum(s == "TERMINATED" for s in states.values()), sum(s == "ERROR" for s in states.values())
        running = [t for t in trials if states[t.trial_id] == "RUNNING"]
        line = f"{done} of {len(trials)} trials done, {len(running)} running, {failed} failed"
        pending = len(trials) - done - failed - len(running)
        if not pending and not running:
            return line
        if not all(self.seconds.values()):
            return line + "; ETA once every stage has been timed"
        mean = {s: sum(v) / len(v) for s, v in self.seconds.items()}
        left = pending * sum(mean.values())
        for t in running:  # its current stage's expected rest, then the stages after it
            stage = self.stage.get(t.trial_id, STAGES[0])
            at = STAGES.index(stage) if stage in STAGES else len(STAGES)
            left += max(0.0, mean[stage] - (time.monotonic() - self.since[t.trial_id])) if at < len(STAGES) else 0
            left += sum(mean[s] for s in STAGES[at + 1:])
        seconds = left / max(1, len(running))
        return line + f"; ETA {int(seconds // 60)} min {int(seconds % 60)} s"


def stage_totals(grid) -> str:
    """Seconds per pipeline stage summed over the trials that finished: where the next speed-up is."""
    totals = {}
    for r in grid:
        for key, value in (r.metrics or {}).items():
            if key.startswith("seconds_"):
                totals[key.removeprefix("seconds_")] = totals.get(key.removeprefix("seconds_"), 0.0) + value
    if not totals:
        return "stage seconds: no trial finished"
    total = sum(totals.values())
    return "stage seconds summed over trials: " + ", ".join(
        f"{k} {v:.0f} ({v / total:.0%})" for k, v in totals.items()) + f"; total {total:.0f}"


def final_table(grid) -> str:
    import pandas as pd

    rows = []
    for r in grid:
        m = r.metrics or {}
        rows.append({"fold": r.config["fold"], "seed": r.config["seed"],
                     **{k.split(".", 1)[1]: v for k, v in r.config.items() if k.startswith("base_net.")},
                     "status": "error" if r.error else "stopped" if was_stopped(m) else m.get("stage", "?"),
                     "acc f": m.get("accuracy_f"), "bal acc f": m.get("balanced_accuracy_f"),
                     "acc h": m.get("accuracy_h"), "bal acc h": m.get("balanced_accuracy_h"),
                     "excluded Gain": m.get("gain_excluded"), "macro harm": m.get("macro_harm"),
                     "pooled harm": m.get("pooled_harm"), "bound": m.get("harm_bound"),
                     "node": str(m.get("node", ""))[:8]})
    table = pd.DataFrame(rows).sort_values(["fold", "seed"])
    return table.to_string(index=False, float_format=format_value, na_rep="n/a")
