"""Trained weights as f (base_net.weights): one checkpoint per fold x seed, found by the spec's template, read
with torch.load(weights_only=True), unwrapped from the common layouts and loaded into the spec's arch.

Layouts: a bare state_dict, or one under `state_dict` (Lightning) or `model` (many training scripts), its keys
maybe prefixed `module.` (DDP), `model.` (Lightning) or `body.` (a correctsweep weights.pt). A checkpoint is
checked when its trial is planned (a sweep plans every fold x seed before any trial starts): missing, not a
state_dict, keys that do not match the arch, or a classifier with the wrong number of outputs is one line.
Its SHA-256, taken then, is part of the net key, and the trial's read verifies it, so a checkpoint replaced
in between is refused, never mixed. f is then saved as a trained net is (`train.save_model`), and every
stage after it runs unchanged; the excluded class's logit is masked as for a trained net.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch

from correctsweep import nets
from correctsweep.config import BaseNetConfig
from correctsweep.errors import SpecError
from correctsweep.hashing import sha256_of, verified_bytes
from correctsweep.nets import BaseNet

WRAPPERS = ("state_dict", "model")  # where Lightning and many training scripts keep the state_dict
PREFIXES = ("module.", "model.", "body.")  # DDP's, Lightning's, and correctsweep's own BaseNet's
OWN_BUFFERS = ("logit_mask",)  # a correctsweep weights.pt's mask: the fold being run sets it


@dataclass(frozen=True)
class Checkpoint:
    """One fold x seed's checkpoint, checked against the arch when the trial was planned."""

    path: Path
    sha256: str
    """Taken when it was checked; the trial's read must match it."""

    @property
    def record(self) -> dict:
        """What the result's train record says of f: it came from this checkpoint, not from training."""
        return {"checkpoint": str(self.path), "checkpoint_sha256": self.sha256}

    def load(self, cfg: BaseNetConfig, num_classes: int, excluded_index: int | None) -> BaseNet:
        """The net, its weights verified against the checksum taken when it was planned."""
        data = verified_bytes(self.path, self.sha256, "base_net.weights' check at the trial's start")
        return fitted(cfg, num_classes, excluded_index, state_dict(data, self.path), self.path)


def checkpoint_path(template: str, fold: str, seed: int, names: dict[int, str]) -> Path:
    """The template filled in for a fold (an excluded class's label, or 'none') and seed."""
    name = "none" if fold == "none" else names[int(fold)]
    return Path(template.format(excluded=fold, excluded_name=name, fold=fold, seed=seed))


def state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by the names the arch's module gives them (see the module docstring)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpickling raises anything: UnpicklingError, RuntimeError, EOFError
        raise SpecError(f"checkpoint {path} does not load with torch.load(weights_only=True) "
                        f"({str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__}); save "
                        "the model's state_dict: torch.save(model.state_dict(), path)") from None
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SpecError(f"checkpoint {path} holds no state_dict (names -> tensors, bare or under 'state_dict' or "
                        "'model'); save the model's: torch.save(model.state_dict(), path)")
    tensors = {str(k): v for k, v in obj.items() if k not in OWN_BUFFERS}
    while prefix := next((p for p in PREFIXES if all(k.startswith(p) for k in tensors)), None):
        tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _first(keys: list[str], what: str) -> str:
    return f"{what} {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")


def fitted(cfg: BaseNetConfig, num_classes: int, excluded_index: int | None, weights: dict[str, torch.Tensor],
           path: Path) -> BaseNet:
    """The spec's arch with `weights` loaded; a SpecError naming the first mismatch: the classifier's outputs,
    the first missing and unexpected keys, or the first tensor of another shape."""
    net = nets.build(cfg, num_classes, excluded_index)
    expected = net.body.state_dict()
    final = net.final_layer_name()
    head = weights.get(f"{final}.weight") if final else None
    if head is not None and head.shape[0] != num_classes:
        raise SpecError(f"checkpoint {path}: its classifier {final} has {head.shape[0]} outputs, but the data has "
                        f"{num_classes} classes; give a checkpoint with one output per class (the excluded class's "
                        "too: its logit is masked)")
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        found = [_first(missing, "missing") if missing else "", _first(unexpected, "unexpected") if unexpected else ""]
        raise SpecError(f"checkpoint {path} does not fit base_net.arch {cfg.arch}: "
                        f"{', '.join(f for f in found if f)}; give that arch's state_dict or set base_net.arch")
    for key, value in expected.items():
        if tuple(weights[key].shape) != tuple(value.shape):
            raise SpecError(f"checkpoint {path} does not fit base_net.arch {cfg.arch}: {key} has shape "
                            f"{tuple(weights[key].shape)}, the arch's {tuple(value.shape)}; check base_net.arch "
                            "and base_net.init_args")
    net.body.load_state_dict(weights)
    return net.eval()


def plan(cfg: BaseNetConfig, fold: str, seed: int, classes: list[int], names: dict[int, str]) -> Checkpoint | None:
    """The fold x seed's checkpoint checked against the arch (None: f is trained); a SpecError in one line."""
    if cfg.weights is None:
        return None
    path = checkpoint_path(cfg.weights, fold, seed, names)
    if not path.is_file():
        raise SpecError(f"base_net.weights: no checkpoint {path} for fold {fold} seed {seed}; give one for every "
                        "fold x seed of the sweep, or leave the fold out of `folds`")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError(f"base_net.weights: checkpoint {path} is unreadable ({e.strerror})") from None
    excluded = None if fold == "none" else classes.index(int(fold))
    fitted(cfg, len(classes), excluded, state_dict(data, path), path)
    return Checkpoint(path, sha256_of(data))


def plan_all(cfg: BaseNetConfig, folds: list[str], seeds: list[int], classes: list[int],
             names: dict[int, str]) -> None:
    """Every fold x seed's checkpoint checked, before a sweep starts any trial."""
    for fold in folds:
        for seed in seeds:
            plan(cfg, fold, seed, classes, names)
