"""What each stage's cached output is keyed by: everything that determines it, and nothing else.

A rerun reuses a stage's output only when its key is unchanged, so a key that misses a setting would
reuse a stale output and one that holds too much would recompute for nothing. tests/test_keys.py walks
every spec field, plug-in settings included, against these keys and NOT_IN_KEYS.
"""

from __future__ import annotations

from correctsweep.config import BaseNetConfig, CorrectorConfig, Spec, as_dict
from correctsweep.data import dataset_key
from correctsweep.hashing import digest

# Spec fields that change no stage's output, so no stage key holds them: where results go, which trials
# run (and which a scheduler stops), how fast, and the report's tracking, detectors and intervals.
# corrector.kind and corrector.kinds say which searches run and which one is published; each search's key
# holds its own kind.
NOT_IN_KEYS = {"name", "storage", "folds", "seeds", "search", "num_samples", "scheduler", "tracking", "resources",
               "data.cache_dir", "base_net.device", "base_net.threads", "features.batch_size", "corrector.threads",
               "corrector.workers", "corrector.kind", "corrector.kinds", "detectors", "report"}


def sweep_key(spec: Spec) -> str:
    """The sweep settings a result was made under, base-net settings aside (a `search` varies them), the
    report's, which only collect reads, and the scheduler's, which stops trials but changes no result (both
    left out, not nulled: a result of an earlier spec keeps its key)."""
    settings = spec.to_dict() | {"base_net": None}
    del settings["report"], settings["scheduler"]
    return digest(settings)


# Options added after nets were first keyed: at their defaults (which train exactly as before they existed;
# weights null: f is trained) they are left out of the net key, so a net trained earlier keeps its key.
LATER_OPTIONS = ("schedule", "ema_decay", "mixup_alpha", "cutmix_alpha", "mix_probability", "randaugment_ops",
                 "randaugment_magnitude", "weights")


def net_key(spec: Spec, fold: str, seed: int, weights_sha256: str | None = None) -> str:
    """What the trained net depends on: the dataset's content (a regenerated synthetic set or changed files
    must not reuse a stale net), its split, every training setting, the fold and the seed; for a net loaded
    from base_net.weights, also its checkpoint's SHA-256 (a checkpoint replaced in place is another net)."""
    # the path as written is left out: dataset_key holds it resolved, so a sweep (which makes paths absolute)
    # and `correctsweep trial` (relative, as the spec says) share one net
    data = as_dict(spec.data) | {"cache_dir": None, "path": None, "dataset": dataset_key(spec.data)}
    defaults = BaseNetConfig()
    net = {key: value for key, value in as_dict(spec.base_net).items()
           if key not in LATER_OPTIONS or value != getattr(defaults, key)} | {"device": None, "threads": None}
    checkpoint = {"checkpoint": weights_sha256} if weights_sha256 else {}
    return digest({"data": data, "net": net, "fold": fold, "seed": seed} | checkpoint)


def features_key(spec: Spec, net: str, taps: list[str]) -> str:
    """What a features file depends on: the net and which taps it holds (not the batch size)."""
    return digest({"net": net, "taps": taps, "full": spec.features.full})


def corrector_key(cfg: CorrectorConfig, features: str) -> str:
    """What one kind's corrector search depends on: its features and every corrector setting but threads and
    workers (how fast it runs, not what it searches), `kinds` (which searches run) and the other kinds'
    settings: adding a kind to a spec, or retuning another, keeps this kind's journal."""
    own = {key: value for key, value in as_dict(cfg).items() if key not in cfg.settings or key == cfg.kind}
    return digest(own | {"threads": None, "workers": None, "kinds": None, "features": features})
