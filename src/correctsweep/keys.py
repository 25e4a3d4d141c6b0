"""What each stage's cached output is keyed by: everything that determines it, and nothing else.

A rerun reuses a stage's output only when its key is unchanged, so a key that misses a setting would
reuse a stale output and one that holds too much would recompute for nothing. tests/test_keys.py walks
every spec field, plug-in settings included, against these keys and NOT_IN_KEYS.
"""

from __future__ import annotations

from correctsweep.config import CorrectorConfig, Spec, as_dict
from correctsweep.data import dataset_key
from correctsweep.hashing import digest

# Spec fields that change no stage's output, so no stage key holds them: where results go, which trials
# run, how fast, and the report's tracking, detectors and intervals. corrector.kind and corrector.kinds say
# which searches run and which one is published; each search's key holds its own kind.
NOT_IN_KEYS = {"name", "storage", "folds", "seeds", "search", "num_samples", "tracking", "resources",
               "data.cache_dir", "base_net.device", "base_net.threads", "features.batch_size", "corrector.threads",
               "corrector.workers", "corrector.kind", "corrector.kinds", "detectors", "report"}


def sweep_key(spec: Spec) -> str:
    """The sweep settings a result was made under, base-net settings aside (a `search` varies them) and the
    report's, which only collect reads (left out, not nulled: a result of an earlier spec keeps its key)."""
    settings = spec.to_dict() | {"base_net": None}
    del settings["report"]
    return digest(settings)


def net_key(spec: Spec, fold: str, seed: int, weights_sha256: str | None = None) -> str:
    """What the trained net depends on: the dataset's content (a regenerated synthetic set or changed files
    must not reuse a stale net), its split, every training setting, the fold and the seed; for a net loaded
    from base_net.weights, also its checkpoint's SHA-256 (a checkpoint replaced in place is another net)."""
    # the path as written is left out: dataset_key holds it resolved, so a sweep (which makes paths absolute)
    # and `correctsweep trial` (relative, as the spec says) share one net
    data = as_dict(spec.data) | {"cache_dir": None, "path": None, "dataset": dataset_key(spec.data)}
    net = as_dict(spec.base_net) | {"device": None, "threads": None}
    if net["weights"] is None:  # a trained net keeps the key it had before base_net.weights existed
        del net["weights"]
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
